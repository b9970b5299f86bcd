"""Answering from a predictor spec (`predictor.json`): point and conformal interval, numpy only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from registry.conformal import precision_bands, row_widths
from registry.predictor.tree_json import TreeEnsemble


def predict_from_spec(spec: dict, ensemble: TreeEnsemble, frame: pd.DataFrame) -> pd.DataFrame:
    """nll_gptq, lower, upper (nats/token) for rows holding the spec's features and base column."""
    needed = spec["features"] + [spec["base_column"], spec.get("scale_column")]
    missing = [c for c in needed if c and c not in frame.columns]
    if missing:
        raise ValueError(f"the loss predictor needs columns {missing}")
    base = frame[spec["base_column"]].to_numpy(float) if spec["base_column"] else 0.0
    point = ensemble.predict(frame[spec["features"]].to_numpy(float)) * spec_scale(spec, frame) + base
    point = spec_share(spec, frame, point)
    width = spec_widths(spec, frame["precision"].to_numpy(float))
    return pd.DataFrame({"nll_gptq": point, "lower": point - width, "upper": point + width})


def spec_widths(spec: dict, precision) -> np.ndarray:
    """Per row of bit count `precision`, the conformal half-width (nats/token; inf: no interval)."""
    precision = np.asarray(precision, dtype=float)
    if "halfwidths" not in spec:  # versions registered before the per-band widths: one for all rows
        return np.full(len(precision), float(spec["halfwidth"]))
    return row_widths(spec["halfwidths"], precision, spec["interval_bands"])


def spec_scale(spec: dict, frame: pd.DataFrame) -> np.ndarray:
    """Per row, what the trees' output is multiplied by: RTN's loss increase (nats/token, floored)
    for an rtn_fraction predictor, else 1."""
    if not spec.get("scale_column"):  # versions registered before rtn_fraction have no such key
        return np.ones(len(frame))
    gap = frame[spec["scale_column"]].to_numpy(float) - frame[spec["base_column"]].to_numpy(float)
    return np.maximum(gap, spec["scale_floor"])


def share_values(spec: dict, precision) -> np.ndarray:
    """Per row of bit count `precision`, the share of RTN's loss increase the spec answers it with
    (its band's median), NaN where the trees answer it."""
    precision = np.asarray(precision, dtype=float)
    share = spec.get("share")  # versions registered before the share recipe have none
    if not share:
        return np.full(len(precision), np.nan)
    by_band = {band: np.nan if v is None else float(v) for band, v in share["values"].items()}
    values = np.array([by_band.get(b, np.nan) for b in precision_bands(precision, share["bands"])], dtype=float)
    return np.where(precision >= share["from_bits"], values, np.nan)


def share_rows(spec: dict, frame: pd.DataFrame) -> np.ndarray:
    """Per row, whether the spec answers it with its band's share of RTN's damage instead of the trees."""
    return np.isfinite(share_values(spec, frame["precision"]))


def spec_share(spec: dict, frame: pd.DataFrame, point) -> np.ndarray:
    """`point` with the share rows replaced by NLL_fp + share × RTN's loss increase (floored)."""
    values = share_values(spec, frame["precision"])
    rows = np.isfinite(values)
    point = np.asarray(point, dtype=float).copy()
    if rows.any():
        share = spec["share"]
        fp, rtn = frame[share["base_column"]].to_numpy(float), frame[share["scale_column"]].to_numpy(float)
        point[rows] = (fp + values * np.maximum(rtn - fp, share["floor"]))[rows]
    return point
