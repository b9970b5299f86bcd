"""The QiD and 16-bit law formulas as the advisor evaluates them (numpy and pandas, no MLflow).

QiD: ΔqLoss(N, D, P) = k·D^β/(N^α·P^γ); 16-bit: L(N, D) = [(Nc/N)^(αN/αD) + Dc/D]^αD (nats/token).
"""

import numpy as np
import pandas as pd

from store.errors import InputError

DEFAULT_QID_KEY = "gptq/int"


def qid_law_key(fits: dict, method, family) -> str:
    """The fit that answers for (method, family): exact, same method's largest fit, then gptq/int."""
    exact = f"{method}/{family}"
    if exact in fits:
        return exact
    same_method = [key for key in fits if key.split("/", 1)[0] == str(method)]
    if same_method:
        return max(same_method, key=lambda key: (fits[key].get("n_rows") or 0, key))
    if DEFAULT_QID_KEY in fits:
        return DEFAULT_QID_KEY
    raise InputError(f"no QiD law for {exact!r} and no {DEFAULT_QID_KEY!r} fallback; "
                     f"this version holds {sorted(fits)}")


def _numbers(frame: pd.DataFrame, names) -> list[np.ndarray]:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"the law needs columns {list(names)}; missing {missing}")
    return [frame[c].to_numpy(np.float64) for c in names]


def predict_qid(fits: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """delta_nll (nats/token) and law_key per row of N, D, P[, method, family]."""
    N, D, P = _numbers(frame, ("N", "D", "P"))
    methods = frame["method"] if "method" in frame.columns else pd.Series([None] * len(frame))
    families = frame["family"] if "family" in frame.columns else pd.Series([None] * len(frame))
    keys = [qid_law_key(fits, m, f) for m, f in zip(methods, families)]
    law = {name: np.array([fits[key][name] for key in keys], dtype=np.float64)
           for name in ("k", "alpha", "beta", "gamma")}
    delta = law["k"] * D ** law["beta"] / (N ** law["alpha"] * P ** law["gamma"])
    return pd.DataFrame({"delta_nll": delta, "law_key": keys}, index=frame.index)


def predict_loss16(law: dict, frame: pd.DataFrame) -> pd.DataFrame:
    """loss16 (nats/token) per row of N, D."""
    N, D = _numbers(frame, ("N", "D"))
    a_n, a_d = law["alpha_N"], law["alpha_D"]
    loss = ((law["Nc"] / N) ** (a_n / a_d) + law["Dc"] / D) ** a_d
    return pd.DataFrame({"loss16": loss}, index=frame.index)
