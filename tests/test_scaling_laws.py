"""QiD and 16-bit laws: the fitters recover known laws; the registry serves them by alias."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from registry.laws.fitting import (
    PUBLISHED_LOSS16,
    PUBLISHED_QID,
    Loss16LawFit,
    QiDLawFit,
    fit_qid_from_table,
    loss16,
    qid_delta,
)

OTHER_LOSS16 = {"Nc": 1e14, "Dc": 1e11, "alpha_N": 0.08, "alpha_D": 0.3}  # far from the published start


def _grid(n, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"N": 10 ** rng.uniform(7, 10, n), "D": 10 ** rng.uniform(9, np.log10(3e11), n),
                         "P": rng.choice([2, 3, 4, 8], n)}), rng


def _qid_sample(n=80, noise=0.1, seed=1, law=PUBLISHED_QID):
    X, rng = _grid(n, seed)
    return X, qid_delta(X.N, X.D, X.P, **law) * np.exp(rng.normal(0, noise, n))


def test_qid_fit_recovers_the_law():
    X, y = _qid_sample()
    fit = QiDLawFit(n_bootstrap=50, seed=0).fit(X, y)
    assert fit.n_rows_ == 80 and fit.n_dropped_ == 0 and fit.fixed_ == ()
    assert fit.params_["alpha"] == pytest.approx(0.2261, abs=0.02)
    assert fit.params_["beta"] == pytest.approx(0.5251, abs=0.02)
    assert fit.params_["gamma"] == pytest.approx(5.4967, abs=0.15)
    assert 0.5 < fit.params_["k"] / 0.017 < 2
    assert fit.rmse_log_ == pytest.approx(0.1, abs=0.03)  # the noise put in
    np.testing.assert_allclose(fit.predict(X.to_numpy()), qid_delta(X.N, X.D, X.P, **fit.params_))


def _coverage(make_fit, law, sample, datasets=10):
    """How many of `datasets` synthetic fits have each true parameter inside their 95% interval."""
    covered = dict.fromkeys(law, 0)
    for seed in range(datasets):
        X, y = sample(seed)
        intervals = make_fit(seed).fit(X, y).intervals_
        for name, truth in law.items():
            covered[name] += intervals[name][0] < truth < intervals[name][1]
    return covered


def test_qid_bootstrap_intervals_contain_the_truth():
    covered = _coverage(lambda seed: QiDLawFit(n_bootstrap=100, seed=seed), PUBLISHED_QID,
                        lambda seed: _qid_sample(n=60, seed=100 + seed))
    assert min(covered.values()) >= 8, covered  # nominal 95%: ≥ 8 of 10 datasets


def test_qid_fit_holds_an_unidentifiable_exponent_at_the_published_value():
    X, rng = _grid(40, 2)
    X["D"] = 2e10  # every model trained on the same tokens: β cannot be fitted
    y = qid_delta(X.N, X.D, X.P, **PUBLISHED_QID) * np.exp(rng.normal(0, 0.05, 40))
    fit = QiDLawFit(n_bootstrap=20).fit(X, y)
    assert fit.fixed_ == ("beta",)
    assert fit.params_["beta"] == PUBLISHED_QID["beta"] and fit.intervals_["beta"] == (0.5251, 0.5251)
    assert fit.params_["alpha"] == pytest.approx(0.2261, abs=0.03)
    assert fit.as_law("test")["fixed"] == ["beta"]


@pytest.mark.parametrize("law", [PUBLISHED_LOSS16, OTHER_LOSS16], ids=["published", "other"])
def test_loss16_fit_recovers_the_law_and_its_intervals_contain_it(law):
    def sample(seed):
        X, rng = _grid(60, 200 + seed)
        return X[["N", "D"]], loss16(X.N, X.D, **law) * np.exp(rng.normal(0, 0.01, 60))

    X, y = sample(0)
    fit = Loss16LawFit(n_bootstrap=20).fit(X, y)
    assert fit.params_["alpha_D"] == pytest.approx(law["alpha_D"], rel=0.1)
    assert fit.params_["alpha_N"] == pytest.approx(law["alpha_N"], rel=0.1)
    assert fit.params_["Dc"] == pytest.approx(law["Dc"], rel=0.5)
    assert abs(np.log10(fit.params_["Nc"] / law["Nc"])) < 1  # Nc trades off against αN
    np.testing.assert_allclose(fit.predict(X), loss16(X.N, X.D, **fit.params_))
    covered = _coverage(lambda seed: Loss16LawFit(n_bootstrap=100, seed=seed), law, sample)
    assert min(covered.values()) >= 8, covered


def test_fitters_follow_the_estimator_contract():
    fit = QiDLawFit(n_bootstrap=7, seed=3)
    assert clone(fit).get_params() == {"n_bootstrap": 7, "seed": 3}
    assert fit.set_params(seed=4).seed == 4 and not hasattr(fit, "params_")
    X, y = _qid_sample(n=30)
    assert fit.fit(X, y) is fit
    again = clone(fit).fit(X, y)
    assert again.params_ == fit.params_ and again.intervals_ == fit.intervals_  # seeded bootstrap


def test_non_positive_targets_are_dropped_and_counted():
    X, y = _qid_sample(n=12)
    y[:4] = [0.0, -0.01, -0.2, 0.0]  # quantization can help a little: no logarithm
    fit = QiDLawFit(n_bootstrap=5).fit(X, y)
    assert (fit.n_rows_, fit.n_dropped_) == (8, 4)


@pytest.mark.parametrize("case, message", [
    ("few", r"3 rows with ΔqLoss > 0 \(of 3; 0 ≤ 0 dropped\): a fit in log space needs at least 5"),
    ("mostly_negative", r"4 rows with ΔqLoss > 0 \(of 10; 6 ≤ 0 dropped\)"),
    ("nan", "NaN or infinite"),
    ("missing_column", r"X lacks columns \['P'\]"),
    ("zero_bits", "must be finite and > 0"),
    ("collinear", "collinear"),
    ("length", "X has 10 rows but y has 9"),
])
def test_bad_qid_inputs_raise_clear_errors(case, message):
    X, y = _qid_sample(n=10)
    if case == "few":
        X, y = X[:3], y[:3]
    elif case == "mostly_negative":
        y[:6] = -0.01
    elif case == "nan":
        y[0] = np.nan
    elif case == "missing_column":
        X = X[["N", "D"]]
    elif case == "zero_bits":
        X.loc[0, "P"] = 0
    elif case == "collinear":
        X["D"] = 20 * X["N"]  # Chinchilla-style: log D = log N + const
    elif case == "length":
        y = y[:9]
    with pytest.raises(ValueError, match=message):
        QiDLawFit(n_bootstrap=5).fit(X, y)


def test_loss16_needs_two_sizes_and_two_lengths():
    X, _ = _grid(10, 4)
    X["D"] = 1e10
    with pytest.raises(ValueError, match="at least 2 sizes N and 2 training lengths D"):
        Loss16LawFit(n_bootstrap=5).fit(X[["N", "D"]], loss16(X.N, X.D, **PUBLISHED_LOSS16))


def test_fit_qid_from_table_fits_each_group_and_skips_unfittable_ones():
    X, y = _qid_sample(n=30)
    good = X.assign(delta_nll=y, method="gptq", family="int")
    thin = X[:3].assign(delta_nll=y[:3], method="rtn", family="mx")
    with pytest.warns(UserWarning, match="'rtn/mx' not fitted: 3 rows"):
        fits = fit_qid_from_table(pd.concat([good, thin]), n_bootstrap=20)
    assert list(fits) == ["gptq/int"]
    entry = fits["gptq/int"]
    assert entry["n_rows"] == 30 and set(entry["intervals"]) == {"k", "alpha", "beta", "gamma"}
    json.dumps(entry)  # goes into a model config as is
    with pytest.raises(ValueError, match="no QiD law could be fitted"):
        with pytest.warns(UserWarning):
            fit_qid_from_table(thin, n_bootstrap=5)
    with pytest.raises(ValueError, match=r"lacks columns \['delta_nll'\]"):
        fit_qid_from_table(X.assign(method="gptq", family="int"))


# --- the registry -------------------------------------------------------------------------------

QUERY = pd.DataFrame({"N": [160_000_000, 1.0e9, 6.9e9, 12e9], "D": [3.0e11, 1.0e11, 2.0e12, 3.0e11],
                      "P": [4, 3, 2, 8], "method": ["gptq", "rtn", "gptq", "awq"],
                      "family": ["int", "int", "mx", "int"]})


def test_seeded_laws_reload_through_the_current_alias(tracking_uri):
    import mlflow

    from registry.laws.registered import LOSS16_LAW, QID_LAW, seed_published_laws

    seeded = seed_published_laws()
    assert {name: str(v.version) for name, v in seeded.items()} == {QID_LAW: "1", LOSS16_LAW: "1"}
    assert "Ouyang et al. 2024" in seeded[QID_LAW].tags["source"]
    qid = mlflow.pyfunc.load_model("models:/qid-law@current").predict(QUERY)
    expected = qid_delta(QUERY.N, QUERY.D, QUERY.P, **PUBLISHED_QID)
    np.testing.assert_allclose(qid["delta_nll"], expected, rtol=1e-12)
    assert list(qid["law_key"]) == ["gptq/int"] * 4  # only the published law: every row falls back
    l16 = mlflow.pyfunc.load_model("models:/loss16-law@current").predict(QUERY[["N", "D"]])
    np.testing.assert_allclose(l16["loss16"], loss16(QUERY.N, QUERY.D, **PUBLISHED_LOSS16), rtol=1e-12)

    assert seed_published_laws() == {}  # idempotent
    client = mlflow.MlflowClient()
    assert [len(client.search_model_versions(f"name = '{n}'")) for n in (QID_LAW, LOSS16_LAW)] == [1, 1]


def test_registering_fits_adds_versions_and_moves_current(tracking_uri):
    import mlflow

    from registry.laws.registered import (
        LOSS16_LAW,
        QID_LAW,
        load_law,
        register_loss16_fit,
        register_qid_fit,
    )

    X, y = _qid_sample(n=30, law={**PUBLISHED_QID, "k": 0.05})
    fits = fit_qid_from_table(X.assign(delta_nll=y, method="rtn", family="mx"), n_bootstrap=20)
    runs = [f"{i:032x}" for i in range(40)]
    version = register_qid_fit(fits, runs, "RTN on MX formats, synthetic")
    assert str(version.version) == "2" and version.aliases == ["current"]  # version 1: published, seeded
    assert version.tags["keys"] == "gptq/int,rtn/mx" and "rtn/mx=30" in version.tags["n_rows"]
    assert version.tags["training_runs"].startswith("40 runs: ") and len(version.tags["training_runs"]) <= 500
    lineage = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/lineage/training_runs.json")
    assert lineage == {"runs": runs}

    model, current = load_law(QID_LAW)
    assert str(current.version) == "2"
    out = model.predict(QUERY)
    # rtn/int → the same method's fit (rtn/mx); gptq/mx and awq/int → the published gptq/int
    assert list(out["law_key"]) == ["gptq/int", "rtn/mx", "gptq/int", "gptq/int"]
    fitted = {k: fits["rtn/mx"][k] for k in PUBLISHED_QID}
    np.testing.assert_allclose(out["delta_nll"][1], qid_delta(1e9, 1e11, 3, **fitted), rtol=1e-12)
    _, first = load_law(QID_LAW, "1")
    assert first.tags["kind"] == "published"

    X16, rng = _grid(30, 5)
    fit = Loss16LawFit(n_bootstrap=20).fit(X16[["N", "D"]], loss16(X16.N, X16.D, **OTHER_LOSS16))
    v16 = register_loss16_fit(fit.as_law("synthetic"), ["abc"], "synthetic 16-bit law", set_current=False)
    assert str(v16.version) == "2" and v16.aliases == []
    assert str(load_law(LOSS16_LAW)[1].version) == "1"  # current stayed on the published law
    latest, _ = load_law(LOSS16_LAW, "latest")
    np.testing.assert_allclose(latest.predict(QUERY[["N", "D"]])["loss16"], fit.predict(QUERY[["N", "D"]]),
                               rtol=1e-12)


def test_load_law_explains_what_is_missing(tracking_uri):
    from registry.laws.registered import (
        QID_LAW,
        LawNotFoundError,
        load_law,
        seed_published_laws,
    )

    with pytest.raises(LawNotFoundError, match=r"no registered model 'qid-law' has any version.*"
                                               r"seed_published_laws\(\)") as err:
        load_law(QID_LAW)
    assert isinstance(err.value, LookupError)
    seed_published_laws()
    with pytest.raises(LawNotFoundError, match=r"no alias 'champion' \(aliases: current\)"):
        load_law(QID_LAW, "champion")
    with pytest.raises(LawNotFoundError, match=r"no version 7 \(versions: 1\)"):
        load_law(QID_LAW, "7")
