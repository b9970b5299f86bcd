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

The formulas live in `registry/laws/formulas.py` (no MLflow: the advisor evaluates laws without
importing it), restated rather than imported from `registry.laws.fitting` so that answering needs
no scikit-learn; tests hold them equal to the fitting code's.
"""

import mlflow
import pandas as pd

from registry.laws.formulas import (  # noqa: F401
    DEFAULT_QID_KEY,
    predict_loss16,
    predict_qid,
    qid_law_key,
)


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
