"""Options and parsers that several commands share, declared once so their spelling and help agree."""

from __future__ import annotations

import os

import click

from advisor.errors import AdvisorError
from pipelines.sweep.config import METHODS
from store.keys import use_store
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
    return mlflow.MlflowClient()
