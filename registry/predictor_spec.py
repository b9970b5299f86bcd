"""Answering from a predictor spec (`predictor.json`): point and conformal interval, numpy only."""

from __future__ import annotations

import pandas as pd

from registry.tree_json import TreeEnsemble


def predict_from_spec(spec: dict, ensemble: TreeEnsemble, frame: pd.DataFrame) -> pd.DataFrame:
    """nll_gptq, lower, upper (nats/token) for rows holding the spec's features and base column."""
    missing = [c for c in spec["features"] + ([spec["base_column"]] if spec["base_column"] else [])
               if c not in frame.columns]
    if missing:
        raise ValueError(f"the loss predictor needs columns {missing}")
    base = frame[spec["base_column"]].to_numpy(float) if spec["base_column"] else 0.0
    point = ensemble.predict(frame[spec["features"]].to_numpy(float)) + base
    width = spec["halfwidth"]
    return pd.DataFrame({"nll_gptq": point, "lower": point - width, "upper": point + width})
