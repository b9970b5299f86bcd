"""Experiments in any store: found or created (with artifacts beside a sqlite file), restored if deleted."""

from __future__ import annotations

import re

from store.relocate import artifacts_root
from store.uri import sqlite_file


def artifact_location(tracking_uri: str, name: str) -> str | None:
    """Where a sqlite store's experiment `name` keeps its artifacts: `<db stem>-artifacts/<name>`
    beside the database file; None (the server's or MLflow's choice) for any other store.

    MLflow's default for sqlite is `./mlruns` under the *working directory* of whichever process
    created the experiment: a store made from a scratch folder loses every artifact (landscape
    profiles, plots, registered models) when that folder is deleted, while its database lives on.
    """
    database = sqlite_file(tracking_uri)
    if database is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"
    return str(artifacts_root(database) / folder)


def experiment_id(client, name: str, description: str | None = None) -> str:
    """The id of experiment `name`: created if missing, restored if it was deleted (its runs are
    the audit trail of registered versions, and MLflow refuses to log into a deleted one)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name),
                                            tags={"mlflow.note.content": description} if description else None)
        except MlflowException as err:  # another process created it since we looked (two sweeps at once)
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id
