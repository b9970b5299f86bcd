"""What makes a run reusable: keys over everything that changes a result, and finding runs by key.

A sweep tags every run with `ptq.variant_key`, a hash of the model's fingerprint, the dataset
digest, the format, the method, the settings that change the numbers, and the code version. A
FINISHED run with the same key is the answer and is reused; RUNNING (a killed process), FAILED or
KILLED ones are marked KILLED and done again. Everything is read through `MlflowClient`, never
from files, so the same logic works on sqlite and on a tracking server.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path

KEY_TAG = "ptq.variant_key"
KIND_TAG = "ptq.kind"  # "model" (parent run) or "variant" (child run)
# what computes a variant's numbers (the rest of pipelines/ only orchestrates or exports)
MEASURING_CODE = ("quantize", "measure", "features.py", "landscape.py", "token_windows.py", "corpus.py",
                  "model_source.py", "evaluate_formats.py", "architecture.py")


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version plus a hash of the code that computes measured values.

    A hash of those sources rather than the git commit: a commit that touches only the sweep's
    orchestration, the CLI, the registry or the docs must not invalidate every measured variant,
    while any change to how variants are quantized or measured does, with or without git.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    paths = [p for name in MEASURING_CODE for p in sorted((root / name).rglob("*.py"))
             if (root / name).is_dir()] + [root / name for name in MEASURING_CODE if name.endswith(".py")]
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return f"{metadata.version('ptq-advisor')}+{digest.hexdigest()[:12]}"


def variant_key(fields: dict) -> str:
    """sha256 of the JSON of `fields` (sorted keys): equal keys mean equal results."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def runs_with_key(client, experiment_id: str, key: str):
    """All runs of the experiment tagged with `key`, newest first."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                              order_by=["attribute.start_time DESC"], max_results=1000)


def finished_run(client, experiment_id: str, key: str):
    """The FINISHED run with this key, after marking any other attempt with it KILLED; or None."""
    finished = None
    for run in runs_with_key(client, experiment_id, key):
        if run.info.status == "FINISHED" and finished is None:
            finished = run
        elif run.info.status in ("RUNNING", "SCHEDULED"):
            client.set_terminated(run.info.run_id, status="KILLED")
    return finished


def use_store(uri: str) -> None:
    """Make `uri` MLflow's tracking *and* registry store for this process.

    The registry URI is process-global in MLflow and, once set, no longer follows the tracking
    URI: setting only the tracking URI would register versions in whichever store was set before.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
