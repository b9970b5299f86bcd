"""Tree ensembles as plain JSON arrays, evaluated with numpy: the advisor's load path.

The registry keeps each fitted estimator in its own safe format (skops for scikit-learn, UBJ for
XGBoost), but loading either imports heavy machinery (skops pulls in torch) and MLflow 3.17
refuses to deserialize skops without `MLFLOW_ALLOW_PICKLE_DESERIALIZATION`. The same trees as
arrays need neither, load in milliseconds, and give per-feature contributions (Saabas) for free.
Both libraries compare float32 features, so we do too: predictions match them exactly.
"""

from __future__ import annotations

import json

import numpy as np


def _sklearn_tree(estimator) -> dict:
    t = estimator.tree_
    return {"left": t.children_left.tolist(), "right": t.children_right.tolist(),
            "feature": t.feature.tolist(), "threshold": t.threshold.tolist(),
            "value": t.value[:, 0, 0].tolist(), "rule": "le"}


def _xgb_trees(booster) -> tuple[list[dict], float]:
    model = json.loads(booster.save_raw(raw_format="json"))["learner"]
    base = model["learner_model_param"]["base_score"].strip("[]")
    trees = []
    for tree in model["gradient_booster"]["model"]["trees"]:
        left, right = tree["left_children"], tree["right_children"]
        # XGBoost stores a leaf's value in split_conditions; base_weights are the node means
        trees.append({"left": left, "right": right, "feature": tree["split_indices"],
                      "threshold": tree["split_conditions"], "value": tree["base_weights"],
                      "leaf": [c if l == -1 else None for l, c in zip(left, tree["split_conditions"])],
                      "rule": "lt"})
    return trees, float(base)


def ensemble_to_json(regressor) -> dict:
    """{"kind", "combine": mean|sum, "base_score", "trees"} for a fitted RF or XGBRegressor."""
    if hasattr(regressor, "estimators_"):
        return {"kind": "sklearn-forest", "combine": "mean", "base_score": 0.0,
                "trees": [_sklearn_tree(e) for e in regressor.estimators_]}
    trees, base = _xgb_trees(regressor.get_booster())
    return {"kind": "xgboost", "combine": "sum", "base_score": base, "trees": trees}


class TreeEnsemble:
    """Evaluates an `ensemble_to_json` document on float feature rows."""

    def __init__(self, document: dict):
        self.document = document
        self.trees = [{k: np.asarray(v) for k, v in t.items() if k not in ("rule", "leaf")}
                      | {"rule": t["rule"], "leaf": t.get("leaf")} for t in document["trees"]]

    def _paths(self, x: np.ndarray, tree: dict) -> list[int]:
        node, path = 0, [0]
        while tree["left"][node] != -1:
            value = x[tree["feature"][node]]
            go_left = value <= tree["threshold"][node] if tree["rule"] == "le" else \
                value < np.float32(tree["threshold"][node])
            node = int(tree["left"][node] if go_left else tree["right"][node])
            path.append(node)
        return path

    def _leaf_value(self, tree, node) -> float:
        return float(tree["leaf"][node] if tree["leaf"] is not None else tree["value"][node])

    def predict(self, X) -> np.ndarray:
        """Ensemble output per row (the regressor's own units)."""
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        out = np.empty(len(X))
        for i, x in enumerate(X):
            leaves = [self._leaf_value(t, self._paths(x, t)[-1]) for t in self.trees]
            out[i] = self._combine(leaves)
        return out + self.document["base_score"]

    def _combine(self, values) -> float:
        return float(np.mean(values) if self.document["combine"] == "mean" else np.sum(values))

    def contributions(self, x) -> tuple[float, np.ndarray]:
        """(bias, per-feature contributions) of one row along its decision paths (Saabas)."""
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        n_features = len(x)
        bias, parts = [], []
        for tree in self.trees:
            path = self._paths(x, tree)
            contrib = np.zeros(n_features)
            values = [float(tree["value"][n]) for n in path]
            if tree["leaf"] is not None:  # XGBoost: the leaf's weight ends the path
                values[-1] = self._leaf_value(tree, path[-1])
            for parent, child, before, after in zip(path, path[1:], values, values[1:]):
                contrib[tree["feature"][parent]] += after - before
            bias.append(values[0])
            parts.append(contrib)
        if self.document["combine"] == "mean":
            return float(np.mean(bias)) + self.document["base_score"], np.mean(parts, axis=0)
        return float(np.sum(bias)) + self.document["base_score"], np.sum(parts, axis=0)
