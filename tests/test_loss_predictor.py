"""The loss predictor fitted on a real tiny sweep, registered, promoted and reloaded."""

import dataclasses
import math

import mlflow
import numpy as np
import pytest

from registry.predictor.evaluation import evaluate_recipe
from registry.predictor.feature_table import (
    FEATURES,
    FeatureTableError,
    TableQuery,
    build_feature_table,
)
from registry.predictor.registered import (
    PREDICTOR,
    PredictorNotFoundError,
    load_predictor,
    register_evaluation,
)
from tests.conftest import SWEEP_FORMATS

POOR = {"kind": "rf", "base": "none", "n_estimators": 1, "max_depth": 1}


def test_feature_table_joins_parent_rtn_and_gptq_runs(swept_uri):
    table = build_feature_table()
    assert len(table) == 3 * len(SWEEP_FORMATS)
    assert sorted(set(table["model"])) == ["gpt2-64", "llama-48", "llama-64"]
    assert dict(table.groupby("model_family").size()) == {"gpt2-tiny": 4, "llama-tiny": 8}
    assert np.isfinite(table[list(FEATURES) + ["nll_gptq"]].to_numpy()).all()
    row = table[(table["model"] == "llama-64") & (table["format"] == "mxint4_32")].iloc[0]
    rtn = mlflow.get_run(row["rtn_run_id"])
    assert rtn.data.metrics["nll_rtn"] == row["nll_rtn"] and rtn.data.params["method"] == "rtn"
    assert mlflow.get_run(row["gptq_run_id"]).data.metrics["nll"] == row["nll_gptq"]
    assert (row["precision"], row["exp_bits"], row["block_size"]) == (4, 0, 32)
    assert len(build_feature_table(TableQuery(families=("gpt2-tiny",)))) == 4
    with pytest.raises(FeatureTableError, match="no experiment .nope.*there are: Default, ptq-registry, ptq-sweep"):
        build_feature_table(TableQuery(experiments=("nope",)))


@pytest.mark.parametrize("recipe", [{"base": "nll_fp"}, {"base": "rtn_fraction"},
                                    {"base": "nll_fp", "share_from_bits": 3}], ids=["fp", "fraction", "share"])
def test_register_reload_and_predict_the_same(swept_uri, recipe):
    table = build_feature_table()
    held = evaluate_recipe({"kind": "rf"}, table, holdout_models=("llama-48",))
    assert {"lofo_mae", "lofo_rmse", "lofo_r2", "lofo_spearman", "lofo_coverage", "holdout_mae"} <= \
        set(held.metrics)
    # intervals per band of bits; 8 training rows (2 at 3 bits, 6 at 4) support no 90 % conformal
    # interval (a band needs ⌈(n+1)·0.9⌉ ≤ n residuals, n ≥ 9): say so
    assert held.halfwidths == {"p<=2": math.inf, "p=3": math.inf, "p>=4": math.inf}
    loose = evaluate_recipe({"kind": "rf"}, table, ("llama-48",), alpha=0.2).halfwidths
    assert math.isfinite(loose["p>=4"]) and loose["p=3"] == math.inf  # ⌈7·0.8⌉ = 6 of 6; ⌈3·0.8⌉ = 3 > 2
    assert held.metrics["lofo_mae_deployable"] == held.metrics["lofo_mae"]  # every tiny format has ≥ 3 bits
    evaluation = evaluate_recipe({"kind": "rf"} | recipe, table)
    version, decision = register_evaluation(evaluation, table, TableQuery())
    assert str(version.version) == "1" and decision.startswith("champion: first version")
    assert version.aliases == ["champion"] and version.tags["families"] == "gpt2-tiny,llama-tiny"
    pyfunc = mlflow.pyfunc.load_model(f"models:/{PREDICTOR}@champion")
    served = pyfunc.predict(table)
    loaded = load_predictor("champion")
    assert loaded.version == "1"
    np.testing.assert_allclose(served["nll_gptq"], evaluation.predictor.predict(table), rtol=0, atol=1e-12)
    np.testing.assert_allclose(loaded.predict(table)["nll_gptq"], served["nll_gptq"], rtol=0, atol=0)
    if "share_from_bits" in recipe:  # every tiny format has 3 bits or more: each row by its band's share
        values = loaded.spec["share"]["values"]
        assert values == evaluation.predictor.share_ and set(values) == {"p=3", "p>=4"}
        gap = np.maximum(table["nll_rtn"] - table["nll_fp"], 0.005)
        per_row = np.where(table["precision"] >= 4, values["p>=4"], values["p=3"])
        np.testing.assert_allclose(served["nll_gptq"], table["nll_fp"] + per_row * gap, rtol=0, atol=1e-12)
    # 9 rows at 4 bits give a 90 % width, 3 rows at 3 bits none: each row gets its band's
    widths = loaded.spec["halfwidths"]
    assert widths["p=3"] is None and widths["p<=2"] is None and math.isfinite(widths["p>=4"])
    four = (table["precision"] >= 4).to_numpy()
    assert np.allclose((served["upper"] - served["lower"])[four], 2 * widths["p>=4"])
    assert np.isinf(served["upper"][~four]).all() and (~four).sum() == 3
    assert evaluation.metrics["halfwidth_ge4"] == widths["p>=4"] and "halfwidth_eq3" not in evaluation.metrics
    run = mlflow.get_run(version.run_id)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/predicted_vs_observed.png", "plots/feature_importance.png"}
    lineage = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/lineage/training_runs.json")["runs"]
    assert set(table["gptq_run_id"]) <= set(lineage)


def test_champion_moves_only_when_beaten_on_the_same_evaluation(swept_uri):
    table = build_feature_table()
    client = mlflow.MlflowClient()
    poor = evaluate_recipe(POOR, table)
    good = evaluate_recipe({"kind": "rf"}, table)
    assert good.metrics["lofo_mae"] < poor.metrics["lofo_mae"]
    register_evaluation(poor, table, TableQuery())
    version, decision = register_evaluation(good, table, TableQuery())
    assert decision.startswith("champion: LOFO MAE") and decision.endswith("of version 1 (recorded)")
    assert client.get_model_version_by_alias(PREDICTOR, "champion").version == 2
    # a fit within the tags' rounding of the champion (6 significant digits): decided on the exact
    # MAE the champion's run logged, and the message shows the digits that tell them apart
    exact = good.metrics["lofo_mae"]
    rounded = float(client.get_model_version(PREDICTOR, 2).tags["lofo_mae"])
    assert rounded != exact
    close = dataclasses.replace(good, metrics={**good.metrics, "lofo_mae": (exact + rounded) / 2})
    version, decision = register_evaluation(close, table, TableQuery())
    beats = close.metrics["lofo_mae"] < exact
    assert decision.split(":")[0] == ("champion" if beats else "challenger"), decision
    shown = decision.split("LOFO MAE ")[1].split(" of ")[0].split(" ")
    digits = len(shown[2].split(".")[1])
    assert shown[0] != shown[2] and shown[2] == f"{exact:.{digits}f}" and digits > 4
    if beats:  # put the good fit back as champion for what follows
        client.set_registered_model_alias(PREDICTOR, "champion", 2)
    version, decision = register_evaluation(evaluate_recipe(POOR, table), table, TableQuery())
    assert decision.startswith("challenger") and version.aliases == ["challenger"]
    assert client.get_model_version_by_alias(PREDICTOR, "champion").version == 2
    # a different held-out evaluation: the champion's recipe is re-evaluated on it, not trusted
    other = evaluate_recipe(POOR, table, holdout_models=("llama-48",))
    version, decision = register_evaluation(other, table, TableQuery(), ("llama-48",))
    assert decision.startswith("challenger") and decision.endswith("(its recipe re-evaluated here)")
    with pytest.raises(ValueError, match="at least 2 model families"):
        evaluate_recipe(POOR, table, holdout_models=("gpt2-64",))


def test_a_legacy_spec_with_one_width_still_answers():
    import pandas as pd

    from registry.predictor.spec import spec_widths

    assert spec_widths({"halfwidth": 0.25}, [2, 3, 8]).tolist() == [0.25] * 3
    spec = {"interval_bands": "p<=2,p=3,p>=4", "halfwidths": {"p<=2": None, "p=3": 0.5, "p>=4": 0.1}}
    widths = spec_widths(spec, pd.Series([2, 3, 4, 8]))
    assert widths[0] == math.inf and widths[1:].tolist() == [0.5, 0.1, 0.1]


def test_no_champion_is_a_clear_error(tracking_uri):
    with pytest.raises(PredictorNotFoundError, match="no registered model 'ptq-loss-predictor'.*advisor fit-predictor"):
        load_predictor("champion")


@pytest.mark.parametrize("kind", ["rf", "xgb"])
def test_trees_as_json_predict_like_the_library_and_explain_additively(kind):
    import pandas as pd

    from registry.predictor.loss_predictor import LossPredictor
    from registry.predictor.tree_json import TreeEnsemble, ensemble_to_json

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, len(FEATURES))) * [1e6, 1, 10, 1, 1e-3, 3, 2, 32],
                         columns=list(FEATURES))
    y = frame["nll_fp"] + np.sin(frame["sqnr_rtn_db"]) + 0.1 * rng.normal(size=200)
    regressor = LossPredictor(kind=kind, base="none").fit(frame, y).regressor_
    ensemble = TreeEnsemble(ensemble_to_json(regressor))
    reference = regressor.predict(frame[list(FEATURES)].to_numpy())
    # scikit-learn accumulates in float64 (exact); XGBoost sums its leaves in float32
    np.testing.assert_allclose(ensemble.predict(frame.to_numpy()), reference, rtol=0,
                               atol=1e-12 if kind == "rf" else 1e-5)
    bias, parts = ensemble.contributions(frame.to_numpy()[0])
    assert bias + parts.sum() == pytest.approx(reference[0], abs=1e-5)


def test_rtn_fraction_scales_with_a_models_own_rtn_damage():
    """A model that loses 10x more after RTN than any training model: additive targets cannot
    follow it (trees do not extrapolate); the share of RTN's loss increase can."""
    import pandas as pd

    from registry.predictor.loss_predictor import GAP_FLOOR, LossPredictor

    rng = np.random.default_rng(0)

    def rows(gaps):
        frame = pd.DataFrame(rng.uniform(1, 2, size=(len(gaps), len(FEATURES))), columns=list(FEATURES))
        frame["nll_fp"] = rng.uniform(2, 4, len(gaps))
        frame["nll_rtn"] = frame["nll_fp"] + gaps
        return frame, frame["nll_fp"] + 0.3 * np.maximum(gaps, GAP_FLOOR)  # GPTQ leaves 30 % of RTN's damage

    train, y = rows(rng.uniform(0.05, 0.5, 100))
    test, observed = rows(np.concatenate([rng.uniform(2, 5, 20), [0.0, 1e-4]]))
    fraction = LossPredictor(base="rtn_fraction").fit(train, y).predict(test)
    np.testing.assert_allclose(fraction, observed, rtol=0, atol=1e-9)
    for base in ("nll_fp", "nll_rtn"):
        assert np.abs(LossPredictor(base=base).fit(train, y).predict(test) - observed)[:20].mean() > 0.5


def test_the_share_recipe_answers_each_band_by_its_median_share_and_the_rest_by_the_trees():
    import pandas as pd

    from registry.predictor.loss_predictor import LossPredictor

    rng = np.random.default_rng(1)

    def rows(n, bits, share):
        frame = pd.DataFrame(rng.uniform(1, 2, size=(n, len(FEATURES))), columns=list(FEATURES))
        frame["precision"] = bits
        frame["nll_fp"] = rng.uniform(2, 4, n)
        frame["nll_rtn"] = frame["nll_fp"] + rng.uniform(0.01, 0.3, n)
        return frame, frame["nll_fp"] + share * (frame["nll_rtn"] - frame["nll_fp"])

    high, y_high = rows(31, rng.choice([4.0, 6.0, 8.0], 31), rng.uniform(0.2, 0.4, 31))
    three, y_three = rows(21, 3.0, rng.uniform(0.5, 0.9, 21))
    low, y_low = rows(30, 2.0, 0.95)
    train = pd.concat([high, three, low], ignore_index=True)
    y = pd.concat([y_high, y_three, y_low], ignore_index=True)
    fitted = LossPredictor(share_from_bits=3).fit(train, y)

    def shares(frame, target):
        return ((target - frame["nll_fp"]) / (frame["nll_rtn"] - frame["nll_fp"])).to_numpy()

    # one median per band of bits at or above 3; the 2-bit rows do not vote
    assert fitted.share_ == pytest.approx({"p=3": np.median(shares(three, y_three)),
                                           "p>=4": np.median(shares(high, y_high))})
    test, _ = rows(6, np.array([8.0, 5.0, 4.0, 3.0, 3.0, 2.0]), 0.0)
    test.loc[0, "nll_rtn"] = test.loc[0, "nll_fp"] + 10.0  # far beyond any training row's damage
    expected = test["nll_fp"] + np.array([fitted.share_["p>=4"]] * 3 + [fitted.share_["p=3"]] * 2 + [np.nan]) \
        * (test["nll_rtn"] - test["nll_fp"])
    predicted = fitted.predict(test)
    np.testing.assert_allclose(predicted[:5], expected[:5], rtol=0, atol=1e-12)
    plain = LossPredictor().fit(train, y)  # below 3 bits the same forest answers
    np.testing.assert_allclose(predicted[5:], plain.predict(test)[5:], rtol=0, atol=0)
    only_low = LossPredictor(share_from_bits=3).fit(low, y_low)  # nothing at 3 bits or more to take a share from
    assert only_low.share_ is None and only_low.share_spec() is None
    np.testing.assert_allclose(only_low.predict(test), LossPredictor().fit(low, y_low).predict(test), rtol=0, atol=0)
    no_three = LossPredictor(share_from_bits=3).fit(pd.concat([high, low]), pd.concat([y_high, y_low]))
    assert set(no_three.share_) == {"p>=4"}  # a band with no training rows: the trees answer it
    trees = LossPredictor().fit(pd.concat([high, low]), pd.concat([y_high, y_low])).predict(test)
    np.testing.assert_allclose(no_three.predict(test)[3:], trees[3:], rtol=0, atol=0)
    assert fitted.describe() == "rf, base nll_fp, share from 3 bits"


def test_a_model_swept_again_contributes_only_its_newest_runs(swept_uri):
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("ptq-sweep")
    old = build_feature_table()
    digest = old["dataset_digest"].iloc[0]
    run = client.create_run(experiment.experiment_id, run_name="llama-64", tags={"ptq.kind": "model"})
    client.log_param(run.info.run_id, "dataset_digest", digest)
    for name, value in {"nll_fp": 4.0, "bpb_fp": 2.0, "quantized_params": 1.0}.items():
        client.log_metric(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id)
    table = build_feature_table()  # the newer llama-64 parent has no variants yet: no rows for it
    assert sorted(set(table["model"])) == ["gpt2-64", "llama-48"] and len(table) == len(old) - 4
