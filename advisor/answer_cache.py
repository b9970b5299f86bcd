"""A local copy of what `advisor recommend` reads from a sqlite store, valid while the file is unchanged.

Why: importing MLflow and opening its SQLAlchemy store cost about 2.8 s before a recommendation
does any work, twice the time of the work itself. The inputs of a recommendation (catalog,
measured feature table, champion predictor, current laws) change only when something writes to
the store, and every write to a sqlite store changes its header's change counter, its size or
modification time, or those of its -wal/-journal companions. So the inputs are kept as one JSON
file per (store, experiments), stamped with all of these; a recommendation whose stamp still matches
answers from it without importing MLflow. Any write — a sweep, a fit, an alias moved in the UI,
another recommendation being logged — invalidates it; the logger refreshes it afterwards, reading
the store between two equal stamps so that what it saves is exactly one state of the store.
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
_COMPANIONS = ("", "-wal", "-journal", "-shm")


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


def store_stamp(uri: str | None) -> list | None:
    """(suffix, size, mtime_ns) of the sqlite file and its companions, and the database's file
    change counter; None when not a sqlite file."""
    path = sqlite_file(uri)
    if path is None or not path.exists():
        return None
    # mtime ticks coarsely (a few ms) and an in-place write keeps the size; the header's change
    # counter (bytes 24-27) moves on every committed transaction outside WAL mode
    try:
        with open(path, "rb") as f:
            stamp = [["counter", f.read(28)[24:].hex()]]
    except OSError:
        return None
    for suffix in _COMPANIONS:
        try:
            info = os.stat(f"{path}{suffix}")
        except FileNotFoundError:
            continue
        stamp.append([suffix, info.st_size, info.st_mtime_ns])
    return stamp


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
    inputs = gather(client)
    if store_stamp(uri) != before:
        return False
    save(uri, experiments, inputs, before)
    return True
