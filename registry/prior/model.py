"""The prior's recipes, fitted and answered: ln ΔNLL from model, format and method facts.

- `ridge` (the physically motivated one): least squares with an L2 penalty on standardized
  features (features.LINEAR_FEATURES: the noise term ln(noise/signal) and its square, method and
  method × noise, ln N, ln D, format and corpus flags), then a soft saturation at the largest
  training ΔNLL, because a collapsed model cannot lose without bound: ŷ − softplus(ŷ − ln cap).
  Linear in logs, it extrapolates to families it never saw the way the scaling laws do.
- `forest`: a random forest on the same facts (features.TREE_FEATURES), the challenger; it cannot
  extrapolate beyond the training range, which is what held-out families test.
- the QiD law of Ouyang et al. (ΔqLoss = k·D^β/(N^α·P^γ)) as a baseline, published and refitted
  per method on the same rows.

Parameters are plain JSON (the forest's trees as arrays, registry/predictor/tree_json.py), so the
advisor answers with numpy; only fitting a forest imports scikit-learn (lazily).
"""

from __future__ import annotations

import numpy as np

from registry.laws.published import PUBLISHED_QID
from registry.predictor.tree_json import TreeEnsemble
from registry.prior.features import (
    LINEAR_FEATURES,
    TREE_FEATURES,
    design,
    log_d_fill,
    log_target,
)
from store.errors import InputError

RECIPES = {"ridge": {"kind": "ridge", "lam": 3.0},
           "forest": {"kind": "forest", "trees": 100, "min_samples_leaf": 3, "max_depth": 10, "seed": 0}}


class PriorFitError(InputError):
    """Too few rows, or rows that cannot be fitted; the message says which."""


def _check(frame, delta) -> np.ndarray:
    y = log_target(delta)
    if len(frame) < 10:
        raise PriorFitError(f"the prior needs at least 10 rows to fit, got {len(frame)}")
    if not np.all(np.isfinite(frame["sqnr_db"].to_numpy(float))):
        raise PriorFitError("some rows have no SQNR for their format: compute the format table first")
    return y


def fit_model(recipe: dict, frame, delta) -> dict:
    """Fit `recipe` on rows `frame` (features.FRAME_COLUMNS) and their ΔNLL (nats/token): the JSON model."""
    y = _check(frame, delta)
    fill = log_d_fill(frame["train_tokens"])
    cap = float(np.max(y))
    if recipe["kind"] == "ridge":
        X = design(frame, fill, LINEAR_FEATURES)
        mean, scale = X.mean(0), X.std(0)
        scale = np.where(scale > 0, scale, 1.0)  # a constant column (e.g. no MX rows) gets no weight
        A = np.column_stack([np.ones(len(X)), (X - mean) / scale])
        penalty = recipe["lam"] * np.eye(A.shape[1])
        penalty[0, 0] = 0.0
        beta = np.linalg.solve(A.T @ A + penalty, A.T @ y)
        return {"kind": "ridge", "features": list(LINEAR_FEATURES), "log_d_fill": fill, "cap_log": cap,
                "linear": {"mean": mean.tolist(), "scale": scale.tolist(), "intercept": float(beta[0]),
                           "coef": beta[1:].tolist()}}
    if recipe["kind"] == "forest":
        from sklearn.ensemble import RandomForestRegressor

        from registry.predictor.tree_json import ensemble_to_json

        forest = RandomForestRegressor(n_estimators=recipe["trees"], min_samples_leaf=recipe["min_samples_leaf"],
                                       max_depth=recipe["max_depth"], random_state=recipe["seed"], n_jobs=1)
        forest.fit(design(frame, fill, TREE_FEATURES).astype(np.float32), y)
        return {"kind": "forest", "features": list(TREE_FEATURES), "log_d_fill": fill, "cap_log": cap,
                "ensemble": ensemble_to_json(forest)}
    raise PriorFitError(f"unknown prior recipe {recipe['kind']!r}; known: {', '.join(RECIPES)}")


def predict_log(model: dict, frame) -> np.ndarray:
    """ln ΔNLL (nats/token) per row of `frame`, from a `fit_model` document (numpy only).

    A GPTQ row is never predicted to lose more than RTN in the same format: GPTQ starts from
    RTN's grid and only moves weights to lower the layer's output error.
    """
    out = _predict(model, frame)
    gptq = (frame["method"] == "gptq").to_numpy()
    if gptq.any():
        out[gptq] = np.minimum(out[gptq], _predict(model, frame[gptq].assign(method="rtn")))
    return out


def _predict(model: dict, frame) -> np.ndarray:
    X = design(frame, model["log_d_fill"], model["features"])
    if model["kind"] == "ridge":
        lin = model["linear"]
        # a row-wise sum, not a matrix product: BLAS rounds by batch, and a GPTQ row capped at its RTN
        # twin must equal that twin predicted in another batch to the last bit
        z = (X - np.asarray(lin["mean"])) / np.asarray(lin["scale"])
        raw = lin["intercept"] + (z * np.asarray(lin["coef"])).sum(axis=1)
        return raw - np.logaddexp(0.0, raw - model["cap_log"])
    return _forest_predict(model["ensemble"], X)


def _forest_predict(ensemble: dict, X) -> np.ndarray:
    """The mean of the trees' leaves, all rows at once (tree_json's comparison: float32 features ≤
    threshold), so a forest answers a whole candidate grid in milliseconds."""
    X = np.asarray(X, dtype=np.float32).astype(np.float64)
    rows, total = np.arange(len(X)), np.zeros(len(X))
    for tree in ensemble["trees"]:
        left, right = np.asarray(tree["left"]), np.asarray(tree["right"])
        feature, threshold = np.asarray(tree["feature"]), np.asarray(tree["threshold"])
        node = np.zeros(len(X), dtype=int)
        while True:
            inner = left[node] != -1
            if not inner.any():
                break
            go_left = X[rows, np.where(inner, feature[node], 0)] <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        total += np.asarray(tree["value"])[node]
    return total / len(ensemble["trees"]) + ensemble.get("base_score", 0.0)


def contributions(model: dict, frame) -> tuple[float, np.ndarray]:
    """(bias, per-feature contributions) to the unsaturated ln ΔNLL of each row: coefficient × the
    standardized feature for the ridge, Saabas path contributions for the forest."""
    X = design(frame, model["log_d_fill"], model["features"])
    if model["kind"] == "ridge":
        lin = model["linear"]
        z = (X - np.asarray(lin["mean"])) / np.asarray(lin["scale"])
        return lin["intercept"], z * np.asarray(lin["coef"])
    ensemble = TreeEnsemble(model["ensemble"])
    parts = [ensemble.contributions(row) for row in X]
    return float(parts[0][0]), np.vstack([p[1] for p in parts])


# ---------------------------------------------------------------- the QiD law as a baseline

def _qid_columns(frame):
    n = frame["non_embedding_params"].to_numpy(float)
    d = frame["train_tokens"].to_numpy(float)
    p = frame["precision"].to_numpy(float)
    return n, d, p


def qid_published_log(frame) -> np.ndarray:
    """ln ΔNLL by the published QiD law (Pythia, GPTQ; one law for every method); NaN without D."""
    n, d, p = _qid_columns(frame)
    q = PUBLISHED_QID
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(q["k"]) + q["beta"] * np.log(d) - q["alpha"] * np.log(n) - q["gamma"] * np.log(p)


def fit_qid(frame, delta) -> dict:
    """The QiD law refitted per method in log space (ln k, β, α, γ by least squares) on rows with D."""
    n, d, p = _qid_columns(frame)
    y = log_target(delta)
    known = np.isfinite(d) & (d > 0)
    fits = {}
    for method in ("rtn", "gptq", "all"):
        rows = known & ((frame["method"] == method).to_numpy() if method != "all" else True)
        if rows.sum() < 8:
            continue
        A = np.column_stack([np.ones(rows.sum()), np.log(d[rows]), -np.log(n[rows]), -np.log(p[rows])])
        coef = np.linalg.lstsq(A, y[rows], rcond=None)[0]
        fits[method] = {"log_k": float(coef[0]), "beta": float(coef[1]), "alpha": float(coef[2]),
                        "gamma": float(coef[3]), "rows": int(rows.sum())}
    if not fits:
        raise PriorFitError("too few rows with training tokens to refit the QiD law")
    return fits


def qid_refit_log(fits: dict, frame) -> np.ndarray:
    """ln ΔNLL by a `fit_qid` law (the method's own fit, else the pooled one); NaN without D."""
    n, d, p = _qid_columns(frame)
    out = np.full(len(frame), np.nan)
    for i, method in enumerate(frame["method"]):
        f = fits.get(method) or fits.get("all") or next(iter(fits.values()))
        if np.isfinite(d[i]) and d[i] > 0:
            out[i] = f["log_k"] + f["beta"] * np.log(d[i]) - f["alpha"] * np.log(n[i]) - f["gamma"] * np.log(p[i])
    return out
