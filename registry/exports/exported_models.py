"""Registering an exported model: a version of a registered model named after its base model.

The version carries what the release gate judges: format, method, bytes, measured (and, when the
registry could predict it, predicted) NLL, and the registry versions behind the prediction.
"""

from __future__ import annotations

import re
from pathlib import Path

from store.experiments import experiment_id
from store.short_runs import owner_tags

EXPORT_EXPERIMENT = "ptq-exports"
PIP_REQUIREMENTS = ["mlflow==3.17.2", "onnxruntime==1.32.0", "optimum==2.1.0", "optimum-onnx==0.1.0",
                    "transformers==4.57.6", "pandas==3.1.1"]
_CODE = str(Path(__file__).with_name("onnx_model.py"))


def registered_name(model_spec: str) -> str:
    """A registry name for a base model: its folder / file / hub name, lower-case, safe characters."""
    name = Path(model_spec.rstrip("/")).name if "/" not in model_spec or Path(model_spec).exists() \
        else model_spec.split("/")[-1]
    name = re.sub(r"\.gguf$", "", name, flags=re.I)
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "model"


def register_export(record: dict, folder: str | Path, name: str | None = None, client=None):
    """Log the export folder as a pyfunc, register it as a version of `name`; the ModelVersion."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    client = client or mlflow.MlflowClient()
    name = name or registered_name(record["model"])
    exported_in = experiment_id(client, EXPORT_EXPERIMENT, "Low-bit ONNX exports: one run per export, "
                                "its quantization.json and the registered version it became.")
    signature = ModelSignature(inputs=Schema([ColSpec("string", "prompt")]),
                               outputs=Schema([ColSpec("string", "text")]),
                               params=ParamSchema([ParamSpec("max_new_tokens", "long", 32)]))
    run_name = f"{name} · {record['format']} · {record['method']} · onnx"
    with mlflow.start_run(experiment_id=exported_in, run_name=run_name,
                          tags={"ptq.kind": "export", **owner_tags()}) as run:
        mlflow.log_params({k: record[k] for k in ("model", "format", "method", "bits_per_weight",
                                                   "quantized_params")})
        mlflow.log_metrics({k: float(record[k]) for k in ("nll_fp", "nll_torch", "nll_onnx", "bpb_onnx", "sqnr_db",
                                                           "onnx_quantized_bytes", "onnx_file_bytes",
                                                           "measured_peak_bytes", "estimated_runtime_bytes",
                                                           "logits_max_abs_diff") if record.get(k) is not None})
        mlflow.log_dict(record, "quantization.json")
        info = mlflow.pyfunc.log_model(name="model", python_model=_CODE, artifacts={"onnx_dir": str(folder)},
                                       signature=signature, pip_requirements=PIP_REQUIREMENTS)
    version = mlflow.register_model(info.model_uri, name, tags={
        "format": record["format"], "method": record["method"], "bytes": str(record["onnx_file_bytes"]),
        "quantized_bytes": str(record["onnx_quantized_bytes"]), "nll_measured": f"{record['nll_onnx']:.6f}",
        "nll_predicted": "" if record.get("nll_predicted") is None else f"{record['nll_predicted']:.6f}",
        "nll_fp": f"{record['nll_fp']:.6f}", "sqnr_db": f"{record['sqnr_db']:.4f}",
        "dataset": record["calibration"]["dataset"], "seq_len": str(record["evaluation"]["seq_len"]),
        "eval_windows": str(record["evaluation"]["windows"]),
        "dataset_digest": record["calibration"]["dataset_digest"], "export_run": run.info.run_id,
        **runtime_tags(record)})
    client.update_model_version(name, version.version, description=(
        f"{record['model']} in {record['format']} by {record['method']}, ONNX with low-bit weights: "
        f"NLL {record['nll_onnx']:.4f} nats/token measured with onnxruntime, "
        f"{record['onnx_quantized_bytes']:,} bytes of quantized weights."))
    return client.get_model_version(name, version.version)


def runtime_tags(record: dict) -> dict:
    """The export's run-time memory as version tags (what `advisor gate --max-memory` judges); none for
    an export made before the runtime peak was measured."""
    runtime = record.get("runtime")
    if not runtime or record.get("measured_peak_bytes") is None:
        return {}
    return {"measured_peak_bytes": str(record["measured_peak_bytes"]),
            "estimated_runtime_bytes": str(record["estimated_runtime_bytes"]), "runtime": runtime["name"],
            "runtime_context": str(runtime["context"]), "runtime_batch": str(runtime["batch"])}
