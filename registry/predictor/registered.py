"""Registering loss predictors as `ptq-loss-predictor` versions, promoting them, loading them.

A fit is a run in the `ptq-registry` experiment (recipe, table lineage, held-out metrics, plots)
whose pyfunc model (`predictor_model.py`, from code) becomes a version. The `champion` alias moves
only when the new recipe beats the champion's on the *same* held-out evaluation — the champion's
own recorded figure when the evaluation key matches, else its recipe re-evaluated on this table;
otherwise the new version gets `challenger`. Stages are deprecated: aliases only.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from registry.conformal import band_metric_name
from registry.predictor.feature_table import FEATURES, TARGET
from registry.versions import (
    VersionNotFoundError,
    registry_experiment_id,
    resolve_version,
    version_artifact,
)
from store.errors import InputError
from store.short_runs import owner_tags

PREDICTOR = "ptq-loss-predictor"
CHAMPION, CHALLENGER = "champion", "challenger"
PIP_REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1", "scikit-learn==1.9.1",
                    "skops==0.16.0", "xgboost-cpu==3.2.0"]
_CODE = str(Path(__file__).with_name("predictor_model.py"))


class PredictorNotFoundError(InputError, LookupError):
    """No predictor version where one was asked for."""


def _spec(evaluation) -> dict:
    from registry.predictor.loss_predictor import BASES, GAP_FLOOR, SCALES
    from registry.predictor.tree_json import ensemble_to_json

    predictor = evaluation.predictor
    return {"features": list(FEATURES), "target": TARGET, "base_column": BASES[predictor.base],
            "scale_column": SCALES.get(predictor.base), "scale_floor": GAP_FLOOR,
            "recipe": predictor.recipe(), "share": predictor.share_spec(), "alpha": evaluation.alpha, "interval_bands": evaluation.bands,
            # JSON has no inf: a band without enough held-out rows for the coverage has no width
            "halfwidths": {b: w if math.isfinite(w) else None for b, w in evaluation.halfwidths.items()},
            "evaluation_key": evaluation.key, "metrics": evaluation.metrics,
            "ensemble": ensemble_to_json(predictor.regressor_)}


def _save_estimator(regressor, folder: Path) -> Path:
    if hasattr(regressor, "get_booster"):
        path = folder / "estimator.ubj"
        regressor.get_booster().save_model(path)  # XGBoost's native binary JSON
        return path
    import skops.io

    path = folder / "estimator.skops"
    skops.io.dump(regressor, path)
    return path


def _plots(mlflow, evaluation) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = evaluation.predictions
    fig, ax = plt.subplots(figsize=(5, 5))
    for (family, split), rows in frame.groupby(["model_family", "split"]):
        widths = evaluation.widths(rows["precision"])
        ax.errorbar(rows[TARGET], rows["predicted"], yerr=np.where(np.isfinite(widths), widths, np.nan),
                    fmt="o" if split == "lofo" else "s",
                    alpha=0.7, capsize=2, label=f"{family} ({split})")
    low, high = frame[[TARGET, "predicted"]].min().min(), frame[[TARGET, "predicted"]].max().max()
    ax.plot([low, high], [low, high], "k--", linewidth=1)
    ax.set_xlabel("observed NLL after GPTQ (nats/token)")
    ax.set_ylabel("predicted (family held out)")
    ax.set_title("loss predictor, leave-one-family-out")
    ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/predicted_vs_observed.png")
    plt.close(fig)
    importances = evaluation.predictor.regressor_.feature_importances_
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.barh(list(FEATURES), importances)
    ax.set_xlabel("Gini importance" if evaluation.predictor.kind == "rf" else "gain importance")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/feature_importance.png")
    plt.close(fig)
    mlflow.log_dict(dict(zip(FEATURES, map(float, importances))), "feature_importance.json")


def _champion_mae(client, champion, evaluation, table, holdout_models) -> tuple[float, str]:
    """The champion's LOFO MAE on the new evaluation: recorded if same key, else recomputed."""
    from registry.predictor.evaluation import evaluate_recipe

    if champion.tags.get("evaluation_key") == evaluation.key:
        # the run's metric, not the version tag: tags hold 6 significant digits, and a decision
        # between two fits that close must not turn on the rounding
        run = client.get_run(champion.run_id) if champion.run_id else None
        recorded = run.data.metrics.get("lofo_mae") if run else None
        return float(champion.tags["lofo_mae"] if recorded is None else recorded), "recorded"
    recipe = json.loads(champion.tags["recipe"])
    return evaluate_recipe(recipe, table, holdout_models, evaluation.alpha).metrics["lofo_mae"], \
        "its recipe re-evaluated here"


def register_evaluation(evaluation, table, query, holdout_models=(), description: str | None = None,
                        client=None, data_version: str | None = None):
    """Log the fit as a run, register its version, move `champion` or set `challenger`.

    Returns (ModelVersion, decision text).
    """
    import mlflow
    from mlflow.models import infer_signature

    client = client or mlflow.MlflowClient()
    predictor = evaluation.predictor
    spec = _spec(evaluation) | ({"data_version": data_version} if data_version else {})
    lineage = sorted(set(table["rtn_run_id"]) | set(table["gptq_run_id"].dropna()) |
                     set(table["parent_run_id"]))
    families = sorted(set(table["model_family"]))
    sample = table[list(FEATURES) + [c for c in ("nll_fp", "nll_rtn") if c not in FEATURES]].head(3)
    mlflow.set_experiment(experiment_id=registry_experiment_id(client))
    name = f"fit {predictor.describe().replace(', ', ' · ')}"
    with mlflow.start_run(run_name=name, description=description, tags=owner_tags()) as run, \
            tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({**{f"recipe.{k}": v for k, v in predictor.recipe().items()},
                           "experiments": ",".join(query.experiments),
                           "families": ",".join(query.families) or "all",
                           "dataset_digest": query.dataset_digest or "any",
                           "holdout_models": ",".join(holdout_models) or "none",
                           **{f"share_{band_metric_name(b)}": v for b, v in (predictor.share_ or {}).items()},
                           "alpha": evaluation.alpha, "train_rows": evaluation.train_rows,
                           "evaluation_key": evaluation.key})
        mlflow.log_metrics({k: v for k, v in evaluation.metrics.items() if v == v})
        mlflow.log_dict({"runs": lineage}, "lineage/training_runs.json")
        mlflow.log_table(evaluation.predictions, "predictions.json")
        _plots(mlflow, evaluation)
        folder = Path(tmp)
        (folder / "predictor.json").write_text(json.dumps(spec))
        estimator = _save_estimator(predictor.regressor_, folder)
        from registry.predictor.spec import predict_from_spec
        from registry.predictor.tree_json import TreeEnsemble

        output = predict_from_spec(spec, TreeEnsemble(spec["ensemble"]), sample)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=_CODE,
            artifacts={"predictor": str(folder / "predictor.json"), "estimator": str(estimator)},
            signature=infer_signature(sample, output), input_example=sample,
            pip_requirements=PIP_REQUIREMENTS)
    tags = {"features": ",".join(FEATURES), "target": TARGET, "recipe": json.dumps(predictor.recipe()),
            "evaluation_key": evaluation.key, "families": ",".join(families),
            "holdout_models": ",".join(holdout_models) or "none",
            "dataset_digests": ",".join(sorted(set(table["dataset_digest"])))[:4000],
            "training_runs": f"{len(lineage)} runs, see lineage/training_runs.json of run {run.info.run_id}",
            **({"data_version": data_version} if data_version else {}),
            **{k: f"{v:.6g}" for k, v in evaluation.metrics.items()}}
    version = mlflow.register_model(info.model_uri, PREDICTOR, tags=tags)
    client.update_registered_model(PREDICTOR, description=(
        "Predicts NLL after GPTQ (nats/token) with a conformal interval from RTN-time features "
        "(Xu et al. 2024). Alias champion: best leave-one-family-out MAE; challenger: the newest "
        "fit that did not beat it."))
    client.update_model_version(PREDICTOR, version.version, description=description or (
        f"{predictor.describe()}: LOFO MAE {evaluation.metrics['lofo_mae']:.4f} "
        f"nats/token over {evaluation.train_rows} rows of families {', '.join(families)}"))
    decision = _promote(client, version, evaluation, table, holdout_models)
    client.set_model_version_tag(PREDICTOR, version.version, "promotion", decision)
    return client.get_model_version(PREDICTOR, version.version), decision


def _promote(client, version, evaluation, table, holdout_models) -> str:
    try:
        champion = client.get_model_version_by_alias(PREDICTOR, CHAMPION)
    except Exception:  # no champion yet: the first fit is it
        client.set_registered_model_alias(PREDICTOR, CHAMPION, version.version)
        return f"champion: first version with a held-out evaluation (LOFO MAE {evaluation.metrics['lofo_mae']:.4f})"
    new = evaluation.metrics["lofo_mae"]
    old, how = _champion_mae(client, champion, evaluation, table, holdout_models)
    shown_new, shown_old = _distinct(new, old)
    if new < old:
        client.set_registered_model_alias(PREDICTOR, CHAMPION, version.version)
        return f"champion: LOFO MAE {shown_new} < {shown_old} of version {champion.version} ({how})"
    client.set_registered_model_alias(PREDICTOR, CHALLENGER, version.version)
    return f"challenger: LOFO MAE {shown_new} ≥ {shown_old} of champion version {champion.version} ({how})"


def _distinct(a: float, b: float) -> tuple[str, str]:
    """a and b with 4 decimals, or as many more as it takes to tell them apart (up to 12)."""
    for digits in range(4, 13):
        if f"{a:.{digits}f}" != f"{b:.{digits}f}":
            break
    return f"{a:.{digits}f}", f"{b:.{digits}f}"


@dataclass
class LoadedPredictor:
    """A registered predictor ready to answer: its version and its spec (trees as arrays)."""

    name: str
    version: str
    spec: dict
    run_id: str | None

    def predict(self, frame):
        """DataFrame nll_gptq, lower, upper (nats/token) for rows with the FEATURES columns."""
        from registry.predictor.spec import predict_from_spec
        from registry.predictor.tree_json import TreeEnsemble

        return predict_from_spec(self.spec, TreeEnsemble(self.spec["ensemble"]), frame)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def load_predictor(ref: str = CHAMPION, client=None, name: str = PREDICTOR) -> LoadedPredictor:
    """The predictor version `ref` (alias, number or 'latest') without unpickling anything."""
    import mlflow

    client = client or mlflow.MlflowClient()
    try:
        version = resolve_version(client, name, ref)
    except VersionNotFoundError as err:
        raise PredictorNotFoundError(f"{err}; fit one with `advisor fit-predictor`") from None
    path = version_artifact(client, name, version.version, "artifacts/predictor.json")
    return LoadedPredictor(name, str(version.version), json.loads(Path(path).read_text()), version.run_id)
