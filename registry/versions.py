"""Finding a registered model's version from what a user types: alias, number, or `latest`."""

from __future__ import annotations

from store.errors import InputError
from store.experiments import experiment_id

REGISTRY_EXPERIMENT = "ptq-registry"


class VersionNotFoundError(InputError, LookupError):
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
