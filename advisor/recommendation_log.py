"""Every recommendation becomes an MLflow run, logged now or by a detached logger that cannot lose it.

A recommendation answered from the answer cache (see `answer_cache`) has not imported MLflow; it
writes its run as a JSON file in a spool folder and starts `python -m advisor.recommendation_log`
detached, which logs every spooled recommendation of that store (tag `ptq.recommendation_id`),
deletes each file only once its run is FINISHED, and refreshes the answer cache. A logger that
dies leaves its files behind; the next recommendation on the store logs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from advisor.answer_cache import answers_dir, refresh
from advisor.candidates import gather_inputs
from store.experiments import experiment_id
from store.keys import use_store
from store.faults import fault_point
from store.short_runs import owner_tags

RECOMMENDATION_EXPERIMENT = "ptq-recommendations"
ID_TAG = "ptq.recommendation_id"
STALE_SPOOL_S = 120  # a spool file older than this was abandoned by a logger that died


def new_id() -> str:
    return uuid.uuid4().hex


def spool_dir() -> Path:
    return answers_dir() / "spool"


def payload(budget, plan, inputs: dict, versions: dict, rows: list, winner: dict | None, rec_id: str) -> dict:
    """Everything the run holds, as JSON."""
    return {"id": rec_id, "budget": {"text": budget.text, "bytes": budget.bytes},
            "plan": plan.as_dict(),
            "inputs": inputs, "versions": versions, "rows": rows, "winner": winner}


def log_run(record: dict, client=None) -> str:
    """Log one recommendation as a FINISHED run in `ptq-recommendations`; its run id.

    Idempotent by recommendation id: a record logged before (a logger killed after logging but
    before deleting its file) is not logged twice.
    """
    import mlflow


    client = client or mlflow.MlflowClient()
    experiment = experiment_id(client, RECOMMENDATION_EXPERIMENT, "Every recommendation: inputs, registry "
                               "versions, rows.")
    done = client.search_runs([experiment], f"tags.`{ID_TAG}` = '{record['id']}'", max_results=1)
    if done and done[0].info.status == "FINISHED":
        return done[0].info.run_id
    winner, budget, plan = record["winner"], record["budget"], record["plan"]
    name = f"{budget['text']}: " + (f"{winner['model']} · {winner['format']} · {winner['method']}" if winner
                                    else "nothing fits")
    with mlflow.start_run(experiment_id=experiment, run_name=name,
                          tags={"ptq.kind": "recommendation", ID_TAG: record["id"], **owner_tags()}) as run:
        mlflow.log_params({**{k: v for k, v in record["inputs"].items() if v is not None},
                           "budget_bytes": budget["bytes"],
                           **{f"plan.{k}": v for k, v in plan.items() if v is not None},
                           **{f"version.{k}": v for k, v in record["versions"].items()}})
        fault_point("recommendation.logging")
        if winner:
            mlflow.log_metrics({"winner_bytes": winner["bytes"], "winner_bpb": winner["bpb"],
                                "winner_nll": winner["nll"]})
        mlflow.log_dict({"rows": record["rows"], "versions": record["versions"]}, "recommendation.json")
    return run.info.run_id


def spool(uri: str, experiments, record: dict) -> Path:
    """Write `record` for the detached logger (atomically); its file."""
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"uri": uri, "experiments": list(experiments), "record": record}))
    os.replace(tmp, path)
    return path


def pending(uri: str, min_age_s: float = 0.0) -> list[Path]:
    """Spooled recommendations of `uri` at least `min_age_s` old, oldest first."""
    now, found, spooled = time.time(), [], []
    for path in spool_dir().glob("*.json") if spool_dir().exists() else []:
        try:
            spooled.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # logged and deleted meanwhile
            continue
    for _, path in sorted(spooled):
        try:
            if json.loads(path.read_text())["uri"] == uri and now - path.stat().st_mtime >= min_age_s:
                found.append(path)
        except (OSError, ValueError, KeyError):
            continue
    return found


def flush(paths, client=None) -> list[str]:
    """Log every spooled file given, deleting each once logged; the run ids."""
    ids = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())["record"]
        except FileNotFoundError:
            continue  # another logger took it
        ids.append(log_run(record, client))
        Path(path).unlink(missing_ok=True)
    return ids


def _lock_file():
    path = answers_dir() / "logger.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")


def flush_abandoned(uri: str, client) -> list[str]:
    """Log spooled recommendations a logger left behind (older than STALE_SPOOL_S), unless a logger
    is running right now (it will); the run ids."""
    import fcntl

    with _lock_file() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []
        return flush(pending(uri, STALE_SPOOL_S), client)


def _active_lock(uri: str):
    """The file a logger holds locked while it works for `uri`: one logger per store at a time."""
    import hashlib

    path = answers_dir() / f"logger-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.active"
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")


def _logger_active(uri: str) -> bool:
    import fcntl

    with _active_lock(uri) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def start_logger(uri: str, experiments) -> None:
    """Start the detached logger for `uri` unless one is at work for it already (it takes what was just
    spooled before it stops: answers that come back to back share one logger instead of each
    starting its own; it outlives this process; output to logger.log)."""
    if _logger_active(uri):
        return
    log = answers_dir() / "logger.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        subprocess.Popen([sys.executable, "-m", "advisor.recommendation_log", uri, *experiments],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                         env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})


def _lowest_priority() -> None:
    """Nice 19, for the process and for its session's scheduling group: the logger runs in a session
    of its own, and with Linux's autogroups a process's nice only ranks it within its group."""
    os.nice(19)
    try:
        Path("/proc/self/autogroup").write_text("19")
    except OSError:  # no autogroups (other kernels, containers without it): the process nice is all there is
        pass


def main(argv=None) -> int:
    """Log the spooled recommendations of a store, then refresh its answer cache; repeat while answers
    keep spooling. Exits at once when another logger works for the same store."""

    import fcntl

    uri, *experiments = argv if argv is not None else sys.argv[1:]
    if argv is None:  # the detached process: yield the CPU to the answers being read meanwhile
        _lowest_priority()
    client = None
    while True:
        with _active_lock(uri) as active:
            try:
                fcntl.flock(active, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # the active one takes what was spooled (it looks again before it stops)
            if client is None:
                import mlflow

                use_store(uri)
                client = mlflow.MlflowClient()
            while True:
                with _lock_file() as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)  # one writer at a time: a spooled run is logged once
                    flush(pending(uri), client)
                    refresh(client, uri, experiments, lambda c: gather_inputs(c, experiments))
                if not pending(uri):
                    break
        # an answer that spooled while this logger was finishing saw it active and started none
        if not pending(uri):
            return 0


if __name__ == "__main__":  # pragma: no cover - the detached logger's entry point
    sys.exit(main())
