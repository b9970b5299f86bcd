"""What makes a run reusable: keys over everything that changes a result, and finding runs by key.

A sweep tags every run with `ptq.variant_key`, a hash of the model's fingerprint, the dataset
digest, the format, the method, the settings that change the numbers, and the version of the code
that computed it (`store.code_version`). A
FINISHED run with the same key is the answer and is reused; RUNNING (a killed process), FAILED or
KILLED ones are marked KILLED and done again. Everything is read through `MlflowClient`, never
from files, so the same logic works on sqlite and on a tracking server.
"""

from __future__ import annotations

import hashlib
import json

KEY_TAG = "ptq.variant_key"
KIND_TAG = "ptq.kind"  # "model" (parent run) or "variant" (child run)
def variant_key(fields: dict) -> str:
    """sha256 of the JSON of `fields` (sorted keys): equal keys mean equal results."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def runs_with_key(client, experiment_id: str, key: str):
    """All runs of the experiment tagged with `key`, newest first."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                              order_by=["attribute.start_time DESC"], max_results=1000)


def use_store(uri: str) -> None:
    """Make `uri` MLflow's tracking *and* registry store for this process.

    The registry URI is process-global in MLflow and, once set, no longer follows the tracking
    URI: setting only the tracking URI would register versions in whichever store was set before.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
