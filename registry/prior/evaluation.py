"""How the prior is judged: every row predicted with its whole model family held out.

For each family, the recipe (and the refitted QiD law) is fitted on the other families and asked
for that family's rows — the situation of a catalog model nobody measured. Metrics per
(bits P, method): the median fold error exp(median |ln(pred/obs)|), MAE of ΔNLL (nats/token),
Spearman's ρ across the rows and the coverage of 90 % intervals; for the recipe and both QiD
baselines. Intervals are split-conformal on the held-out log residuals, so multiplicative:
[pred·e^−q, pred·e^q]; a family's own width comes from the other families only. A second
half-width, from predictions made with every row's D hidden, is the one a model of unknown
training tokens gets. Widths are kept per interval group (features.interval_group: method × 2–3
bits vs 4+ bits, "Mondrian" conformal), because RTN at 2–3 bits collapses or not and errs far
more than GPTQ at 4 bits: one width for all would over-cover the one and under-cover the other.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from registry.conformal import group_widths, heldout_widths
from registry.prior.features import interval_groups, log_target
from registry.prior.model import (
    fit_model,
    fit_qid,
    predict_log,
    qid_published_log,
    qid_refit_log,
)
from store.errors import InputError

DEFAULT_ALPHA = 0.1
PREDICTORS = ("prior", "qid_published", "qid_refit")
# Where an 8-32 GB budget is decided and issue 27's goals are judged: the champion is chosen here
# (at 8 bits every recipe is close in nats, and far apart only in the log of tiny losses)
JUDGED_BITS = (3, 4)


def _lofo(recipe, frame, delta, families):
    """Held-out ln ΔNLL of the recipe (with D known, with D hidden) and of the refitted QiD law."""
    n = len(frame)
    prior, hidden, qid = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    masked = frame.assign(train_tokens=np.nan)
    for family in np.unique(families):
        held = families == family
        train = frame[~held]
        model = fit_model(recipe, train, delta[~held])
        prior[held] = predict_log(model, frame[held])
        hidden[held] = predict_log(model, masked[held])
        try:
            qid[held] = qid_refit_log(fit_qid(train, delta[~held]), frame[held])
        except InputError:
            pass  # too few rows with D outside this family: no refitted law for it
    return prior, hidden, qid


def _spearman(a, b) -> float:
    import pandas as pd

    if len(a) < 3:
        return float("nan")
    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def group_metrics(observed, predicted, inside) -> dict:
    """fold error, MAE (nats/token), Spearman ρ and coverage of held-out predictions."""
    ok = np.isfinite(predicted)
    obs, pred = observed[ok], predicted[ok]
    if not ok.any():
        return {"n": 0, "fold_error": None, "mae": None, "spearman": None, "coverage": None}
    err = np.abs(log_target(pred) - log_target(obs))
    rho = _spearman(obs, pred)
    return {"n": int(ok.sum()), "fold_error": float(math.exp(np.median(err))),
            "mae": float(np.mean(np.abs(pred - obs))), "spearman": None if math.isnan(rho) else rho,
            "coverage": float(np.mean(inside[ok]))}


def evaluate(recipe: dict, frame, delta, alpha: float = DEFAULT_ALPHA) -> dict:
    """Leave-one-family-out evaluation of `recipe` and the QiD baselines on `frame` (needs `family`,
    `precision` and features.FRAME_COLUMNS). Returns predictions, intervals and metrics."""
    delta = np.asarray(delta, dtype=float)
    families = frame["family"].astype(str).to_numpy()
    if len(set(families)) < 2:
        raise InputError(f"holding families out needs at least 2 model families; the rows have {sorted(set(families))}")
    y = log_target(delta)
    prior, hidden, refit = _lofo(recipe, frame, delta, families)
    published = qid_published_log(frame)
    logs = {"prior": prior, "qid_published": published, "qid_refit": refit}
    out = {"alpha": alpha, "rows": len(frame), "families": sorted(set(families))}
    errors = {name: np.abs(values - y) for name, values in logs.items()}
    groups = interval_groups(frame)
    out["halfwidth_log"] = group_widths(errors["prior"], groups, alpha)
    hidden_widths = group_widths(np.abs(hidden - y), groups, alpha)  # never narrower than with D known
    out["halfwidth_log_unknown_d"] = {g: max(w, out["halfwidth_log"][g]) for g, w in hidden_widths.items()}
    out["predictions"] = {name: np.exp(values) for name, values in logs.items()}
    widths = {name: heldout_widths(errors[name], families, groups, alpha) for name in logs}
    out["inside"] = {name: errors[name] <= widths[name] for name in logs}
    # a family's interval is the one it would get held out: its width from the other families
    out["lower"], out["upper"] = np.exp(prior - widths["prior"]), np.exp(prior + widths["prior"])
    out["metrics"] = metrics_table(frame, delta, out)
    judged = np.isin(frame["precision"].to_numpy(int), JUDGED_BITS)
    out["summary"] = {"mean_abs_log_error": float(np.mean(errors["prior"])),
                      "mean_abs_log_error_3_4_bits": float(np.mean(errors["prior"][judged] if judged.any()
                                                                   else errors["prior"])),
                      "median_fold_error": float(math.exp(np.median(errors["prior"]))),
                      "coverage": float(np.mean(out["inside"]["prior"]))}
    return out


def metrics_table(frame, delta, evaluation) -> list[dict]:
    """One entry per (bits, method) and predictor, plus RTN ≥ GPTQ on the rows published with both."""
    rows = []
    bits, methods = frame["precision"].to_numpy(int), frame["method"].to_numpy(str)
    for p in sorted(set(bits)):
        for method in ("rtn", "gptq"):
            chosen = (bits == p) & (methods == method)
            if not chosen.any():
                continue
            for name in PREDICTORS:
                m = group_metrics(delta[chosen], evaluation["predictions"][name][chosen],
                                  evaluation["inside"][name][chosen])
                rows.append({"bits": int(p), "method": method, "predictor": name, **m})
    return rows


def rtn_above_gptq(frame, predicted) -> dict:
    """Where a (model, format, corpus, source) is published for both methods: share predicted RTN ≥ GPTQ."""
    keys = ["model", "format", "corpus", "cite"]
    table = frame[keys + ["method"]].assign(pred=predicted).astype({"corpus": str})
    wide = table.pivot_table(index=keys, columns="method", values="pred", aggfunc="mean")
    if not {"rtn", "gptq"} <= set(wide.columns):
        return {"pairs": 0, "rtn_ge_gptq": None}
    both = wide.dropna(subset=["rtn", "gptq"])
    return {"pairs": len(both),
            "rtn_ge_gptq": float(np.mean(both["rtn"] >= both["gptq"])) if len(both) else None,
            "rtn_gt_gptq": float(np.mean(both["rtn"] > both["gptq"])) if len(both) else None}


def evaluation_key(frame, delta) -> str:
    """Identifies the rows an evaluation ran on (equal rows, equal key)."""
    ids = sorted(f"{m}|{f}|{me}|{c}|{s}|{d:.6g}" for m, f, me, c, s, d in zip(
        frame["model"], frame["format"], frame["method"], frame["corpus"].astype(str), frame["cite"], delta))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def family_bias(rows, bits=JUDGED_BITS) -> list[dict]:
    """Per held-out family, bits and method: how far its predictions sit from what was observed.

    `rows`: an evaluation document's rows. bias = exp(median ln(pred/obs)) (> 1: over-predicted),
    fold error = exp(median |ln(pred/obs)|). A family's bias is what one measured variant of one of
    its models would reveal; it is the part of the error no model fact here explains
    (docs/prior.md), so it is shown apart from the pooled metrics.
    """
    groups: dict = {}
    for r in rows:
        pred = r.get("heldout_delta_nll")
        if r["bits"] not in bits or pred is None or not math.isfinite(pred):
            continue
        err = float(log_target([pred])[0] - log_target([r["observed_delta_nll"]])[0])
        groups.setdefault((r["family"], r["bits"], r["method"]), []).append(err)
    return [{"family": f, "bits": b, "method": m, "n": len(errs), "bias": math.exp(float(np.median(errs))),
             "fold_error": math.exp(float(np.median(np.abs(errs))))}
            for (f, b, m), errs in sorted(groups.items())]
