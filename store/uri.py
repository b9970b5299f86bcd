"""What a tracking URI names on this machine, and a store made ready before anything writes to it.

Faults a user can hit are InputErrors with the fix: a misspelt sqlite URI, a bare file path, a
folder that does not exist, a file that is not (or no longer) an SQLite database. A new sqlite
store gets MLflow's schema under a file lock, so several commands started at once on a fresh file
do not race MLflow's migrations; tables a killed migration left behind are removed first, and a
store folder copied or moved elsewhere gets its artifact paths pointed at its own folder.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from store.errors import InputError
from store.relocate import relocate

SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(InputError):
    """A tracking store that cannot be used as given; the message says how to fix it."""


def sqlite_file(uri: str | None) -> Path | None:
    """The database file of a `sqlite:///` URI (relative paths from the working directory), else None."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


def check_spelling(uri: str) -> None:
    """Refuse URIs that MLflow would misread: two-slash sqlite, a bare database path."""
    if uri.startswith("sqlite:") and not uri.startswith("sqlite:///"):
        rest = uri.split(":", 1)[1].lstrip("/")
        raise StoreError(f"tracking URI {uri!r} is misspelt: write sqlite:///{rest} (three slashes and a "
                         f"relative path, or four for an absolute one: sqlite:////abs/path.db)")
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        path = Path(uri)
        if path.suffix in (".db", ".sqlite", ".sqlite3") or path.is_file():
            raise StoreError(f"tracking URI {uri!r} is a file path: write sqlite:///{uri}")


def check_sqlite_file(path: Path) -> None:
    """A store file that exists must be a whole SQLite database (cheap checks, no MLflow)."""
    if not path.parent.is_dir():
        raise StoreError(f"store folder {path.parent} does not exist: create it or pass another --tracking-uri")
    if not path.exists() or path.stat().st_size == 0:
        return  # a new store: MLflow creates it
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not an SQLite store file")
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise StoreError(f"{path} is not an SQLite database (it starts {header[:12]!r}): pass the store's "
                         "own file, or a new path for a new store")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as err:
        verdict = str(err)
    if verdict != "ok":
        raise StoreError(f"store file {path} is damaged ({verdict}): restore it from a copy, or start a new store "
                         "and `advisor seed` it")


@contextmanager
def _locked(path: Path):
    import fcntl

    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _drop_abandoned_migration_tables(path: Path) -> None:
    """Alembic's batch migrations copy a table to `_alembic_tmp_<name>`; a killed one leaves it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'")]
        for name in names:
            db.execute(f'DROP TABLE "{name}"')


def check_store(uri: str) -> None:
    """The checks that need no MLflow: before MLflow touches the URI (it creates missing folders)."""
    check_spelling(uri)
    path = sqlite_file(uri)
    if path is not None:
        check_sqlite_file(path)


def prepare_store(uri: str) -> None:
    """Check `uri` and, for sqlite, create or upgrade MLflow's schema once, under a lock."""
    check_store(uri)
    path = sqlite_file(uri)
    if path is None:
        return
    from mlflow import MlflowClient

    with _locked(path):
        _drop_abandoned_migration_tables(path)
        relocate(path)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # creates / migrates the tracking schema
        client.search_registered_models(max_results=1)  # and the registry's (same file)
