"""Who is measuring a variant right now: claims on runs, so concurrent sweeps never both finish it.

A variant's run carries its key (`ptq.variant_key`), its owner (host, pid) and a heartbeat tag
that the measuring process refreshes every HEARTBEAT_S. A RUNNING run is a live claim while its
owner is alive: same host → the pid exists; another host (a Ray node) → the heartbeat is younger
than LEASE_S. A dead claim (a SIGKILLed sweep, a lost node) is marked KILLED by whoever finds it,
and its variant is measured again. MLflow offers no compare-and-swap, so two sweeps can still
claim the same variant in the same instant; the rule that settles it is total and applied by
everyone who looks: among FINISHED runs of a key, the earliest (start time, run id) stays
FINISHED and the others become KILLED, so the store always ends with exactly one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass

from store.keys import KEY_TAG, KIND_TAG, runs_with_key

OWNER_TAG = "ptq.owner"
HEARTBEAT_TAG = "ptq.heartbeat"
DUPLICATE_TAG = "ptq.duplicate_of"
HEARTBEAT_S = 10.0
LEASE_S = 60.0  # a claim on another host without a heartbeat this long is dead


def owner() -> str:
    """This process as a claim owner: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_tags() -> dict:
    return {OWNER_TAG: owner(), HEARTBEAT_TAG: f"{time.time():.3f}"}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_held: set[str] = set()  # run ids this process is measuring now


def claim_alive(run, now: float | None = None) -> bool:
    """Whether a RUNNING run's owner is still measuring it."""
    tags = run.data.tags
    try:
        beat = float(tags.get(HEARTBEAT_TAG, "nan"))
    except ValueError:
        beat = float("nan")
    if beat != beat:  # no heartbeat (a run from before claims): its start time stands in
        beat = run.info.start_time / 1000.0
    fresh = ((now or time.time()) - beat) < LEASE_S
    host, _, pid = tags.get(OWNER_TAG, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return fresh
    if int(pid) == os.getpid():
        return run.info.run_id in _held
    return fresh and pid_alive(int(pid))  # a dead pid on this host is dead at once


def order(run):
    """The total order that settles races: earlier start first, then run id."""
    return (run.info.start_time, run.info.run_id)


def settle(client, experiment_id: str, key: str):
    """Apply the claim rules to a key's runs; (the FINISHED run or None, live RUNNING runs).

    Dead claims become KILLED; duplicate FINISHED runs all but the earliest become KILLED
    (tagged with the run they duplicate).
    """
    runs = runs_with_key(client, experiment_id, key)
    finished = sorted((r for r in runs if r.info.status == "FINISHED"), key=order)
    for extra in finished[1:]:
        client.set_tag(extra.info.run_id, DUPLICATE_TAG, finished[0].info.run_id)
        client.set_terminated(extra.info.run_id, status="KILLED")
    live = []
    for run in runs:
        if run.info.status in ("RUNNING", "SCHEDULED"):
            if claim_alive(run):
                live.append(run)
            else:
                client.set_terminated(run.info.run_id, status="KILLED")
    return (finished[0] if finished else None), sorted(live, key=order)


class Heartbeat:
    """Refresh a run's heartbeat tag every HEARTBEAT_S in a daemon thread while measuring."""

    def __init__(self, client, run_id: str, every_s: float = HEARTBEAT_S):
        self.client, self.run_id, self.every_s = client, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{run_id[:8]}")

    def _beat(self):
        while not self._stop.wait(self.every_s):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception:  # a store that hiccups must not kill the measurement; the lease covers it
                pass

    def __enter__(self):
        _held.add(self.run_id)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        _held.discard(self.run_id)


@dataclass
class Waiting:
    """A variant another live sweep is measuring (its run id): wait for it, do not measure it twice."""

    run_id: str


def claimed_run(client, mlflow, experiment_id, parent_id, name, key, params, work, say, kind="variant",
                tags=None):
    """Run `work()` in a child run of `parent_id` unless the key is FINISHED (its metrics) or
    claimed by a live run elsewhere (Waiting); None when it FAILED. `work()` returns (metrics,
    {artifact path: table rows}); `tags` go on the new run beside the key and the claim."""
    import pandas as pd

    done, live = settle(client, experiment_id, key)
    if done is not None:
        say(f"{name}: reused run {done.info.run_id[:8]}")
        return done.data.metrics
    if live:
        say(f"{name}: being measured by {live[0].data.tags.get(OWNER_TAG, '?')}")
        return Waiting(live[0].info.run_id)
    say(f"{name}: measuring")
    run = mlflow.start_run(run_name=name, nested=True, parent_run_id=parent_id,
                           tags={KEY_TAG: key, KIND_TAG: kind, **(tags or {}), **claim_tags()})
    run_id = run.info.run_id
    with Heartbeat(client, run_id):
        done, live = settle(client, experiment_id, key)
        if done is not None or live[0].info.run_id != run_id:  # another sweep claimed it first
            mlflow.set_tag(DUPLICATE_TAG, (done or live[0]).info.run_id)
            mlflow.end_run(status="KILLED")
            return done.data.metrics if done is not None else Waiting(live[0].info.run_id)
        mlflow.log_params(params)
        try:
            metrics, tables = work()
        except Exception as err:  # one bad variant must not stop the sweep (a store error does)
            mlflow.set_tag("ptq.error", f"{type(err).__name__}: {err}"[:4000])
            mlflow.log_text(traceback.format_exc(), "error.txt")
            mlflow.end_run(status="FAILED")
            say(f"{name}: FAILED ({type(err).__name__}: {err})")
            return None
        mlflow.log_metrics(metrics)
        for path, rows in tables.items():
            mlflow.log_table(pd.DataFrame(rows), path)
        mlflow.end_run(status="FINISHED")
    winner, _ = settle(client, experiment_id, key)  # a same-instant twin: the earlier one stays
    return client.get_run(winner.info.run_id).data.metrics


def wait_for(client, experiment_id, key, name, say, measure, poll_s: float = 2.0):
    """A Waiting variant's metrics once its owner finishes; measured here if the owner dies."""
    while True:
        done, live = settle(client, experiment_id, key)
        if done is not None:
            say(f"{name}: reused run {done.info.run_id[:8]} (measured by another sweep)")
            return done.data.metrics
        if not live:
            result = measure()
            if not isinstance(result, Waiting):
                return result
        time.sleep(poll_s)
