"""A copied or moved sqlite store folder that works on its own: artifact paths follow the file.

MLflow records absolute artifact paths (experiments, runs, model versions, logged models), so a
store copied with its `<stem>-artifacts` folder kept reading and *writing* the original's folder.
When a store file opens beside its own artifacts folder but records another one, the recorded
root is rewritten to the folder beside it, once, in one transaction, under the store's lock.
A store file copied without its artifacts folder is left as it is (its artifacts live elsewhere).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# (table, column) pairs that hold artifact paths in MLflow 3's sqlite schema
COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
           ("model_versions", "storage_location"), ("model_versions", "source"),
           ("logged_models", "artifact_location"))


def artifacts_root(database: Path) -> Path:
    """Where this store keeps its artifacts: `<stem>-artifacts` beside the file (store/experiments.py)."""
    return database.with_name(f"{database.stem}-artifacts")


def recorded_roots(db: sqlite3.Connection) -> set[str]:
    roots = set()
    for (location,) in db.execute("SELECT artifact_location FROM experiments"):
        parent = str(Path(str(location).removeprefix("file://")).parent)
        if parent.endswith("-artifacts"):
            roots.add(parent)
    return roots


def relocate(database: Path) -> int:
    """Point every recorded artifact path under a foreign `*-artifacts` root at this file's own
    folder, when that folder exists; the number of rows rewritten."""
    own = artifacts_root(database)
    if not database.exists() or database.stat().st_size == 0 or not own.is_dir():
        return 0
    changed = 0
    with sqlite3.connect(database) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for root in recorded_roots(db) - {str(own)}:
            if Path(root).resolve() == own.resolve():
                continue
            for prefix in (root, f"file://{root}"):
                target = str(own) if not prefix.startswith("file://") else f"file://{own}"
                for table, column in COLUMNS:
                    if table not in tables:
                        continue
                    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
                    cursor = db.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                        (target, len(prefix) + 1, prefix, pattern))
                    changed += cursor.rowcount
    return changed
