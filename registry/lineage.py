"""Lineage of a registered version: the fitting run, its experiment, and the runs it learned from."""

from __future__ import annotations

import json

from registry.versions import resolve_version

LINEAGE_ARTIFACT = "lineage/training_runs.json"  # {"runs": [run ids]} logged by every fitting run


def version_lineage(client, name: str, ref: str) -> dict:
    """{name, version, aliases, run_id, run_name, experiment, source, tags, training_runs}."""
    version = resolve_version(client, name, ref)
    run = client.get_run(version.run_id) if version.run_id else None
    runs = []
    if run is not None and LINEAGE_ARTIFACT in {a.path for a in client.list_artifacts(run.info.run_id, "lineage")}:
        path = client.download_artifacts(run.info.run_id, LINEAGE_ARTIFACT)
        with open(path) as f:
            runs = json.load(f)["runs"]
    return {"name": name, "version": str(version.version), "aliases": list(version.aliases),
            "run_id": version.run_id, "run_name": run.info.run_name if run else None,
            "experiment": client.get_experiment(run.info.experiment_id).name if run else None,
            "source": version.tags.get("source"), "tags": dict(version.tags), "training_runs": runs}
