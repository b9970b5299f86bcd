"""Sweeps on Ray: one task per variant, each logging its own child run under its model's parent.

The driver asks one task per model to open (or resume) the model's parent run — fp loss and
landscape profile — then sends every variant of that model to its own task. A task logs its
child run with the parent named explicitly (`parent_run_id`): a Ray worker has no active run to
nest under, and Ray Tune's MLflow callbacks do not nest runs. Workers keep the last model they
loaded, so a worker given several variants of one model loads it once. Every task goes through the
same keyed, claimed `claimed_run` as the local sweep, so a Ray sweep resumes exactly like a local one
and its variants are interchangeable with locally measured ones (same keys).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from types import SimpleNamespace

from pipelines.sweep.executors import SweepUnit
from pipelines.sweep.machine import run_tags
from pipelines.sweep.model_context import ModelContext
from pipelines.sweep.plots import log_variant_plots
from pipelines.sweep.run_tree import finished_variants, open_model_run
from store.errors import InputError
from store.keys import use_store
from store.run_claims import Waiting, claimed_run, wait_for

# what a worker on another node needs from the driver's environment to reach the same store
FORWARDED_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                 "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT", "HF_HOME",
                 "PTQ_ADVISOR_CACHE")

_context = {}  # this worker's loaded model: {unit identity: ModelContext}, at most one


def _worker_context(unit: SweepUnit):
    import mlflow


    use_store(unit.tracking_uri)
    mlflow.set_experiment(experiment_id=unit.experiment_id)
    if unit.threads:
        import torch

        torch.set_num_threads(unit.threads)
    identity = repr((unit.config, unit.entry))
    if identity not in _context:
        _context.clear()  # one model per worker: a 7 B model twice would not fit
        _context[identity] = ModelContext(unit.config, unit.entry)
    return _context[identity]


def _say(label):
    return lambda message: print(f"  [{label}] {message}", file=sys.stderr, flush=True)


def prepare_model(unit: SweepUnit) -> tuple[str, str, int]:
    """Open the model's parent run (fp loss, landscape) in a worker; (parent run id, model name,
    number of variants)."""
    import mlflow
    from mlflow import MlflowClient


    ctx = _worker_context(unit)
    with open_model_run(mlflow, MlflowClient(), unit.experiment_id, ctx, _say(ctx.name), unit.root_run_id) as run:
        parent_id = run.info.run_id
    return parent_id, ctx.name, len(ctx.variants())


def measure_variant(unit: SweepUnit, parent_id: str, index: int) -> tuple[str, dict | None]:
    """Measure and log variant `index` of the unit's model as a child of `parent_id`."""
    import mlflow
    from mlflow import MlflowClient


    ctx = _worker_context(unit)
    client = MlflowClient()
    v = ctx.variants()[index]
    if ctx.fp is None:
        metrics = client.get_run(parent_id).data.metrics
        if "nll_fp" not in metrics:  # the model's fp loss failed (its setup run holds the error)
            return v.name, None
        ctx.fp_from(metrics)
    say = _say(ctx.name)

    def attempt():
        return claimed_run(client, mlflow, unit.experiment_id, parent_id, v.name, v.key, v.params,
                      lambda: ctx.measure(v), say, tags=run_tags(ctx.config.device, ctx.config.eval_dtype))

    result = attempt()
    if isinstance(result, Waiting):
        result = wait_for(client, unit.experiment_id, v.key, v.name, say, attempt)
    return v.name, result


class RayExecutor:
    """Every variant a Ray task, on a local cluster started here or on the cluster at `address`."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: int = 1):
        self.address, self.cpus_per_task = address, cpus_per_task

    def _init(self, tracking_uri: str):
        import ray

        if ray.is_initialized():
            return False
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        if self.address:
            if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
                raise InputError(f"a Ray cluster at {self.address} cannot reach the local store {tracking_uri}: "
                                 "sweep into a tracking server (see docs/team.md)")
            ray.init(address=self.address, runtime_env={"env_vars": env}, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env})
        return True

    def run(self, units: Iterable[SweepUnit], say, done) -> Iterator[tuple[SweepUnit, dict]]:
        from dataclasses import replace

        import ray

        units = [replace(u, threads=self.cpus_per_task) for u in units]
        if not units:
            return
        started = self._init(units[0].tracking_uri)
        try:
            yield from self._run(ray, units, say, done)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, units, say, done):
        import mlflow
        from mlflow import MlflowClient


        opts = {"num_cpus": self.cpus_per_task}
        prepare = ray.remote(**opts)(prepare_model)
        measure = ray.remote(max_retries=2, **opts)(measure_variant)
        prepared = {prepare.remote(u): u for u in units}
        pending, results, parents = {}, {id(u): {} for u in units}, {}
        start = time.perf_counter()
        while prepared or pending:
            ready, _ = ray.wait([*prepared, *pending], num_returns=1)
            ref = ready[0]
            if ref in prepared:
                unit = prepared.pop(ref)
                parent_id, name, count = ray.get(ref)
                parents[id(unit)] = (parent_id, name)
                say(f"{name}: {count} variant tasks under run {parent_id[:8]}")
                pending |= {measure.remote(unit, parent_id, i): unit for i in range(count)}
                continue
            unit = pending.pop(ref)
            name, metrics = ray.get(ref)
            results[id(unit)][name] = metrics
            say(f"{name}: {'FAILED' if metrics is None else 'logged'} ({time.perf_counter() - start:.0f} s)")
            done()
            if not any(u is unit for u in pending.values()):
                parent_id, name = parents[id(unit)]
                with mlflow.start_run(run_id=parent_id):  # back to FINISHED, with the plots
                    fp = SimpleNamespace(nll=mlflow.get_run(parent_id).data.metrics.get("nll_fp"))
                    log_variant_plots(mlflow, name, finished_variants(MlflowClient(), unit.experiment_id, parent_id), fp)
                yield unit, results[id(unit)]
