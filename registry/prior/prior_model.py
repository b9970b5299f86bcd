"""The registered `ptq-prior` as an MLflow pyfunc defined in code (nothing pickled).

Its artifact `prior.json` holds the fitted model as JSON (linear coefficients or trees as arrays),
the conformal half-widths and the per-format SQNR table. `predict` takes rows with the prior's
frame columns (registry/prior/features.py FRAME_COLUMNS) and returns ΔNLL (nats/token) with the
interval bounds, so `mlflow.pyfunc.load_model("models:/ptq-prior@champion")` answers in the same
units as the advisor.
"""

import json

import mlflow
import pandas as pd

from registry.prior.spec import PRIOR, LoadedPrior


class PriorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with open(context.artifacts["prior"]) as f:
            self.prior = LoadedPrior(PRIOR, "local", json.load(f))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.prior.predict(pd.DataFrame(model_input)).drop(columns="unknown_d")


mlflow.models.set_model(PriorModel())
