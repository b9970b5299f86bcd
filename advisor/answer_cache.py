"""A local copy of what `advisor recommend` reads from a sqlite store, valid while that part is unchanged.

Why: importing MLflow and opening its SQLAlchemy store cost about 2.8 s before a recommendation
does any work, twice the time of the work itself. The inputs of a recommendation (catalog,
measured feature table, champion predictor, current laws) change only when something writes them.
So they are kept as one JSON file per (store, experiments), stamped with a digest of what a
recommendation reads (`store_stamp`: the registry's rows, and the runs of every experiment but the
recommendations', gates' and exports'); a recommendation whose stamp still matches answers from it
without importing MLflow. A write it reads — a sweep, a fit, an alias moved in the UI — invalidates
it; a recommendation being logged does not, so answers that come back to back all answer from it.
The logger refreshes it after a change, reading the store between two equal stamps so that what it
saves is exactly one state of the store.
Stores that are not sqlite files (a tracking server) are always read directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from registry.api import Law
from registry.catalog.registered import catalog_from_dict
from registry.predictor.registered import LoadedPredictor
from store.paths import cache_root
from store.uri import sqlite_file

FORMAT = 1


@dataclass
class StoreInputs:
    """What a recommendation reads: laws and predictor are None/str (the error) when missing."""

    catalog: object  # registry.catalog.entries.Catalog
    table: object  # pandas DataFrame of the sweep feature table, or None
    table_note: str | None
    predictor: object  # registry.predictor.registered.LoadedPredictor or None
    predictor_error: str | None
    qid: object  # registry.api.Law or the error message
    loss16: object


def answers_dir() -> Path:
    """$PTQ_ADVISOR_CACHE/answers, else ~/.cache/ptq-advisor/answers."""
    return cache_root() / "answers"


def cache_enabled() -> bool:
    """False when $PTQ_ADVISOR_ANSWER_CACHE is 0/off/false (always read the store)."""
    return os.environ.get("PTQ_ADVISOR_ANSWER_CACHE", "on").lower() not in ("0", "off", "false", "no")


def normalized_uri(uri: str) -> str:
    """A sqlite URI with an absolute path (the detached logger may resolve it elsewhere); others as given."""
    path = sqlite_file(uri)
    return f"sqlite:///{path}" if path is not None else uri


def default_uri() -> str:
    """The tracking URI MLflow would use, decided without importing it."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


# Experiments whose runs a recommendation never reads: its own log, gates and exports. Their writes
# must not invalidate the snapshot, or every answer's own logged run would expire the next answer.
UNREAD_EXPERIMENTS = ("ptq-recommendations", "ptq-gates", "ptq-exports")
# One row per fact a recommendation reads, in a stable order: the registry (names, versions,
# aliases, tags) and every run outside UNREAD_EXPERIMENTS (status and end time move whenever a run
# is logged, finished, deleted or restored).
_STAMP_QUERIES = (
    "SELECT version_num FROM alembic_version",
    "SELECT name, last_updated_time FROM registered_models ORDER BY name",
    "SELECT name, version, last_updated_time, current_stage, status, source, run_id FROM model_versions "
    "ORDER BY name, version",
    "SELECT name, alias, version FROM registered_model_aliases ORDER BY name, alias",
    "SELECT name, key, value FROM registered_model_tags ORDER BY name, key",
    "SELECT name, version, key, value FROM model_version_tags ORDER BY name, version, key",
    "SELECT experiment_id, name, lifecycle_stage, artifact_location FROM experiments WHERE name NOT IN ({unread}) "
    "ORDER BY experiment_id",
    "SELECT r.run_uuid, r.status, r.lifecycle_stage, r.start_time, r.end_time FROM runs r "
    "JOIN experiments e ON e.experiment_id = r.experiment_id WHERE e.name NOT IN ({unread}) ORDER BY r.run_uuid",
)


def store_stamp(uri: str | None) -> str | None:
    """A digest of everything in a sqlite store that a recommendation reads (read in one
    transaction, with the standard library's sqlite3: no MLflow import); None when `uri` is not
    a sqlite file or cannot be read as an MLflow store. Writes a recommendation never reads — its
    own logged runs, gates, exports — leave it unchanged."""
    import sqlite3

    path = sqlite_file(uri)
    if path is None or not path.exists():
        return None
    unread = ", ".join(f"'{name}'" for name in UNREAD_EXPERIMENTS)
    digest = hashlib.sha256()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as connection:
            connection.execute("BEGIN")  # one snapshot for every query
            for query in _STAMP_QUERIES:
                for row in connection.execute(query.format(unread=unread)):
                    digest.update(repr(row).encode())
                digest.update(b"|")
    except sqlite3.Error:
        return None
    return digest.hexdigest()


def snapshot_file(uri: str, experiments) -> Path:
    key = json.dumps([str(sqlite_file(uri)), sorted(experiments)])
    return answers_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def to_json(inputs: StoreInputs) -> dict:
    def law(value):
        return value if isinstance(value, str) else {"name": value.name, "version": value.version,
                                                     "config": value.config}

    p = inputs.predictor
    return {"catalog": inputs.catalog.to_dict(),
            # to_dict keeps Python floats (exact through json); to_json would round them to 10 digits
            "table": None if inputs.table is None else {**inputs.table.to_dict(orient="split"),
                                                         "dtypes": inputs.table.dtypes.astype(str).to_dict()},
            "table_note": inputs.table_note,
            "predictor": None if p is None else {"name": p.name, "version": p.version, "spec": p.spec,
                                                 "run_id": p.run_id},
            "predictor_error": inputs.predictor_error, "qid": law(inputs.qid), "loss16": law(inputs.loss16)}


def from_json(data: dict) -> StoreInputs:
    table = None
    if data["table"] is not None:
        import pandas as pd

        split = dict(data["table"])
        dtypes = split.pop("dtypes")
        table = pd.DataFrame(split["data"], index=split["index"], columns=split["columns"]).astype(dtypes)

    def law(value):
        return value if isinstance(value, str) else Law(**value)

    predictor = LoadedPredictor(**data["predictor"]) if data["predictor"] else None
    return StoreInputs(catalog_from_dict(data["catalog"]), table, data["table_note"], predictor,
                       data["predictor_error"], law(data["qid"]), law(data["loss16"]))


def load(uri: str, experiments) -> StoreInputs | None:
    """The cached inputs when the store is unchanged since they were read; else None."""
    stamp = store_stamp(uri)
    path = snapshot_file(uri, experiments)
    if stamp is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("format") != FORMAT or data.get("stamp") != stamp:
        return None
    return from_json(data["inputs"])


def save(uri: str, experiments, inputs: StoreInputs, stamp: list) -> None:
    """Keep `inputs` as read at `stamp` (atomically: a reader never sees half a file)."""
    path = snapshot_file(uri, experiments)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"format": FORMAT, "uri": uri, "experiments": sorted(experiments), "stamp": stamp,
                       "inputs": to_json(inputs)})
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(body)
    os.replace(f.name, path)


def refresh(client, uri: str, experiments, gather) -> bool:
    """Read the inputs with `gather(client)` between two equal stamps and save them; False if the
    store changed meanwhile (nothing saved: the next reader goes to the store)."""
    before = store_stamp(uri)
    if before is None:
        return False
    if load(uri, experiments) is not None:  # still current (e.g. only recommendations were logged): no re-read
        return True
    inputs = gather(client)
    if store_stamp(uri) != before:
        return False
    save(uri, experiments, inputs, before)
    return True
