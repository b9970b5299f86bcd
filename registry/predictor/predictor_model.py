"""The registered `ptq-loss-predictor` as an MLflow pyfunc defined in code (nothing pickled).

Its artifacts: `predictor.json` (feature list, base column, conformal half-width and the trees as
arrays) and the estimator in its library's safe format (`estimator.skops` / `estimator.ubj`) for
anyone who wants the scikit-learn / XGBoost object. `predict` returns NLL after GPTQ (nats/token)
with the interval bounds, so `mlflow.pyfunc.load_model("models:/ptq-loss-predictor@champion")`
answers in the same units as the advisor.
"""

import json

import mlflow
import pandas as pd

from registry.predictor.spec import predict_from_spec
from registry.predictor.tree_json import TreeEnsemble


class LossPredictorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with open(context.artifacts["predictor"]) as f:
            self.spec = json.load(f)
        self.ensemble = TreeEnsemble(self.spec["ensemble"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_from_spec(self.spec, self.ensemble, pd.DataFrame(model_input))


mlflow.models.set_model(LossPredictorModel())
