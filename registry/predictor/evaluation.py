"""How a loss-predictor recipe is judged: leave-one-family-out, named hold-outs, conformal coverage.

Xu et al. judge their forest on models it never saw (pythia-1b, mpt-7b held out). We do the same
twice: every model family is held out in turn (LOFO — the promotion metric is its MAE over all
rows), and named models can be held out of the final fit entirely and reported apart, as a test set.
The MAE on the formats of DEPLOYABLE_BITS or more is logged beside it, but does not promote: on the
first real-model data it preferred the RTN-fraction target over NLL_fp, whose picks under a memory
budget lost less (docs/real-model-study.md, "What held up").
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from registry.conformal import (
    INTERVAL_BANDS,
    band_metric_name,
    group_widths,
    heldout_widths,
    precision_bands,
    row_widths,
)
from registry.predictor.feature_table import TARGET
from registry.predictor.loss_predictor import LossPredictor
from store.errors import InputError

DEFAULT_ALPHA = 0.1  # 90 % prediction intervals
DEPLOYABLE_BITS = 3  # 2-bit formats break these networks (5-24 nats): reported apart, not deployed


def leave_one_group_out(predictor: LossPredictor, table, groups) -> np.ndarray:
    """Out-of-group predictions: each row predicted by a clone fitted without its group."""
    from sklearn.base import clone

    groups = np.asarray(groups)
    predicted = np.full(len(table), np.nan)
    for group in np.unique(groups):
        held = groups == group
        fitted = clone(predictor).fit(table[~held], table[TARGET][~held])
        predicted[held] = fitted.predict(table[held])
    return predicted


def regression_metrics(observed, predicted) -> dict:
    """MAE, RMSE (nats/token), R² and Spearman ρ of predictions."""
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    observed, predicted = np.asarray(observed), np.asarray(predicted)
    rho = spearmanr(observed, predicted).statistic if len(observed) > 2 else float("nan")
    return {"mae": float(mean_absolute_error(observed, predicted)),
            "rmse": float(math.sqrt(mean_squared_error(observed, predicted))),
            "r2": float(r2_score(observed, predicted)) if len(observed) > 1 else float("nan"),
            "spearman": float(rho)}


def evaluation_key(table, holdout_models) -> str:
    """Identifies the held-out evaluation: the rows (their runs) and the hold-outs."""
    ids = sorted(f"{r}:{g}" for r, g in zip(table["rtn_run_id"], table["gptq_run_id"]))
    text = "|".join(ids) + "#" + ",".join(sorted(holdout_models))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Evaluation:
    """A recipe judged on one table: metrics, intervals, and the final predictor fitted on it."""

    predictor: LossPredictor
    halfwidths: dict  # band of bits (registry.conformal) → conformal half-width, nats/token
    alpha: float
    metrics: dict  # lofo_* and holdout_* metrics, coverage
    predictions: object  # DataFrame: identity, observed, lofo / holdout prediction
    key: str
    train_rows: int
    bands: str = INTERVAL_BANDS

    def widths(self, precision) -> np.ndarray:
        """Per row of bit count `precision`, its interval's half-width."""
        return row_widths(self.halfwidths, precision, self.bands)


def evaluate_recipe(recipe: dict, table, holdout_models=(), alpha: float = DEFAULT_ALPHA) -> Evaluation:
    """LOFO-evaluate `recipe` on the rows with a GPTQ target, then fit it on all but hold-outs."""
    labelled = table.dropna(subset=[TARGET]).reset_index(drop=True)
    unknown = set(holdout_models) - set(labelled["model"])
    if unknown:
        raise InputError(f"held-out model(s) {sorted(unknown)} have no GPTQ rows; "
                         f"models with rows: {sorted(set(labelled['model']))}")
    held = labelled["model"].isin(holdout_models).to_numpy()
    train = labelled[~held].reset_index(drop=True)
    families = train["model_family"].to_numpy()
    if len(set(families)) < 2:
        raise InputError(f"leave-one-family-out needs runs of at least 2 model families; the table has "
                         f"{sorted(set(families)) or 'none'} (give sweep models a family in --models-file)")
    predictor = LossPredictor(**recipe)
    lofo = leave_one_group_out(predictor, train, families)
    observed = train[TARGET].to_numpy()
    metrics = {f"lofo_{k}": v for k, v in regression_metrics(observed, lofo).items()}
    deployable = train["precision"].to_numpy(float) >= DEPLOYABLE_BITS
    if deployable.any():
        deployed = regression_metrics(observed[deployable], lofo[deployable])
        metrics |= {"lofo_mae_deployable": deployed["mae"], "lofo_spearman_deployable": deployed["spearman"]}
    residuals = np.abs(observed - lofo)
    bands = precision_bands(train["precision"])
    halfwidths = group_widths(residuals, bands, alpha, INTERVAL_BANDS.split(","))
    metrics["lofo_coverage"] = float(np.mean(residuals <= heldout_widths(residuals, families, bands, alpha)))
    final = LossPredictor(**recipe).fit(train, train[TARGET])
    predictions = labelled[["model", "model_family", "format", "precision", "rtn_run_id", "gptq_run_id", TARGET]].copy()
    predictions["split"] = np.where(held, "holdout", "lofo")
    predictions["predicted"] = np.nan
    predictions.loc[~held, "predicted"] = lofo
    evaluation = Evaluation(final, halfwidths, alpha, metrics, predictions,
                            evaluation_key(labelled, holdout_models), len(train))
    if held.any():
        test = labelled[held]
        predicted = final.predict(test)
        predictions.loc[held, "predicted"] = predicted
        metrics |= {f"holdout_{k}": v for k, v in regression_metrics(test[TARGET], predicted).items()}
        metrics["holdout_coverage"] = float(np.mean(np.abs(test[TARGET] - predicted) <= evaluation.widths(test["precision"])))
    # metrics hold the finite widths (MLflow logs no inf); a band without one has no interval
    metrics |= {f"halfwidth_{band_metric_name(b)}": w for b, w in halfwidths.items() if math.isfinite(w)}
    return evaluation
