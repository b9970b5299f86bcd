"""What a tracking URI names on this machine, decided without importing MLflow."""

from __future__ import annotations

from pathlib import Path


def sqlite_file(uri: str | None) -> Path | None:
    """The database file of a `sqlite:///` URI (relative paths from the working directory), else None."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None
