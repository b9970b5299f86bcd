"""Models stored as MLflow artifacts (`runs:/<run id>/checkpoint`, `models:/name/1/...`) as local folders.

A micro-suite checkpoint is logged as an artifact of its run; a sweep on another machine names it
by that URI. The artifact is downloaded once into the cache (per URI) and swept from there; its
weight files are the same bytes, so its variant keys are the same as the original folder's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from store.errors import InputError
from store.paths import cache_root

SCHEMES = ("runs:/", "models:/")


def is_artifact_uri(spec: str) -> bool:
    return spec.startswith(SCHEMES)


def local_model(spec: str, cache_dir: str | Path | None = None) -> str:
    """A local folder for `spec`: artifact URIs are downloaded (once) into the cache; others unchanged."""
    if not is_artifact_uri(spec):
        return spec
    import mlflow
    from mlflow.exceptions import MlflowException

    root = Path(cache_dir or cache_root())
    folder = root / "artifact-models" / hashlib.sha256(spec.encode()).hexdigest()[:16]
    if (folder / "config.json").exists():
        return str(folder)
    tmp = folder.with_name(folder.name + ".partial")
    try:
        mlflow.artifacts.download_artifacts(spec, dst_path=str(tmp))
    except (MlflowException, OSError) as err:
        raise InputError(f"could not download model {spec}: {str(err).splitlines()[0][:200]}") from None
    found = [p.parent for p in tmp.rglob("config.json")]
    if len(found) != 1:
        raise InputError(f"{spec} holds {len(found)} model folders (config.json); name the folder itself")
    found[0].rename(folder)  # atomic: a half-downloaded model is never swept
    return str(folder)
