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

from pipelines.tracking import KEY_TAG, runs_with_key

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


def _pid_alive(pid: int) -> bool:
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
    return fresh and _pid_alive(int(pid))  # a dead pid on this host is dead at once


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
