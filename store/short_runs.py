"""Short-lived runs (a fit, a seed, a gate, a recommendation, an export) that a killed command
would leave RUNNING for ever.

Each such run is tagged with its owner (`host:pid`) when it starts; `close_abandoned` marks KILLED
the RUNNING ones whose owner on this host is gone. A run owned by another host is left alone (its
process cannot be asked), and so are sweep runs, which have claims and heartbeats of their own
(`run_claims`).
"""

from __future__ import annotations

import os
import socket

from store.run_claims import pid_alive

OWNER_TAG = "ptq.owner"


def owner_tags() -> dict:
    """Tags for a short-lived run: who runs it (`close_abandoned` asks whether it still lives)."""
    return {OWNER_TAG: f"{socket.gethostname()}:{os.getpid()}"}


def close_abandoned(client) -> list[str]:
    """Mark KILLED every RUNNING short-lived run whose owning process on this host is gone; their ids."""
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    running = client.search_runs(experiments, f"attributes.status = 'RUNNING' and tags.`{OWNER_TAG}` != ''",
                                 max_results=1000)
    host = socket.gethostname()
    closed = []
    for run in running:
        owner_host, _, pid = run.data.tags.get(OWNER_TAG, "").rpartition(":")
        if owner_host == host and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed
