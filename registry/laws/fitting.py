"""The scaling laws of Ouyang et al. 2024, "Low-Bit Quantization Favors Undertrained LLMs".

QiD law (Eq. 8, Fig. 6): ΔqLoss(N, D, P) = k·D^β / (N^α·P^γ), the loss a PTQ method adds
(nats/token) to a model of N parameters trained on D tokens, quantized to P bits.
16-bit law (Eq. 3, Fig. 7): L(N, D) = [(Nc/N)^(αN/αD) + Dc/D]^αD (nats/token).

Both are fitted by least squares on log(y): the targets span decades and their errors are
multiplicative, so every row should weigh the same whatever its size. Intervals are percentile
bootstraps over rows. The fitters are scikit-learn estimators (clone, grid search, pipelines).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from registry.laws.published import (  # noqa: F401
    PUBLISHED_LOSS16,
    PUBLISHED_QID,
    PUBLISHED_SOURCE,
    published_loss16_law,
    published_qid_law,
)
from store.errors import InputError


def qid_delta(N, D, P, k, alpha, beta, gamma):
    """Quantization-induced degradation ΔqLoss = k·D^β/(N^α·P^γ).

    N parameters, D training tokens, P bits per weight → nats/token.
    """
    N, D, P = (np.asarray(v, dtype=np.float64) for v in (N, D, P))
    return k * D**beta / (N**alpha * P**gamma)


def loss16(N, D, Nc, Dc, alpha_N, alpha_D):
    """16-bit loss [(Nc/N)^(αN/αD) + Dc/D]^αD.

    N parameters, D training tokens → nats/token.
    """
    N, D = (np.asarray(v, dtype=np.float64) for v in (N, D))
    return ((Nc / N) ** (alpha_N / alpha_D) + Dc / D) ** alpha_D


def _columns(X, names: tuple[str, ...]) -> np.ndarray:
    if hasattr(X, "columns"):
        missing = [c for c in names if c not in X.columns]
        if missing:
            raise ValueError(f"X lacks columns {missing}: expected {list(names)}")
        X = X[list(names)]
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X must have {len(names)} columns {list(names)}, got shape {X.shape}")
    if not np.all(np.isfinite(X)) or np.any(X <= 0):
        raise ValueError(f"{', '.join(names)} must be finite and > 0 (they enter as logarithms)")
    return X


class _LogSpaceLawFit(RegressorMixin, BaseEstimator):
    """Shared fitting: least squares on log(y), bootstrap intervals; subclasses give the law.

    Learned: params_ (dict), intervals_ (name → (lo, hi), 95% percentile bootstrap over rows; {}
    when n_bootstrap=0), n_rows_ (rows fitted), n_dropped_ (rows with y ≤ 0, not fitted) and
    rmse_log_ (RMS residual of log y, about the relative error).
    """

    COLUMNS: tuple[str, ...] = ()
    PARAMS: tuple[str, ...] = ()
    TARGET = "y"

    def __init__(self, n_bootstrap: int = 200, seed: int = 0):
        self.n_bootstrap = n_bootstrap
        self.seed = seed

    # Subclasses: starting points (first is the published law), bounds, log-model, θ ↔ params.
    def _starts(self) -> list[np.ndarray]:
        raise NotImplementedError

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _log_predict(self, theta, logX) -> np.ndarray:
        raise NotImplementedError

    def _to_params(self, theta) -> dict:
        raise NotImplementedError

    def _check_identifiable(self, logX) -> None:
        pass

    def _solve(self, logX, logy, starts) -> np.ndarray:
        from scipy.optimize import least_squares

        lo, hi = self._bounds()
        best = None
        for start in starts:
            result = least_squares(lambda t: self._log_predict(t, logX) - logy, np.clip(start, lo, hi),
                                   bounds=(lo, hi), x_scale="jac", method="trf")
            if best is None or result.cost < best.cost:
                best = result
        return best.x

    def fit(self, X, y):
        """Fit on rows X (columns COLUMNS) and positive targets y (nats/token); returns self."""
        X = _columns(X, self.COLUMNS)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{self.TARGET} has NaN or infinite values: drop those rows first")
        keep = y > 0
        self.n_dropped_ = int((~keep).sum())  # ≤ 0 has no logarithm: counted, not fitted
        if keep.sum() < 5:
            raise InputError(f"{int(keep.sum())} rows with {self.TARGET} > 0 (of {len(y)}; "
                             f"{self.n_dropped_} ≤ 0 dropped): a fit in log space needs at least 5")
        logX, logy = np.log(X[keep]), np.log(y[keep])
        self._check_identifiable(logX)
        theta = self._solve(logX, logy, self._starts())
        self.params_ = self._to_params(theta)
        self.n_rows_ = int(keep.sum())
        self.rmse_log_ = float(np.sqrt(np.mean((self._log_predict(theta, logX) - logy) ** 2)))
        self.intervals_ = self._bootstrap(logX, logy, theta)
        return self

    def _bootstrap(self, logX, logy, theta) -> dict:
        rng = np.random.default_rng(self.seed)
        draws = []
        for _ in range(self.n_bootstrap):
            rows = rng.integers(0, len(logy), len(logy))
            draws.append(self._to_params(self._solve(logX[rows], logy[rows], [theta])))
        if not draws:  # n_bootstrap=0: no intervals rather than zero-width ones
            return {}
        return {name: tuple(float(q) for q in np.percentile([d[name] for d in draws], [2.5, 97.5]))
                for name in self.PARAMS}

    def as_law(self, source: str) -> dict:
        """The fit as a JSON-able law entry: parameters, 95% intervals, rows fitted/dropped, source."""
        return {**self.params_, "intervals": {k: list(v) for k, v in self.intervals_.items()},
                "n_rows": self.n_rows_, "n_dropped": self.n_dropped_, "rmse_log": self.rmse_log_,
                "source": source}


class QiDLawFit(_LogSpaceLawFit):
    """Fits ΔqLoss(N, D, P) = k·D^β/(N^α·P^γ) (nats/token) from columns N, D, P.

    A column with a single value (e.g. every model trained on the same D) leaves its exponent
    undetermined: it is held at the published value and listed in `fixed_`, so k absorbs the rest.
    """

    COLUMNS = ("N", "D", "P")
    PARAMS = ("k", "alpha", "beta", "gamma")
    TARGET = "ΔqLoss"
    _EXPONENT_OF = {"N": "alpha", "D": "beta", "P": "gamma"}

    def _check_identifiable(self, logX) -> None:
        varies = [np.ptp(logX[:, j]) > 1e-9 for j in range(3)]
        self.fixed_ = tuple(self._EXPONENT_OF[c] for c, v in zip(self.COLUMNS, varies) if not v)
        design = np.column_stack([np.ones(len(logX))] + [logX[:, j] for j in range(3) if varies[j]])
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise InputError("log N, log D and log P are collinear in these rows (e.g. D proportional "
                             "to N): their exponents cannot be told apart; add rows that vary them "
                             "independently")

    def _theta0(self) -> np.ndarray:
        p = PUBLISHED_QID
        return np.array([np.log(p["k"]), p["alpha"], p["beta"], p["gamma"]])

    def _starts(self):
        return [self._theta0()]

    def _bounds(self):
        # Wide enough for any plausible PTQ method; the bounds only keep a bad start from running
        # off. A fixed exponent gets a 1e-9 slot around the published value (scipy rejects lo == hi).
        lo, hi = np.array([-60.0, -2.0, -2.0, -5.0]), np.array([60.0, 3.0, 3.0, 20.0])
        theta0 = self._theta0()
        for name in self.fixed_:
            j = self.PARAMS.index(name)
            lo[j], hi[j] = theta0[j] - 1e-9, theta0[j] + 1e-9
        return lo, hi

    def _log_predict(self, theta, logX):
        logk, alpha, beta, gamma = theta
        return logk + beta * logX[:, 1] - alpha * logX[:, 0] - gamma * logX[:, 2]

    def _to_params(self, theta) -> dict:
        params = dict(zip(self.PARAMS, map(float, theta)))
        params["k"] = float(np.exp(theta[0]))
        for name in self.fixed_:  # exactly the published value, not within the 1e-9 slot
            params[name] = PUBLISHED_QID[name]
        return params

    def predict(self, X) -> np.ndarray:
        """ΔqLoss (nats/token) for rows X with columns N, D, P."""
        N, D, P = _columns(X, self.COLUMNS).T
        return qid_delta(N, D, P, **self.params_)

    def as_law(self, source: str) -> dict:
        return {**super().as_law(source), "fixed": list(self.fixed_)}


class Loss16LawFit(_LogSpaceLawFit):
    """Fits the 16-bit loss [(Nc/N)^(αN/αD) + Dc/D]^αD (nats/token) from columns N, D.

    Internally θ = (a, r, log Dc, αD) with r = αN/αD and a = r·log Nc: the published Nc (4.7e19)
    and αN (0.045) trade off against each other almost exactly, while a and r are well determined.
    """

    COLUMNS = ("N", "D")
    PARAMS = ("Nc", "Dc", "alpha_N", "alpha_D")
    TARGET = "loss"

    def _check_identifiable(self, logX) -> None:
        if min(len(np.unique(np.round(logX[:, j], 9))) for j in range(2)) < 2:
            raise InputError("the 16-bit law needs models of at least 2 sizes N and 2 training "
                             "lengths D to separate its two terms")

    def _starts(self):
        p = PUBLISHED_LOSS16
        r = p["alpha_N"] / p["alpha_D"]
        published = np.array([r * np.log(p["Nc"]), r, np.log(p["Dc"]), p["alpha_D"]])
        # Small or odd models sit far from Pythia: also start from flatter and steeper laws.
        return [published] + [published * [1, 1, 1, s] for s in (0.5, 2.0)]

    def _bounds(self):
        return np.array([-50.0, 1e-4, -50.0, 1e-3]), np.array([200.0, 5.0, 200.0, 3.0])

    def _log_predict(self, theta, logX):
        a, r, log_dc, alpha_d = theta
        return alpha_d * np.logaddexp(a - r * logX[:, 0], log_dc - logX[:, 1])

    def _to_params(self, theta) -> dict:
        a, r, log_dc, alpha_d = map(float, theta)
        return {"Nc": float(np.exp(a / r)), "Dc": float(np.exp(log_dc)), "alpha_N": r * alpha_d,
                "alpha_D": alpha_d}

    def predict(self, X) -> np.ndarray:
        """16-bit loss (nats/token) for rows X with columns N, D."""
        N, D = _columns(X, self.COLUMNS).T
        return loss16(N, D, **self.params_)


def fit_qid_from_table(df, by=("method", "family"), n_bootstrap: int = 200, seed: int = 0) -> dict:
    """QiD law entries keyed "<method>/<family>" from a table of N, D, P, delta_nll (nats/token).

    A group that cannot be fitted (too few positive rows, collinear inputs) is skipped with a
    warning saying why; a table with no fittable group raises ValueError.
    """
    missing = [c for c in ("N", "D", "P", "delta_nll", *by) if c not in df.columns]
    if missing:
        raise ValueError(f"the QiD table lacks columns {missing}")
    fits, reasons = {}, {}
    for values, rows in df.groupby(list(by), sort=True):
        key = "/".join(map(str, values))
        try:
            law = QiDLawFit(n_bootstrap=n_bootstrap, seed=seed).fit(rows[["N", "D", "P"]], rows["delta_nll"])
        except ValueError as err:
            reasons[key] = str(err)
            warnings.warn(f"QiD law {key!r} not fitted: {err}", stacklevel=2)
            continue
        held = f"; {', '.join(law.fixed_)} held at the published value" if law.fixed_ else ""
        fits[key] = law.as_law(f"least squares in log space on {law.n_rows_} rows "
                               f"({law.n_dropped_} with ΔNLL ≤ 0 dropped), {n_bootstrap} bootstraps{held}")
    if not fits:
        raise InputError(f"no QiD law could be fitted: {reasons}")
    return fits
