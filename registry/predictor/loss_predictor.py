"""The loss predictor of Xu et al. (§3, App. D): NLL after GPTQ from cheap RTN-time features.

`LossPredictor` is a scikit-learn estimator: a random forest (120 trees, depth 8, as in the
paper) or XGBoost, fitted on the target *relative to a base* — the paper's absolute NLL_gptq, or
NLL_gptq − NLL_fp, or NLL_gptq − NLL_rtn, or the fraction of RTN's loss increase that GPTQ leaves,
(NLL_gptq − NLL_fp) / (NLL_rtn − NLL_fp) — and always predicting NLL_gptq in nats/token, so every
recipe is compared on the same scale. Trees cannot extrapolate; a relative target lets a model
whose loss lies outside the training range still get a sensible prediction, and the fraction lets
it scale with the model's own measured RTN damage (docs/real-model-study.md).

`share_from_bits` answers the formats of that many bits or more without the trees: NLL_fp plus the
training rows' median share of RTN's loss increase that GPTQ leaves in the row's band of bits
(≤ 2, 3, ≥ 4, as the intervals), times the row's own increase. On held-out real-model families
one number per band scaled by the model's own RTN damage errs about half as much at 3 bits and
more as the forest, which learns the training families' levels of loss (docs/real-model-study.md);
at 2 bits, where the networks break, the forest does better.

Intervals are split-conformal from leave-one-family-out residuals, per band of bits
(registry/conformal.py): the half-width is the ⌈(n+1)(1−α)⌉-th smallest |residual| of the band's
rows predicted while their family was held out, so it reflects how wrong the predictor is on
*unseen model families*, which is how the advisor uses it.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from registry.conformal import INTERVAL_BANDS, precision_bands
from registry.predictor.feature_table import FEATURES
from registry.predictor.spec import spec_scale, spec_share
from store.errors import InputError

# base → the column added back to the trees' output, and (rtn_fraction) the column whose excess over
# it scales that output
BASES = {"none": None, "nll_fp": "nll_fp", "nll_rtn": "nll_rtn", "rtn_fraction": "nll_fp"}
SCALES = {"rtn_fraction": "nll_rtn"}
# nats/token: below this RTN loss increase (8-bit formats lose ~0.001) the fraction is noise over
# noise; the prediction's increase is then at most a fraction of the floor
GAP_FLOOR = 0.005


def _features(X) -> np.ndarray:
    return np.asarray(X[list(FEATURES)], dtype=np.float64)


def _base(X, base: str) -> np.ndarray:
    column = BASES[base]
    return np.zeros(len(X)) if column is None else np.asarray(X[column], dtype=np.float64)


def _scale(X, base: str) -> np.ndarray:
    # the formula the registered spec is served with, so fitting and serving cannot drift apart
    return spec_scale({"base_column": BASES[base], "scale_column": SCALES.get(base), "scale_floor": GAP_FLOOR}, X)


class LossPredictor(RegressorMixin, BaseEstimator):
    """Predicts NLL after GPTQ (nats/token) from a DataFrame with the FEATURES columns."""

    def __init__(self, kind: str = "rf", base: str = "nll_fp", n_estimators: int = 120,
                 max_depth: int = 8, learning_rate: float = 0.1, seed: int = 0,
                 share_from_bits: float | None = None):
        self.kind = kind
        self.base = base
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.seed = seed
        self.share_from_bits = share_from_bits

    def _regressor(self):
        if self.kind == "rf":
            from sklearn.ensemble import RandomForestRegressor

            return RandomForestRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                         random_state=self.seed, n_jobs=1)
        if self.kind == "xgb":
            from xgboost import XGBRegressor

            return XGBRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                learning_rate=self.learning_rate, random_state=self.seed,
                                n_jobs=1, tree_method="exact")
        raise InputError(f"kind must be 'rf' or 'xgb', not {self.kind!r}")

    def fit(self, X, y):
        """Fit on a DataFrame X (FEATURES + base column) and NLL_gptq y (nats/token)."""
        if self.base not in BASES:
            raise InputError(f"base must be one of {sorted(BASES)}, not {self.base!r}")
        y = np.asarray(y, dtype=np.float64)
        if len(y) < 2 or not np.isfinite(y).all():
            raise InputError("the loss predictor needs at least 2 rows with a finite NLL after GPTQ")
        self.regressor_ = self._regressor().fit(_features(X), (y - _base(X, self.base)) / _scale(X, self.base))
        self.n_features_in_ = len(FEATURES)
        self.share_ = None
        if self.share_from_bits is not None:
            precision = np.asarray(X["precision"], dtype=np.float64)
            share = (y - _base(X, "rtn_fraction")) / _scale(X, "rtn_fraction")
            bands = precision_bands(precision, INTERVAL_BANDS)
            rows = precision >= self.share_from_bits
            # a band without training rows at those bits has no share: the trees answer its rows
            self.share_ = {band: float(np.median(share[rows & (bands == band)]))
                           for band in INTERVAL_BANDS.split(",") if (rows & (bands == band)).any()} or None
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted NLL after GPTQ, nats/token."""
        point = self.regressor_.predict(_features(X)) * _scale(X, self.base) + _base(X, self.base)
        return spec_share({"share": self.share_spec()}, X, point)

    def share_spec(self) -> dict | None:
        """How rows at share_from_bits or more are answered (None: by the trees), as the spec serves it."""
        if self.share_from_bits is None or getattr(self, "share_", None) is None:
            return None
        return {"from_bits": float(self.share_from_bits), "values": self.share_, "bands": INTERVAL_BANDS,
                "base_column": BASES["rtn_fraction"], "scale_column": SCALES["rtn_fraction"], "floor": GAP_FLOOR}

    def describe(self) -> str:
        """The recipe in a few words: 'rf, base nll_fp', '…, share from 3 bits'."""
        share = "" if self.share_from_bits is None else f", share from {self.share_from_bits:g} bits"
        return f"{self.kind}, base {self.base}{share}"

    def recipe(self) -> dict:
        """The parameters that define this predictor (what promotion compares), JSON-able."""
        return self.get_params()
