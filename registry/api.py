"""What the advisor reads from the registry: the champion predictor and prior, the current laws, the catalog.

Each comes back with its registered version so a recommendation can cite it. Nothing here
unpickles or imports torch: parameters are JSON documents logged next to each version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from registry.catalog.entries import Catalog
from registry.catalog.registered import load_catalog
from registry.laws.registered import LawNotFoundError
from registry.lineage import version_lineage
from registry.predictor.registered import PREDICTOR, LoadedPredictor, load_predictor
from registry.prior.registered import PriorNotFoundError, load_prior
from registry.versions import VersionNotFoundError, resolve_version

__all__ = ["Law", "load_current_law", "load_champion", "load_catalog", "Catalog", "list_versions",
           "version_lineage", "PREDICTOR", "load_prior", "PriorNotFoundError"]


@dataclass
class Law:
    """A registered QiD or 16-bit law version and its parameters."""

    name: str
    version: str
    config: dict

    def predict(self, frame):
        """QiD: DataFrame delta_nll, law_key (nats/token); 16-bit: loss16 (nats/token)."""
        from registry.laws.formulas import predict_loss16, predict_qid

        if self.config["kind"] == "qid-law":
            return predict_qid(self.config["fits"], frame)
        return predict_loss16(self.config["law"], frame)

    @property
    def cite(self) -> str:
        return f"{self.name}/{self.version}"


def load_current_law(name: str, ref: str = "current", client=None) -> Law:
    """The law version `ref` of `name` ('qid-law' or 'loss16-law') from its logged law.json."""
    import mlflow


    client = client or mlflow.MlflowClient()
    try:
        version = resolve_version(client, name, ref)
    except VersionNotFoundError as err:
        raise LawNotFoundError(f"{err}; seed the published laws with `advisor seed`") from None
    path = client.download_artifacts(version.run_id, "law.json")
    return Law(name, str(version.version), json.loads(Path(path).read_text()))


def load_champion(client=None) -> LoadedPredictor:
    """`ptq-loss-predictor@champion`."""
    return load_predictor("champion", client)


def list_versions(name: str, client=None) -> list[dict]:
    """Every version of `name`, newest first: version, aliases, run id, description, tags."""
    import mlflow

    client = client or mlflow.MlflowClient()
    found = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version))
    if not found:
        raise VersionNotFoundError(f"no registered model {name!r} has any version")
    # search results leave aliases out; a version fetched on its own carries them
    found = [client.get_model_version(name, v.version) for v in found]
    return [{"version": str(v.version), "aliases": list(v.aliases), "run_id": v.run_id,
             "description": v.description, "tags": dict(v.tags)} for v in found]
