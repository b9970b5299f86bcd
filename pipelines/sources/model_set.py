"""A sweep's set of models: plain specs, or a YAML file naming families, files and training tokens.

    models:
      - id: ./SmolLM2-dir            # hub id, folder, .gguf file, or runs:/<run id>/checkpoint
        gguf_file: SmolLM2-135M-Instruct.Q4_1.gguf   # optional, inside a folder
        family: smollm2              # optional; groups models for leave-one-family-out
        train_tokens: 2.0e12         # optional: D of the QiD law (training tokens)
        name: smollm2-135m           # optional display name of the runs
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.sources.artifact_models import is_artifact_uri, local_model
from store.errors import InputError


class ModelSetError(InputError):
    """A models file that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class ModelEntry:
    """One base model of a sweep."""

    spec: str
    gguf_file: str | None = None
    family: str | None = None
    train_tokens: float | None = None
    name: str | None = None


FIELDS = {"id", "gguf_file", "family", "train_tokens", "name"}


def load_model_set(path: str | Path) -> list[ModelEntry]:
    """Parse a models YAML file (see module doc); relative paths are relative to the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelSetError(f"cannot read models file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ModelSetError(f"models file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ModelSetError(f"models file {path} needs a non-empty list under 'models:'")
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise ModelSetError(f"models file {path}: entry {i + 1} needs an 'id'")
        unknown = set(item) - FIELDS
        if unknown:
            raise ModelSetError(f"models file {path}: entry {i + 1} has unknown keys {sorted(unknown)}; "
                                f"allowed: {sorted(FIELDS)}")
        spec = str(item["id"])
        if is_artifact_uri(spec):
            spec = local_model(spec)  # runs:/… or models:/…: downloaded once into the cache
        elif not Path(spec).expanduser().is_absolute() and (path.parent / spec).exists():
            spec = str((path.parent / spec).resolve())  # a local model named relative to the file
        tokens = item.get("train_tokens")
        try:
            tokens = float(tokens) if tokens is not None else None
        except (TypeError, ValueError):
            raise ModelSetError(f"models file {path}: entry {i + 1} train_tokens {tokens!r} is not a number") from None
        entries.append(ModelEntry(spec, item.get("gguf_file"), item.get("family"), tokens, item.get("name")))
    return entries


def short_name(spec: str) -> str:
    """A run name for a model spec: its folder/file name or the last part of a hub id."""
    return Path(spec).name if os.path.exists(spec) else spec.split("/")[-1]
