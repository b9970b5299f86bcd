"""Options and parsers that several commands share, declared once so their spelling and help agree."""

from __future__ import annotations

import os
from pathlib import Path

import click

from advisor.errors import AdvisorError
from pipelines.export.runtime_memory import NOT_MEASURED, RUNTIMES
from pipelines.sweep.config import METHODS
from store.errors import InputError
from store.keys import use_store
from store.short_runs import close_abandoned
from store.tracking_server import TrackingError, check_tracking_server
from store.uri import check_store, prepare_store

TRACKING_HELP = "MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db]."
DATASET_HELP = "Text file, folder, or hub id[:config] [default: Salesforce/wikitext:wikitext-2-raw-v1]."

tracking_uri_option = click.option("--tracking-uri", default=None, help=TRACKING_HELP)


def dataset_option(help_text: str = DATASET_HELP):
    return click.option("--dataset", default=None, help=help_text)


def _methods(ctx, param, value: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in value.split(",") if m.strip())
    if not chosen or set(chosen) - set(METHODS):
        raise AdvisorError(f"--methods takes rtn, gptq or both (comma-separated), not {value!r}")
    return chosen


methods_option = click.option("--methods", default="rtn,gptq", show_default=True, callback=_methods,
                              help="rtn, gptq or both.")


def _runtime(ctx, param, value: str) -> str:
    if value in NOT_MEASURED:
        raise AdvisorError(f"--runtime {value}: {NOT_MEASURED[value]}, so its memory model has no measured "
                           "constants yet; use onnxruntime-cpu")
    return value


def memory_plan_options(command):
    """--context, --batch and --runtime: how a candidate's run-time memory is sized (recommend, pareto)."""
    for option in reversed((
            click.option("--context", type=click.IntRange(1), default=None,
                         help="Tokens per sequence the runtime must hold (a prompt of context − 1 tokens, then a "
                              "step) [default: 4096, or the model's context if shorter]; models with a shorter "
                              "context are skipped when given."),
            click.option("--batch", type=click.IntRange(1), default=1, show_default=True,
                         help="Sequences run together."),
            click.option("--runtime", type=click.Choice(RUNTIMES), default=RUNTIMES[0], show_default=True,
                         callback=_runtime,
                         help="Runtime whose peak memory is charged (the product's ONNX export on onnxruntime's "
                              "CPU provider is measured; PyTorch on CUDA is not yet)."))):
        command = option(command)
    return command


def _device(ctx, param, value: str) -> str:
    from pipelines.measure.device import resolve_device

    try:
        return resolve_device(value)
    except InputError as err:
        raise AdvisorError(str(err)) from None


def device_option(command):
    """--device: where weights, random directions, Hessians and evaluation live (measure, sweep, ...)."""
    return click.option("--device", default="auto", show_default=True, callback=_device,
                        help="auto (CUDA when present), cpu, cuda or cuda:N: where the model, its Hessians, "
                             "random directions and evaluation live.")(command)


def eval_dtype_option(command):
    """--eval-dtype: the forward passes' dtype for NLL evaluations, checked against float32."""
    return click.option("--eval-dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
                        default="auto", show_default=True,
                        help="Dtype of the NLL evaluations' forward passes (autocast): auto is bfloat16 on a GPU, "
                             "float32 on the CPU. A 16-bit evaluation is checked against float32 on its first "
                             "windows and redone in float32 when they differ by over 0.002 nats/token; "
                             "quantization, GPTQ and the landscape always compute in float32.")(command)


def writable_file(ctx, param, value):
    """Click callback: fail before any work when an output file cannot be written (a missing folder,
    a folder given as the file, no rights), so nothing is computed for a result that would be lost."""
    if value is None:
        return value
    name = param.opts[0] if param is not None else "output"
    target = Path(value)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise AdvisorError(f"{name} {value} is a folder: give a file name")
    if not folder.is_dir():
        raise AdvisorError(f"{name} {value}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise AdvisorError(f"{name} {value} is not writable")
    return value


def damping(value: str) -> float | None:
    """--damp: 'search' (per-layer grid, Xu et al.) or a fraction of mean(diag H)."""
    if value == "search":
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'search' nor a number") from None


def open_store(tracking_uri):
    """The MLflow client of `tracking_uri` (or the default store), checked to answer and made ready."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # the CLI reports what matters itself
    explicit = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        check_store(explicit)  # before MLflow touches it: it would create a misspelt folder
    if tracking_uri:
        use_store(tracking_uri)
    uri = mlflow.get_tracking_uri()
    try:
        check_tracking_server(uri)
    except TrackingError as err:
        raise AdvisorError(str(err)) from None
    prepare_store(uri)
    client = mlflow.MlflowClient()
    close_abandoned(client)  # a fit, seed, gate or recommendation killed mid-run stays RUNNING otherwise
    return client
