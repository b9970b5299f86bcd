"""Finding a registered model's version from what a user types: alias, number, or `latest`."""

from __future__ import annotations

import re

from registry.store_uri import sqlite_file

REGISTRY_EXPERIMENT = "ptq-registry"


class VersionNotFoundError(LookupError):
    """A registered model, version or alias that does not exist (message says what does)."""


def parse_reference(text: str) -> tuple[str, str]:
    """'name/3', 'name@alias', 'models:/name/3' or 'models:/name@alias' → (name, ref)."""
    body = text[len("models:/"):] if text.startswith("models:/") else text
    for sep in ("@", "/"):
        if sep in body:
            name, ref = body.rsplit(sep, 1)
            if name and ref:
                return name, ref
    raise VersionNotFoundError(f"{text!r} is not a model version: write name/3, name@alias or "
                               "models:/name@alias")


def resolve_version(client, name: str, ref: str = "latest"):
    """The ModelVersion of registered model `name` for `ref`: an alias, a number or 'latest'."""
    from mlflow.exceptions import MlflowException

    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise VersionNotFoundError(f"no registered model {name!r} has any version in "
                                   f"{client._registry_uri}")
    if ref == "latest":
        return max(versions, key=lambda v: int(v.version))
    if ref.isdigit():
        match = [v for v in versions if str(v.version) == ref]
        if match:
            return match[0]
        raise VersionNotFoundError(f"{name!r} has no version {ref} (versions: "
                                   f"{', '.join(sorted((str(v.version) for v in versions), key=int))})")
    try:
        return client.get_model_version_by_alias(name, ref)
    except MlflowException:
        aliases = sorted(client.get_registered_model(name).aliases)
        raise VersionNotFoundError(f"{name!r} has no alias {ref!r} (aliases: "
                                   f"{', '.join(aliases) or 'none'})") from None


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
    return str(database.with_name(f"{database.stem}-artifacts") / folder)


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


def registry_experiment_id(client) -> str:
    """The experiment that holds the fitting runs behind registered versions."""
    return experiment_id(client, REGISTRY_EXPERIMENT,
                         "Fits behind the registered models: loss predictors, QiD and 16-bit laws, candidate "
                         "catalogs. Each run logs its data lineage and metrics.")


def version_artifact(client, name: str, version: str, path: str) -> str:
    """Local path of artifact `path` of registered version `name`/`version`, read through `client`'s stores.

    Not through MLflow's process-wide tracking and registry URIs: a caller's client may name
    another store than the one the process last selected.
    """
    import mlflow

    # the registry resolves the version to its physical location (a path, or mlflow-artifacts:/ on a
    # server, which the tracking URI then serves): no models:/ URI left for a global registry to read
    source = client.get_model_version_download_uri(name, version)
    return mlflow.artifacts.download_artifacts(f"{source.rstrip('/')}/{path}", tracking_uri=client.tracking_uri)
