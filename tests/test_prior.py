"""The prior: published results as validated data, its fit held out by family, and what the CLI shows.

No test pins a fitted number: they check structure, ordering facts that hold for any sane fit, and
that every figure shown comes from the registered version.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from advisor.cli import cli
from advisor.prior_command import describe, sqnr_table
from registry.catalog.entries import load_seed
from registry.conformal import INTERVAL_BANDS
from registry.prior.evaluation import evaluate, family_bias, rtn_above_gptq
from registry.prior.features import (
    FRAME_COLUMNS,
    LEGACY_BANDS,
    interval_groups,
    sqnr_lookup,
)
from registry.prior.model import RECIPES, fit_model, predict_log
from registry.prior.published import DEFAULT_FILE, PublishedDataError, load_published
from registry.prior.spec import LoadedPrior

CATALOG = {e.name for e in load_seed()}
FIXTURE_MODELS = ("opt-125m", "opt-1.3b", "opt-6.7b", "llama-2-7b", "llama-2-13b", "llama-3-8b", "llama-7b",
                  "bloom-560m", "bloom-7b1")


@pytest.fixture(scope="module")
def published():
    return load_published(describe, CATALOG)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A slice of the embedded file: RTN and GPTQ at 3 and 4 bits on nine models of four families."""
    data = yaml.safe_load(DEFAULT_FILE.read_text())
    rows = [r for r in data["rows"] if r["model"] in FIXTURE_MODELS and r["method"] in ("rtn", "gptq")
            and r["format"] in ("int4_chan", "int3_chan", "int4_g128", "int3_g128") and r["corpus"] == "wikitext2"]
    models = [m for m in data["models"] if m["name"] in FIXTURE_MODELS]
    path = tmp_path_factory.mktemp("published") / "small.yaml"
    path.write_text(yaml.safe_dump({"schema": 1, "rows": rows, "models": models}))
    return path


def test_the_published_file_validates_and_has_a_content_version(published):
    rows = published.rows
    assert len(rows) >= 200 and len({r["model"] for r in rows}) >= 8
    assert {"rtn", "gptq"} <= {r["method"] for r in rows}
    assert {2, 3, 4, 8} <= {r["format_facts"]["precision"] for r in rows if r["format_facts"]}
    assert all(r["delta_nll"] == pytest.approx(math.log(r["ppl_q"] / r["ppl_fp"])) for r in rows)
    assert all(r["source"] and r["link"] for r in rows)  # every number carries its citation
    assert load_published(describe, CATALOG).data_version == published.data_version  # equal data, equal version
    assert len(published.data_version) == 12


@pytest.mark.parametrize("change, message", [
    ({"format": "int4_g999999"}, "format 'int4_g999999' does not parse"),
    ({"ppl_q": -3.0}, "ppl_q must be a positive number"),
    ({"ppl_fp": "1.3e3"}, "YAML 1.1 reads 1.3e3 as text"),
    ({"model": "gpt-17"}, "model 'gpt-17' is neither a catalog model nor listed"),
    ({"method": "magic"}, "method 'magic' is not one of"),
])
def test_a_bad_row_is_refused_in_one_line(tmp_path, small_file, change, message):
    data = yaml.safe_load(small_file.read_text())
    data["rows"][3].update(change)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(PublishedDataError, match="published row 4"):
        load_published(describe, CATALOG, bad)
    result = CliRunner().invoke(cli, ["prior", "fit", "--published", str(bad), "--tracking-uri",
                                      f"sqlite:///{tmp_path / 'unused.db'}"])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_sqnr_orders_formats_by_their_noise():
    table = sqnr_table(["int4_chan", "int4_g128", "int4_g32", "int3_g128", "int8_chan", "mxint4_32", "mxint4_64"])
    db = {r["name"]: r["sqnr_db"] for r in table}
    assert db["int4_g32"] > db["int4_g128"] > db["int4_chan"]  # finer scales, less noise
    assert db["int8_chan"] > db["int4_chan"] and db["int4_g128"] > db["int3_g128"]
    between = sqnr_lookup(table, describe("mxint4_48"))  # interpolated along the block size
    assert db["mxint4_64"] < between < db["mxint4_32"]
    assert math.isnan(sqnr_lookup(table, describe("mxfp6_e2m3_32")))  # an element the table lacks


def _fixture_frame(seed=0, families=("a", "b", "c", "d")):
    """Rows from a known log-linear law with noise: four families, RTN and GPTQ, 3 and 4 bits."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, family in enumerate(families):
        for n in (1e8, 1e9, 1e10):
            for fmt, sqnr, p in (("int4_g128", 14.0, 4), ("int4_chan", 8.0, 4), ("int3_g128", 7.5, 3)):
                for method in ("rtn", "gptq"):
                    noise = -sqnr * math.log(10) / 10
                    log_delta = (1.0 + noise - 0.2 * math.log(n / 1e9) - (0.8 if method == "gptq" else 0)
                                 + 0.1 * i + rng.normal(0, 0.15))
                    rows.append({"model": f"{family}-{n:g}", "family": family, "format": fmt, "method": method,
                                 "cite": "fixture", "corpus": "wikitext2", "non_embedding_params": n,
                                 "train_tokens": 1e12 if family != "d" else np.nan, "sqnr_db": sqnr, "precision": p,
                                 "format_family": "int", "granularity": "group" if "_g" in fmt else "channel",
                                 "delta_nll": math.exp(log_delta)})
    return pd.DataFrame(rows)


def test_fit_and_family_held_out_evaluation_on_a_fixture():
    frame = _fixture_frame()
    delta = frame["delta_nll"].to_numpy()
    ev = evaluate(RECIPES["ridge"], frame, delta)
    predicted = ev["predictions"]["prior"]
    assert np.all(np.isfinite(predicted)) and np.all(predicted > 0)
    assert np.all(ev["lower"] <= predicted) and np.all(predicted <= ev["upper"])
    assert {(m["bits"], m["method"], m["predictor"]) for m in ev["metrics"]} == {
        (b, m, p) for b in (3, 4) for m in ("rtn", "gptq") for p in ("prior", "qid_published", "qid_refit")}
    assert all(0 <= m["coverage"] <= 1 for m in ev["metrics"] if m["n"])
    # family d has no training tokens: the QiD laws cannot answer it, the prior can
    unknown = (frame["family"] == "d").to_numpy()
    assert np.all(np.isnan(ev["predictions"]["qid_published"][unknown]))
    assert rtn_above_gptq(frame.assign(model=frame["model"]), predicted)["pairs"] == len(frame) // 2
    model = fit_model(RECIPES["ridge"], frame, delta)
    json.dumps(model)  # parameters are plain JSON
    assert np.allclose(predict_log(model, frame), predict_log(json.loads(json.dumps(model)), frame))
    prior = LoadedPrior("ptq-prior", "t", {"model": model, "halfwidth_log": ev["halfwidth_log"],
                                           "halfwidth_log_unknown_d": ev["halfwidth_log_unknown_d"],
                                           "interval_bands": INTERVAL_BANDS})
    answer = prior.predict(frame[list(FRAME_COLUMNS)])
    assert np.all(np.isfinite(answer["upper"]))
    ratio = (answer["upper"] / answer["delta_nll"]).to_numpy()
    for group in set(interval_groups(frame)):  # unknown D: never a narrower interval than known D
        rows = interval_groups(frame) == group
        assert ratio[rows & unknown].min() >= ratio[rows & ~unknown].max() - 1e-12


def test_family_bias_is_the_median_ratio_of_held_out_to_observed():
    rows = [{"family": "a", "bits": 4, "method": "rtn", "observed_delta_nll": obs, "heldout_delta_nll": pred}
            for obs, pred in ((0.1, 0.2), (0.2, 0.4), (1.0, 0.5))]
    rows += [{"family": "b", "bits": 2, "method": "rtn", "observed_delta_nll": 1.0, "heldout_delta_nll": 9.0},
             {"family": "b", "bits": 3, "method": "gptq", "observed_delta_nll": 0.1, "heldout_delta_nll": None}]
    (only,) = family_bias(rows)  # 2-bit rows and rows without a prediction are not judged
    assert (only["family"], only["bits"], only["method"], only["n"]) == ("a", 4, "rtn", 3)
    assert only["bias"] == pytest.approx(2.0) and only["fold_error"] == pytest.approx(2.0)


def test_a_rows_prediction_does_not_depend_on_its_batch():
    # GPTQ is capped at its RTN twin predicted in another batch: equal rows must give equal bits
    frame = _fixture_frame(seed=2)
    model = fit_model(RECIPES["ridge"], frame, frame["delta_nll"].to_numpy())
    whole = predict_log(model, frame)
    assert all(predict_log(model, frame.iloc[[i]])[0] == whole[i] for i in range(0, len(frame), 7))
    rtn = frame[frame["method"] == "rtn"]
    twins = predict_log(model, rtn.assign(method="gptq"))
    assert np.all(twins <= predict_log(model, rtn))


def test_a_forest_fits_and_answers_from_json():
    frame = _fixture_frame(seed=1)
    model = fit_model(RECIPES["forest"], frame, frame["delta_nll"].to_numpy())
    predicted = predict_log(json.loads(json.dumps(model)), frame)
    assert np.all(np.isfinite(predicted)) and predicted.min() >= np.log(frame["delta_nll"]).min() - 1e-9


def test_prior_fit_evaluate_recommend_and_explain_through_the_cli(tracking_uri, small_file):
    fitted = CliRunner().invoke(cli, ["prior", "fit", "--kind", "ridge", "--published", str(small_file)])
    assert fitted.exit_code == 0, fitted.output
    assert "ptq-prior/1 (ridge): held-out median fold error" in fitted.output and "champion: first version" in fitted.output
    # the registered model answers through MLflow's pyfunc too, for numbers typed as JSON clients send them
    import mlflow

    served = mlflow.pyfunc.load_model("models:/ptq-prior@champion")
    facts = {"non_embedding_params": 6.5e9, "train_tokens": 2e12, "method": "gptq", "sqnr_db": 20.0,
             "precision": 4.0, "format_family": "mxint", "granularity": "block", "corpus": "wikitext2"}
    answers = served.predict(pd.DataFrame([facts, {**facts, "precision": 4}]))
    assert answers["delta_nll"].nunique() == 1 and (answers["lower"] < answers["delta_nll"]).all()

    evaluated = CliRunner().invoke(cli, ["prior", "evaluate", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["prior"] == "ptq-prior/1" and len(report["rows"]) > 20
    needed = {"model", "family", "format", "method", "source", "observed_delta_nll", "heldout_delta_nll", "lower",
              "upper"}
    assert all(needed <= set(r) for r in report["rows"])
    assert all(r["lower"] <= r["heldout_delta_nll"] <= r["upper"] for r in report["rows"])
    predictors = {m["predictor"] for m in report["metrics"]["by_bits_method"]}
    assert predictors == {"prior", "qid_published", "qid_refit"}
    text = CliRunner().invoke(cli, ["prior", "evaluate"])
    assert text.exit_code == 0 and text.stdout.startswith("ptq-prior/1 (ridge) on ")
    first = next(m for m in report["metrics"]["by_bits_method"] if m["predictor"] == "prior")
    assert f"{first['fold_error']:.2f}×" in text.stdout  # the table shows the logged figures
    biases = report["metrics"]["by_family"]
    assert {b["family"] for b in biases} == {r["family"] for r in report["rows"] if r["bits"] in (3, 4)}
    shown = next(b for b in biases if b["bits"] == 3 and b["method"] == "rtn")
    row = next(line for line in text.stdout.splitlines() if line.startswith(shown["family"] + " "))
    assert f"{shown['bias']:.2f}× ({shown['n']})" in row  # the family table shows the same figures

    answer = CliRunner().invoke(cli, ["recommend", "--memory", "30GB", "--formats", "int4_g128,int4_chan,mxint4_32",
                                      "--top", "1000", "--json"])
    assert answer.exit_code == 0, answer.output
    rows = json.loads(answer.stdout)["rows"]
    assert all({"delta_nll", "lower", "upper", "source", "cite", "fp_source"} <= set(r) for r in rows)
    assert {"prior", "published"} <= {r["source"] for r in rows}
    prior_rows = [r for r in rows if r["source"] == "prior"]
    assert all(r["lower"] < r["delta_nll"] < r["upper"] and r["cite"].startswith("ptq-prior/1") for r in prior_rows)
    published_rows = [r for r in rows if r["source"] == "published"]
    assert all(r["lower"] is None and r["predicted_nll"] is not None for r in published_rows)
    qwen = {(r["format"], r["method"]): r["delta_nll"] for r in rows if r["model"] == "qwen2.5-3b" and r["method"] != "none"}
    assert len(set(qwen.values())) == len(qwen) == 6  # distinct per format and per method
    assert all(qwen[(f, "rtn")] > qwen[(f, "gptq")] for f in ("int4_g128", "int4_chan", "mxint4_32"))
    human = CliRunner().invoke(cli, ["recommend", "--memory", "8GB", "--formats", "int4_g128,mxint4_32"])
    assert human.exit_code == 0, human.output
    assert "ptq-prior/1" in human.stdout and "published data " in human.stdout
    flat = " ".join(human.stdout.split())  # rich wraps long lines at the console width
    assert "[published: " in flat or "[prior: " in flat  # the cite is not eaten as markup
    assert "skipped " in human.stdout  # skips are counted under the table

    explained = CliRunner().invoke(cli, ["explain", "qwen2.5-3b", "int4_g128", "--method", "rtn", "--json"])
    assert explained.exit_code == 0, explained.output
    why = json.loads(explained.stdout)
    total = why["bias"] + why["saturation"] + sum(c["contribution"] for c in why["contributions"])
    assert total == pytest.approx(math.log(why["delta_nll"])) and why["delta_nll"] == pytest.approx(qwen[("int4_g128", "rtn")])
    assert why["nearest"] and all(n["origin"] == "published" for n in why["nearest"])
    assert why["facts"]["sqnr_db"] > 0 and why["explained_by"] == "ptq-prior/1"


def test_the_prior_is_kept_beside_the_answer_cache_until_the_store_changes(tracking_uri, monkeypatch):
    import mlflow

    from advisor.candidates import _read_prior, cached_prior

    monkeypatch.setenv("PTQ_ADVISOR_ANSWER_CACHE", "on")
    client = mlflow.MlflowClient(tracking_uri)
    client.search_experiments()
    missing = _read_prior(client)
    assert isinstance(missing, str) and "ptq-prior" in missing
    assert cached_prior(tracking_uri) == missing  # a missing prior is remembered too
    client.create_experiment("something-changed")
    assert cached_prior(tracking_uri) is None  # the store moved: read it again


def test_one_model_one_name():
    from advisor.candidates import _canonical
    from registry.catalog.entries import Catalog

    catalog = Catalog(tuple(load_seed()), "1", "seed", "digest")
    assert _canonical(catalog, "SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert _canonical(catalog, "HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert _canonical(catalog, "llama-64") == "llama-64"  # a swept model outside the catalog keeps its name


def test_the_champion_is_chosen_on_the_3_and_4_bit_rows(tracking_uri, small_file):
    """Promotion compares held-out error where budgets are decided, not over every bit width."""
    import mlflow

    for kind in ("ridge", "forest"):
        fitted = CliRunner().invoke(cli, ["prior", "fit", "--kind", kind, "--published", str(small_file)])
        assert fitted.exit_code == 0, fitted.output
    assert "mean_abs_log_error_3_4_bits" in fitted.output
    client = mlflow.MlflowClient()
    scores = {v: client.get_run(client.get_model_version("ptq-prior", v).run_id).data.metrics
              for v in ("1", "2")}
    best = min(scores, key=lambda v: scores[v]["mean_abs_log_error_3_4_bits"])
    assert str(client.get_model_version_by_alias("ptq-prior", "champion").version) == best


def test_interval_groups_keep_3_bit_apart_and_older_versions_keep_their_bands():
    """3-bit RTN collapses for some families and 2-bit for all: pooled, the 3-bit rows got a width
    too narrow for them. A version fitted before the bands were recorded still answers with its own."""
    frame = pd.DataFrame({"precision": [2, 3, 4, 8, 3], "method": ["rtn", "rtn", "rtn", "rtn", "gptq"]})
    assert list(interval_groups(frame)) == ["rtn/p<=2", "rtn/p=3", "rtn/p>=4", "rtn/p>=4", "gptq/p=3"]
    assert list(interval_groups(frame, LEGACY_BANDS)) == ["rtn/p<=3", "rtn/p<=3", "rtn/p>=4", "rtn/p>=4", "gptq/p<=3"]
    rows = _fixture_frame()
    model = fit_model(RECIPES["ridge"], rows, rows["delta_nll"].to_numpy())
    legacy = {g: 0.5 for g in set(interval_groups(rows, LEGACY_BANDS))}
    old = LoadedPrior("ptq-prior", "1", {"model": model, "halfwidth_log": legacy, "halfwidth_log_unknown_d": legacy})
    answer = old.predict(rows[list(FRAME_COLUMNS)])
    assert np.allclose(answer["upper"] / answer["delta_nll"], np.exp(0.5))


def test_a_variant_measured_twice_counts_once_from_the_current_protocol(tracking_uri):
    """An fp-Hessian sweep's RTN run and the re-measurement that replaced it must not both train the
    prior: the first experiment listed wins, then the newest run."""
    import mlflow

    from registry.prior.rows import measured_rows

    client = mlflow.MlflowClient()
    values = {"old-sweep": 1.9, "ptq-sweep": 1.0}
    for experiment, delta in values.items():
        eid = client.create_experiment(experiment)
        parent = client.create_run(eid, tags={"ptq.kind": "model", "mlflow.runName": "tiny-a"})
        for k, v in {"family": "tiny", "dataset": "wikitext2", "setting.hessians": "sequential"}.items():
            client.log_param(parent.info.run_id, k, v)
        client.log_metric(parent.info.run_id, "non_embedding_params", 1e6)
        client.set_terminated(parent.info.run_id)
        child = client.create_run(eid, tags={"ptq.kind": "variant", "mlflow.parentRunId": parent.info.run_id})
        for k, v in {"format": "int4_chan", "family": "int", "precision": 4, "exp_bits": 0, "man_bits": 3,
                     "block_size": "None", "granularity": "channel", "method": "rtn"}.items():
            client.log_param(child.info.run_id, k, v)
        client.log_metric(child.info.run_id, "delta_nll", delta)
        client.set_terminated(child.info.run_id)
    table = [{"name": "int4_chan", "family": "int", "precision": 4, "exp_bits": 0, "man_bits": 3,
              "granularity": "channel", "block_size": None, "sqnr_db": 18.0}]
    rows, skipped, _ = measured_rows(client, ("ptq-sweep", "old-sweep"), lambda name: None, table)
    assert [r["delta_nll"] for r in rows] == [1.0]
    assert skipped["superseded by a newer measurement of the same variant"] == 1
    rows, _, _ = measured_rows(client, ("old-sweep", "ptq-sweep"), lambda name: None, table)
    assert [r["delta_nll"] for r in rows] == [1.9]
