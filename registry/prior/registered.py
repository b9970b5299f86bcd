"""`ptq-prior` versions: a fit logged as a run, registered, promoted by held-out error, loaded.

Like the loss predictor (registry/predictor/registered.py): the fit is a run in `ptq-registry`
(recipe, data versions, held-out metrics, the predicted-vs-observed plot, the published data as a
logged dataset input with its version as digest); its pyfunc model (`prior_model.py`, from code)
becomes a version whose artifact `prior.json` is all the advisor reads. `champion` moves only
when the new version's leave-one-family-out mean |ln(pred/obs)| on the 3- and 4-bit rows beats the
champion's on the same rows (its recipe re-evaluated when the rows differ or its run predates the
score); otherwise the new version is `challenger`.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from registry.conformal import INTERVAL_BANDS
from registry.prior.features import FRAME_COLUMNS
from registry.prior.spec import PRIOR, SCHEMA, LoadedPrior
from registry.versions import (
    VersionNotFoundError,
    registry_experiment_id,
    resolve_version,
    version_artifact,
)
from store.errors import InputError
from store.short_runs import owner_tags

CHAMPION, CHALLENGER = "champion", "challenger"
PIP_REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
_CODE = str(Path(__file__).with_name("prior_model.py"))
SCORE = "mean_abs_log_error_3_4_bits"  # held out by family, on evaluation.JUDGED_BITS; the promotion metric
TRAINING_COLUMNS = ("model", "family", "format", "method", "origin", "cite", "corpus", "delta_nll",
                    "non_embedding_params", "train_tokens", "sqnr_db", "precision")


class PriorNotFoundError(InputError, LookupError):
    """No prior version where one was asked for."""


def _plain(value):
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass
class PriorFit:
    """A recipe fitted on all rows, with its held-out evaluation (`evaluation` is the JSON document)."""

    recipe: dict
    params: dict
    evaluation: dict
    frame: object


def build_fit(recipe: dict, frame, extras: dict, alpha: float = 0.1) -> PriorFit:
    """Evaluate `recipe` family by family on `frame`, fit it on every row, assemble its documents.

    `extras`: what the version carries besides the model (sqnr_table, published, fp_published,
    data_versions, skipped, synthetic).
    """
    from registry.prior.evaluation import (  # fitting imports sklearn
        evaluate,
        evaluation_key,
        rtn_above_gptq,
    )
    from registry.prior.model import fit_model

    delta = frame["delta_nll"].to_numpy(float)
    ev = evaluate(recipe, frame, delta, alpha)
    pairs = rtn_above_gptq(frame, ev["predictions"]["prior"])
    key = evaluation_key(frame, delta)
    params = {"schema": SCHEMA, "recipe": recipe, "model": fit_model(recipe, frame, delta), "alpha": alpha,
              "halfwidth_log": ev["halfwidth_log"], "halfwidth_log_unknown_d": ev["halfwidth_log_unknown_d"],
              "interval_bands": INTERVAL_BANDS, "summary": ev["summary"], "rtn_vs_gptq": pairs, "evaluation_key": key, **extras,
              "training_rows": frame[list(TRAINING_COLUMNS)].to_dict(orient="records")}
    rows = []
    for i, r in enumerate(frame.itertuples(index=False)):
        rows.append({"model": r.model, "family": r.family, "format": r.format, "method": r.method,
                     "source": r.origin, "cite": r.cite, "corpus": r.corpus, "bits": int(r.precision),
                     "observed_delta_nll": float(delta[i]), "heldout_delta_nll": ev["predictions"]["prior"][i],
                     "lower": ev["lower"][i], "upper": ev["upper"][i],
                     "qid_published": ev["predictions"]["qid_published"][i],
                     "qid_refit": ev["predictions"]["qid_refit"][i]})
    document = {"recipe": recipe, "alpha": alpha, "evaluation_key": key, "rows": rows,
                "metrics": {"by_bits_method": ev["metrics"], "summary": ev["summary"], "rtn_vs_gptq": pairs,
                            "rtn_vs_gptq_qid_refit": rtn_above_gptq(frame, ev["predictions"]["qid_refit"]),
                            "halfwidth_log": ev["halfwidth_log"],
                            "halfwidth_log_unknown_d": ev["halfwidth_log_unknown_d"]}}
    return PriorFit(recipe, _plain(params), _plain(document), frame)


def _plot(mlflow, fit: PriorFit) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from registry.prior.plot import heldout_figure

    fig = heldout_figure(fit.evaluation["rows"], f"ptq-prior ({fit.recipe['kind']}), families held out")
    mlflow.log_figure(fig, "plots/heldout_vs_observed.png")
    import matplotlib.pyplot as plt

    plt.close(fig)


def register_fit(fit: PriorFit, published_path: str | None = None, client=None, description: str | None = None):
    """Log the fit as a run, register it as a `ptq-prior` version, promote it; (ModelVersion, decision)."""
    import mlflow
    from mlflow.models import infer_signature

    client = client or mlflow.MlflowClient()
    versions = fit.params.get("data_versions", {})
    mlflow.set_experiment(experiment_id=registry_experiment_id(client))
    summary = fit.params["summary"]
    with mlflow.start_run(run_name=f"fit ptq-prior · {fit.recipe['kind']}", description=description,
                          tags=owner_tags()) as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({**{f"recipe.{k}": v for k, v in fit.recipe.items()}, "rows": len(fit.frame),
                           "families": ",".join(sorted(set(fit.frame["family"])))[:500],
                           "published_data_version": versions.get("published"),
                           "measured_data_versions": ",".join(versions.get("measured", [])) or "none",
                           "evaluation_key": fit.params["evaluation_key"]})
        mlflow.log_metrics({k: v for k, v in summary.items() if v is not None})
        published = fit.frame[fit.frame["origin"] == "published"]
        if len(published):  # the published rows it learned from, as a dataset whose digest is the data version
            with warnings.catch_warnings():  # MLflow registers its local-file source twice and warns of it
                warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
                dataset = mlflow.data.from_pandas(published.drop(columns=["link"]).astype(str),
                                                  source=published_path or "registry/data/published-results.yaml",
                                                  name="published-results", digest=versions.get("published"))
            mlflow.log_input(dataset, context="training")
        mlflow.log_dict(fit.evaluation, "evaluation.json")
        _plot(mlflow, fit)
        path = Path(tmp) / "prior.json"
        path.write_text(json.dumps(fit.params))
        # numbers as doubles: a schema of int64 refuses `precision: 4.0` (what JSON clients send) and
        # any missing value, where double accepts ints and floats alike
        sample = fit.frame.head(3)[list(FRAME_COLUMNS)].astype({"precision": float})
        output = LoadedPrior(PRIOR, "new", fit.params).predict(sample).drop(columns="unknown_d")
        info = mlflow.pyfunc.log_model(name="model", python_model=_CODE, artifacts={"prior": str(path)},
                                       signature=infer_signature(sample, output),
                                       input_example=sample, pip_requirements=PIP_REQUIREMENTS)
    tags = {"recipe": json.dumps(fit.recipe), "evaluation_key": fit.params["evaluation_key"],
            "published_data_version": str(versions.get("published")),
            "measured_data_versions": ",".join(versions.get("measured", [])) or "none",
            "lineage": f"run {run.info.run_id}: published data as a dataset input, evaluation.json",
            **{k: f"{v:.6g}" for k, v in summary.items() if v is not None}}
    version = mlflow.register_model(info.model_uri, PRIOR, tags=tags)
    client.update_registered_model(PRIOR, description=(
        "The prior: ΔNLL (nats/token) of any (model facts, format, method) with a multiplicative conformal "
        "interval, fitted on published results and measured runs. Alias champion: the lowest mean |ln(pred/obs)| "
        "over the 3- and 4-bit rows with each model family held out; challenger: the newest fit that did not beat it."))
    client.update_model_version(PRIOR, version.version, description=description or (
        f"{fit.recipe['kind']}: held-out median fold error {summary['median_fold_error']:.2f}× over "
        f"{len(fit.frame)} rows"))
    decision = _promote(client, version, fit)
    client.set_model_version_tag(PRIOR, version.version, "promotion", decision)
    return client.get_model_version(PRIOR, version.version), decision


def _promote(client, version, fit: PriorFit) -> str:
    from mlflow.exceptions import MlflowException

    new = fit.params["summary"][SCORE]
    try:
        champion = client.get_model_version_by_alias(PRIOR, CHAMPION)
    except MlflowException:  # no champion yet: the first fit is it
        client.set_registered_model_alias(PRIOR, CHAMPION, version.version)
        return f"champion: first version ({SCORE} {new:.4f})"
    recorded = client.get_run(champion.run_id).data.metrics.get(SCORE)
    if champion.tags.get("evaluation_key") == fit.params["evaluation_key"] and recorded is not None:
        old, how = recorded, "recorded"
    else:
        from registry.prior.evaluation import evaluate

        recipe = json.loads(champion.tags["recipe"])
        delta = fit.frame["delta_nll"].to_numpy(float)
        old, how = evaluate(recipe, fit.frame, delta)["summary"][SCORE], "its recipe re-evaluated here"
    if new < old:
        client.set_registered_model_alias(PRIOR, CHAMPION, version.version)
        return f"champion: {SCORE} {new:.4f} < {old:.4f} of version {champion.version} ({how})"
    client.set_registered_model_alias(PRIOR, CHALLENGER, version.version)
    return f"challenger: {SCORE} {new:.4f} ≥ {old:.4f} of champion version {champion.version} ({how})"


def load_prior(ref: str = CHAMPION, client=None) -> LoadedPrior:
    """The prior version `ref` (alias, number or 'latest'), read from its prior.json."""
    import mlflow

    client = client or mlflow.MlflowClient()
    try:
        version = resolve_version(client, PRIOR, ref)
    except VersionNotFoundError as err:
        raise PriorNotFoundError(f"{err}; fit one with `advisor prior fit` (or `advisor seed`)") from None
    path = version_artifact(client, PRIOR, version.version, "artifacts/prior.json")
    return LoadedPrior(PRIOR, str(version.version), json.loads(Path(path).read_text()), version.run_id)


def load_evaluation(prior: LoadedPrior, client=None) -> dict:
    """The held-out evaluation logged with a prior version (evaluation.json of its fitting run)."""
    import mlflow

    client = client or mlflow.MlflowClient()
    return json.loads(Path(client.download_artifacts(prior.run_id, "evaluation.json")).read_text())
