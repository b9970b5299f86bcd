"""A `ptq-candidate-catalog` version as an MLflow pyfunc defined in code: nothing is pickled.

The entries live in the artifact `catalog.json` ({"source", "content_digest", "entries":
[CatalogEntry.to_dict(), ...]}); the model config only repeats source, digest and entry count,
because MLflow also logs the model config as run params. `predict` returns one row
per entry — all of them, or those named in an optional `name` column — with the measured fp loss
as `nll_fp` (nats/token), `bpb_fp` (bits/byte), `fp_dataset`, `fp_dataset_digest`, `fp_run_id`, and
`sources`, `aliases`, `extras` as JSON text.

The row layout is restated here rather than imported from `registry.catalog.entries`, so a version loads
wherever MLflow and pandas do; a test holds it equal to `Catalog.table()`.
"""

import json

import mlflow
import pandas as pd


def _row(entry: dict) -> dict:
    row = {k: v for k, v in entry.items() if k not in ("measured_fp", "sources", "aliases", "extras")}
    measured = entry.get("measured_fp") or {}
    row.update({"nll_fp": measured.get("nll"), "bpb_fp": measured.get("bpb"),
                "fp_dataset": measured.get("dataset"), "fp_dataset_digest": measured.get("dataset_digest"),
                "fp_run_id": measured.get("run_id")})
    row.update({k: json.dumps(entry.get(k) or {}, sort_keys=True) for k in ("sources", "aliases", "extras")})
    return row


class CatalogModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with open(context.artifacts["catalog"], encoding="utf-8") as f:
            entries = json.load(f).get("entries")
        if not entries:
            raise ValueError("this catalog version's catalog.json holds no entries")
        self.table = pd.DataFrame([_row(e) for e in entries])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        if "name" not in frame.columns or frame.empty:
            return self.table.copy()
        wanted = [str(n) for n in frame["name"]]
        unknown = sorted(set(wanted) - set(self.table["name"]))
        if unknown:
            raise ValueError(f"not in this catalog: {unknown}")
        return self.table.set_index("name").loc[wanted].reset_index()[self.table.columns]


mlflow.models.set_model(CatalogModel())
