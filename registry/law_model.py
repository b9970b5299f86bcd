"""`qid-law` and `loss16-law` versions as an MLflow pyfunc defined in code: nothing is pickled.

The parameters are the model config (`model_config=` at logging, `context.model_config` here):
- {"kind": "qid-law", "fits": {"<method>/<family>": {k, alpha, beta, gamma, intervals, n_rows,
  source}, ...}}. `predict` takes N (parameters), D (training tokens), P (bits per weight), method,
  family and returns `delta_nll` (ΔqLoss, nats/token) with `law_key`, the fit that answered. When
  "<method>/<family>" has no fit the row falls back to the same method's fit with the most rows
  (another family), then to "gptq/int" (the published Pythia/GPTQ law). Absent method or family
  columns count as unknown.
- {"kind": "loss16-law", "law": {Nc, Dc, alpha_N, alpha_D, intervals, n_rows, source}}. `predict`
  takes N, D and returns `loss16` (nats/token).

The two formulas are restated here rather than imported from `registry.scaling_laws`, so a version
loads wherever MLflow, numpy and pandas do; tests hold them equal to the fitting code's.
"""

import mlflow
import numpy as np
import pandas as pd

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
    raise ValueError(f"no QiD law for {exact!r} and no {DEFAULT_QID_KEY!r} fallback; "
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


class LawModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.config = dict(context.model_config or {})
        if self.config.get("kind") not in ("qid-law", "loss16-law"):
            raise ValueError(f"law config kind {self.config.get('kind')!r}: expected qid-law or loss16-law")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        if self.config["kind"] == "qid-law":
            return predict_qid(self.config["fits"], frame)
        return predict_loss16(self.config["law"], frame)


mlflow.models.set_model(LawModel())
