"""Split-conformal intervals per band of bits: one source for the loss predictor and the prior.

A single width over every row is set by the rows that err most — 2-bit formats, where the network
breaks and losses reach tens of nats — and says nothing useful at 4 bits. So widths are kept per
band of the format's bit count, each from the held-out residuals of its own band.
"""

from __future__ import annotations

import math

import numpy as np

INTERVAL_BANDS = "p<=2,p=3,p>=4"


def conformal_halfwidth(residuals, alpha: float) -> float:
    """Split-conformal half-width for miscoverage `alpha` from absolute residuals: the
    ⌈(n+1)(1−α)⌉-th smallest, or inf when there are too few to support that coverage."""
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    n = len(r)
    rank = math.ceil((n + 1) * (1 - alpha))
    return float("inf") if n == 0 or rank > n else float(r[rank - 1])


def precision_bands(bits, bands: str = INTERVAL_BANDS) -> np.ndarray:
    """Per bit count, the first band of `bands` ("p<=2,p=3,p>=4") it falls in ("" for none)."""
    bits = np.asarray(bits, dtype=float)
    label = np.full(len(bits), "", dtype=object)
    for band in reversed(bands.split(",")):  # the first matching band wins
        op, value = (band[1:3], float(band[3:])) if band[1:3] in ("<=", ">=") else ("=", float(band[2:]))
        hit = {"<=": bits <= value, ">=": bits >= value, "=": bits == value}[op]
        label = np.where(hit, band, label)
    return label.astype(str)


def row_widths(halfwidths: dict, bits, bands: str = INTERVAL_BANDS) -> np.ndarray:
    """Per bit count, its band's half-width from `halfwidths` (band → width; None or absent: inf)."""
    widths = {b: np.inf if w is None else float(w) for b, w in halfwidths.items()}
    return np.array([widths.get(b, np.inf) for b in precision_bands(bits, bands)], dtype=float)


def band_metric_name(band: str) -> str:
    """A band as MLflow allows in a metric name: p<=2 → le2, p=3 → eq3, p>=4 → ge4."""
    return band.replace("p<=", "le").replace("p>=", "ge").replace("p=", "eq")


def finite_halfwidth(residuals, alpha: float) -> float:
    """The half-width from the finite residuals only (a prediction that failed is no evidence)."""
    residuals = np.asarray(residuals, dtype=float)
    return conformal_halfwidth(residuals[np.isfinite(residuals)], alpha)


def group_widths(residuals, groups, alpha: float, names=None) -> dict:
    """group → conformal half-width from that group's finite residuals, for every group present
    (or every one of `names`; inf where too few)."""
    residuals, groups = np.asarray(residuals, dtype=float), np.asarray(groups)
    names = [str(g) for g in np.unique(groups)] if names is None else list(names)
    return {name: finite_halfwidth(residuals[groups == name], alpha) for name in names}


def heldout_widths(residuals, families, groups, alpha: float) -> np.ndarray:
    """Per row: the half-width its family would get held out — from the other families' residuals
    in the same group (a band of bits, or method / band)."""
    residuals, families, groups = (np.asarray(a) for a in (residuals, families, groups))
    widths = np.full(len(residuals), np.inf)
    for family in np.unique(families):
        for group in np.unique(groups[families == family]):
            rows = (families == family) & (groups == group)
            widths[rows] = finite_halfwidth(residuals[(families != family) & (groups == group)], alpha)
    return widths


def band_label(band: str) -> str:
    """A band in words: p<=2 → "≤ 2 bits", p=3 → "3 bits", p>=4 → "≥ 4 bits"."""
    return band.replace("p<=", "≤ ").replace("p>=", "≥ ").replace("p=", "") + " bits"


def widths_text(halfwidths: dict) -> str:
    """"±0.28 at ≥ 4 bits, ±1.17 at 3 bits, none at ≤ 2 bits" (nats/token), widest band last."""
    def shown(width):
        return "none" if width is None or not math.isfinite(width) else f"±{width:.4f}"
    return ", ".join(f"{shown(w)} at {band_label(b)}" for b, w in reversed(list(halfwidths.items())))
