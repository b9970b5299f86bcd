"""A whole sweep: the experiment, the units of work placed by an executor, errors that end it."""

from __future__ import annotations

import os
import time

from pipelines.sweep.config import SweepConfig
from pipelines.sweep.core_share import fair_share_of_cores
from pipelines.sweep.executors import SweepUnit, executor_for
from store.experiments import experiment_id as ensure_experiment
from store.keys import use_store
from store.tracking_server import TrackingError, check_tracking_server, store_failure
from store.uri import prepare_store


def variant_count(config: SweepConfig) -> int:
    """How many child runs the sweep has (reused ones included)."""
    return len(config.models) * len(config.formats) * len(config.methods)


def run_sweep(config: SweepConfig, tracking_uri: str | None = None, say=print,
              done=lambda: None, workers: int = 1, executor=None) -> dict:
    """Run a whole sweep into `tracking_uri` (default: MLflow's own default store).

    `say(message)` reports each step; `done()` is called once per variant, reused or measured;
    `executor` (see `pipelines.sweep.executors`) places the per-model units; by default `workers` > 1
    sweeps that many models at once in separate processes. The candidate catalog is the registry's
    business: `registry.catalog.registered.grow_catalog` adds the swept models to it afterwards.
    """
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        use_store(tracking_uri)
    check_tracking_server(mlflow.get_tracking_uri())
    prepare_store(mlflow.get_tracking_uri())  # the schema before any worker process opens the file
    client = MlflowClient()
    experiment_id = ensure_experiment(client, config.experiment,
                                      "PTQ sweep: a parent run per base model, a child run per (format, method) "
                                      "variant with its loss, SQNR and landscape slope.")
    mlflow.set_experiment(experiment_id=experiment_id)
    # Under `mlflow run`, the project's run is the root of this sweep's tree: model runs nest under
    # it (otherwise the first model run would *become* the project run and clash with its params).
    root_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    start = time.perf_counter()
    executor = executor or executor_for(workers)
    units = [SweepUnit(config, entry, mlflow.get_tracking_uri(), experiment_id, root_run_id)
             for entry in config.models]
    try:
        with fair_share_of_cores():  # a Ray cluster places its own work; local sweeps share this machine
            by_spec = {unit.entry.spec: result for unit, result in executor.run(units, say, done)}
    except Exception as err:
        cause = store_failure(err)
        if cause is None:
            raise
        raise TrackingError(f"the tracking store stopped answering ({cause[:300]}); every finished variant "
                            "is kept: run the same sweep again to resume") from None
    results = {entry.spec: by_spec[entry.spec] for entry in config.models}
    say(f"sweep {config.experiment}: {sum(len(r) for r in results.values())} variants "
        f"in {time.perf_counter() - start:.0f} s")
    return results
