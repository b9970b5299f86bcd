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


def recorded_roots(db: sqlite3.Connection) -> dict[str, set[str]]:
    """{recorded `*-artifacts` root: names of the experiment folders under it}."""
    roots: dict[str, set[str]] = {}
    for (location,) in db.execute("SELECT artifact_location FROM experiments"):
        path = Path(str(location).removeprefix("file://"))
        if str(path.parent).endswith("-artifacts"):
            roots.setdefault(str(path.parent), set()).add(path.name)
    return roots


def _copied_here(own: Path, root: str, folders: set[str]) -> bool:
    """Whether the recorded root's artifacts came along: its experiment folders (those that exist
    there, if it still exists) are here. A store file copied alone, whose new experiments made an
    artifacts folder beside it, must keep pointing at the original's artifacts."""
    if not any((own / name).is_dir() for name in folders):
        return False
    old = Path(root)
    return not old.is_dir() or all((own / name).is_dir() for name in folders if (old / name).is_dir())


def relocate(database: Path) -> int:
    """Point every recorded artifact path under a foreign `*-artifacts` root at this file's own
    folder, when that folder exists; the number of rows rewritten."""
    own = artifacts_root(database)
    if not database.exists() or database.stat().st_size == 0 or not own.is_dir():
        return 0
    changed = 0
    with sqlite3.connect(database) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for root, folders in recorded_roots(db).items():
            if Path(root).resolve() == own.resolve() or not _copied_here(own, root, folders):
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
