"""The sweep: every (model, format, method) variant measured and logged as an MLflow run.

Run tree (one experiment per sweep name):
  parent run per base model  "<model>"                 params: source, dataset, settings;
                                                      metrics: NLL_fp, bits/byte, D, params
    child run                "<model> · fp + landscape" the claim on measuring those once (timings)
    child run per variant    "<model> · <fmt> · rtn"   params: P/E/M/K/family/method;
                                                      metrics: NLL, ΔNLL, SQNR, slope, bytes, s
                             "<model> · <fmt> · gptq"  the same after GPTQ
Every run carries `ptq.variant_key`; a FINISHED run with the same key is reused, anything else is
redone, so a sweep killed at any moment and started again ends with exactly one FINISHED run per
variant. A variant that raises is logged FAILED with its error and the sweep goes on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines.measure.features import evaluation_record
from pipelines.measure.nll import evaluate_nll
from pipelines.quantize.rtn import count_params
from pipelines.sources.architecture import architecture, non_embedding_params
from pipelines.sources.model_set import ModelEntry
from pipelines.sweep.config import SweepConfig
from pipelines.sweep.machine import run_tags
from pipelines.sweep.measuring_code import core_code_version
from pipelines.sweep.model_context import ModelContext
from pipelines.sweep.plots import log_landscape, log_variant_plots
from store.faults import fault_point
from store.keys import KEY_TAG, KIND_TAG, runs_with_key, variant_key
from store.run_claims import Waiting, claimed_run, settle, wait_for
from store.run_claims import order as _order

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

def _log_dataset(mlflow, corpus) -> None:
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException

    source = corpus.spec if corpus.source == "hub" else Path(corpus.spec).resolve().as_uri()
    dataset = MetaDataset(HTTPDatasetSource(source), name=Path(corpus.spec).name, digest=corpus.digest[:16])
    try:
        mlflow.log_input(dataset, context="evaluation")
    except MlflowException as err:
        # two workers registering the same dataset at once: the loser finds it there and links it
        if "UNIQUE constraint" not in str(err):
            raise
        mlflow.log_input(dataset, context="evaluation")


def open_model_run(mlflow, client, experiment_id, ctx: ModelContext, say, root_run_id: str | None = None):
    """Start (or resume) the model's parent run and make sure it holds the fp loss and the
    landscape profile; the active run. The caller ends it. `ctx.fp` stays None if that failed."""

    config, entry, spec = ctx.config, ctx.entry, ctx.entry.spec
    previous = runs_with_key(client, experiment_id, ctx.model_key)
    parent_id = previous[0].info.run_id if previous else None
    parent = mlflow.start_run(run_id=parent_id, run_name=None if parent_id else ctx.name,
                              tags=None if parent_id else {KEY_TAG: ctx.model_key, KIND_TAG: "model"},
                              parent_run_id=None if parent_id else root_run_id,
                              description=f"Base model {spec}: fp loss, and one child run per quantized "
                              f"variant (format x method) measured on {ctx.corpus.spec}.")
    parent_id = parent.info.run_id
    if not previous:
        # two sweeps starting this model at once each created a parent: all keep the earliest
        first = min(runs_with_key(client, experiment_id, ctx.model_key), key=_order)
        if first.info.run_id != parent_id:
            mlflow.end_run(status="KILLED")
            client.delete_run(parent_id)
            parent, previous = mlflow.start_run(run_id=first.info.run_id), [first]
            parent_id = first.info.run_id
    fault_point("sweep.parent_created")
    # a parent made by a sweep killed before its params or dataset were logged is completed here
    made = client.get_run(parent_id)
    if "model" not in made.data.params:
        mlflow.log_params({"model": spec, "model_kind": ctx.source.kind, "model_fingerprint": ctx.source.fingerprint,
                           "gguf_file": ctx.source.gguf_file, "revision": ctx.source.revision,
                           "family": entry.family, "train_tokens": entry.train_tokens,
                           "dataset": ctx.corpus.spec, "dataset_digest": ctx.corpus.digest,
                           "seq_len": ctx.seq_len, "windows": len(ctx.windows.input_ids),
                           "bos": ctx.windows.bos, "code_version": core_code_version(),
                           **{f"arch.{k}": v for k, v in architecture(ctx.model).items()},
                           **{f"setting.{k}": v for k, v in config.result_settings().items()}})
    if not made.inputs.dataset_inputs:
        _log_dataset(mlflow, ctx.corpus)
    if not _setup_done(client, parent_id, config):
        # fp loss and landscape once per model however many sweeps share it: claimed like a variant
        # (two sweeps logging the same parent at once also race inside MLflow's tag writes)
        name, key = f"{ctx.name} · fp + landscape", variant_key({"model": ctx.model_key, "stage": "setup"})

        def attempt():
            return claimed_run(client, mlflow, experiment_id, parent_id, name, key, {},
                          lambda: _measure_setup(mlflow, client, parent_id, ctx, say), say, kind="setup",
                               tags=run_tags(ctx.config.device, ctx.config.eval_dtype))

        def claim():  # measured here, or by another sweep that holds the claim
            setup = attempt()
            return wait_for(client, experiment_id, key, name, say, attempt) if isinstance(setup, Waiting) else setup

        setup = claim()
        if setup is not None and not _setup_done(client, parent_id, config):
            # a FINISHED claim whose results are gone from the parent (artifacts deleted, or lost
            # with the folder they lived in): retire it and measure again, or every resume fails
            stale, _ = settle(client, experiment_id, key)
            if stale is not None:
                client.set_tag(stale.info.run_id, "ptq.stale", "its parent lacks the fp loss or the landscape")
                client.set_terminated(stale.info.run_id, status="KILLED")
            setup = claim()
        if setup is None or not _setup_done(client, parent_id, config):
            return parent
    ctx.fp_from(client.get_run(parent_id).data.metrics)
    return parent


def _setup_done(client, parent_id: str, config: SweepConfig) -> bool:
    """Whether the parent run holds the fp loss and, when asked for, the landscape profile."""
    return "nll_fp" in client.get_run(parent_id).data.metrics and _landscape_done(client, parent_id, config)


def _landscape_done(client, parent_id: str, config: SweepConfig) -> bool:
    return config.landscape_step_db <= 0 or "landscape/profile.png" in {
        a.path for a in client.list_artifacts(parent_id, "landscape")}


def _measure_setup(mlflow, client, parent_id: str, ctx: ModelContext, say):
    """Log the fp loss and the landscape profile on the parent run; (timings, no tables) for the claim run."""

    config, seconds = ctx.config, {}
    if "nll_fp" not in client.get_run(parent_id).data.metrics:
        say(f"{ctx.name}: fp loss")
        start = time.perf_counter()
        fp = evaluate_nll(ctx.model, ctx.windows, config.batch_size, config.eval_dtype)
        seconds["seconds_fp"] = time.perf_counter() - start
        mlflow.log_metrics({"nll_fp": fp.nll, "bpb_fp": fp.bits_per_byte, "nll_fp_total_nats": fp.total_nats,
                            **evaluation_record(fp, "fp"),
                            "quantized_params": sum(t.param.numel() for t in ctx.targets),
                            "total_params": count_params(ctx.model),
                            "non_embedding_params": non_embedding_params(ctx.model),
                            **({"train_tokens": ctx.entry.train_tokens} if ctx.entry.train_tokens else {})},
                           run_id=parent_id)
    if not _landscape_done(client, parent_id, config):
        say(f"{ctx.name}: radial loss landscape")
        start = time.perf_counter()
        log_landscape(RunLogger(client, parent_id), ctx.model, ctx.targets, ctx.slope_windows, config, ctx.name)
        seconds["seconds_landscape"] = time.perf_counter() - start
    return seconds, {}


class RunLogger:
    """MLflow's fluent artifact calls (log_table, log_text, log_figure) bound to one run, not the active one."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def __getattr__(self, name):
        method = getattr(self.client, name)
        return lambda *args, **kwargs: method(self.run_id, *args, **kwargs)


def sweep_model(mlflow, client, experiment_id, config: SweepConfig, entry: ModelEntry, say,
                root_run_id: str | None = None, done=lambda: None) -> dict:
    """Measure and log every variant of one base model; returns {variant name: metrics}."""
    ctx = ModelContext(config, entry)
    results, waiting = {}, []
    with open_model_run(mlflow, client, experiment_id, ctx, say, root_run_id) as parent:
        parent_id = parent.info.run_id
        if ctx.fp is None:  # no fp loss, no variant: all reported FAILED, the setup run holds the error
            results = {v.name: None for v in ctx.variants()}
            for _ in results:
                done()
            return results
        for v in ctx.variants():
            def attempt(v=v):
                return claimed_run(client, mlflow, experiment_id, parent_id, v.name, v.key, v.params,
                              lambda: ctx.measure(v), say, tags=run_tags(ctx.config.device, ctx.config.eval_dtype))

            results[v.name] = attempt()
            if isinstance(results[v.name], Waiting):
                waiting.append((v, attempt))
            else:
                done()
        for v, attempt in waiting:  # measured by another sweep meanwhile, or taken over here
            results[v.name] = wait_for(client, experiment_id, v.key, v.name, say, attempt)
            done()
        log_variant_plots(mlflow, ctx.name, finished_variants(client, experiment_id, parent_id), ctx.fp)
    return results


def finished_variants(client, experiment_id: str, parent_id: str) -> dict:
    """{run name: metrics} of every FINISHED variant under a model run, whichever sweep measured it."""
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                              f"tags.`{KIND_TAG}` = 'variant' and attributes.status = 'FINISHED'",
                              max_results=5000)
    return {r.info.run_name: r.data.metrics for r in runs}


