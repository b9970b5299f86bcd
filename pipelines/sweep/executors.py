"""Where a sweep's units of work run: this process, a local process pool, or (later) a cluster.

A unit is one base model (its weights loaded once, all its variants measured there). Every unit
opens its own MLflow client on the shared tracking store and logs its own runs, so the run tree
does not depend on the executor; an executor only decides where `sweep_unit(unit)` is called.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pipelines.sources.model_set import ModelEntry, short_name
from pipelines.sweep.run_tree import sweep_model
from store.keys import use_store


@dataclass(frozen=True)
class SweepUnit:
    """One base model of a sweep, with what a fresh process needs to log its runs (picklable)."""

    config: object  # SweepConfig (kept untyped to avoid an import cycle)
    entry: ModelEntry
    tracking_uri: str
    experiment_id: str
    root_run_id: str | None
    threads: int = 0  # torch CPU threads for this unit; 0 = leave as is


def sweep_unit(unit: SweepUnit, say: Callable[[str], None] | None = None,
               done: Callable[[], None] = lambda: None) -> dict:
    """Measure and log one unit; {variant name: metrics}. Callable in any process."""
    import mlflow
    from mlflow import MlflowClient


    if unit.threads:
        import torch

        torch.set_num_threads(unit.threads)
    use_store(unit.tracking_uri)
    mlflow.set_experiment(experiment_id=unit.experiment_id)
    if say is None:
        label = unit.entry.name or short_name(unit.entry.spec)

        def say(message):
            print(f"  [{label}] {message}", file=sys.stderr, flush=True)

    return sweep_model(mlflow, MlflowClient(), unit.experiment_id, unit.config, unit.entry, say,
                       unit.root_run_id, done)


class SequentialExecutor:
    """Units one after another in this process, with live per-variant progress."""

    name = "sequential"

    def run(self, units: Iterable[SweepUnit], say, done) -> Iterator[tuple[SweepUnit, dict]]:
        for unit in units:
            yield unit, sweep_unit(unit, say, done)


class ProcessExecutor:
    """Up to `workers` units at once, each in a fresh (spawned) process sharing the CPU threads."""

    name = "processes"

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, units: Iterable[SweepUnit], say, done) -> Iterator[tuple[SweepUnit, dict]]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from dataclasses import replace

        units = list(units)
        workers = max(1, min(self.workers, len(units)))
        threads = max(1, torch_threads() // workers)  # this sweep's share of the cores, split
        # spawn, not fork: torch and MLflow's sqlite connections do not survive a fork
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(sweep_unit, replace(u, threads=threads)): u for u in units}
            for future in as_completed(futures):
                result = future.result()
                for _ in result:
                    done()
                yield futures[future], result


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def executor_for(workers: int):
    """The executor the CLI's `--workers` asks for."""
    return SequentialExecutor() if workers <= 1 else ProcessExecutor(workers)
