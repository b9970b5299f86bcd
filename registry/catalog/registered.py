"""The candidate catalog as versions in the Model Registry: grown from sweeps, registered, loaded."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

from registry.catalog.entries import (
    _COUNTS,
    _MINIMUM,
    CATALOG,
    CURRENT,
    Catalog,
    CatalogEntry,
    CatalogError,
    CatalogNotFoundError,
    _check,
    _match_keys,
    _unique,
    content_digest,
    load_seed,
)
from registry.versions import (
    VersionNotFoundError,
    registry_experiment_id,
    resolve_version,
    version_artifact,
)
from store.short_runs import owner_tags

PIP_REQUIREMENTS = ["mlflow==3.17.2", "pandas==3.1.1"]
_CODE = str(Path(__file__).with_name("catalog_model.py"))
_DESCRIPTION = ("Candidate base models for the advisor: parameter counts, training tokens, the architecture "
                "numbers a KV-cache estimate needs, tokenizer, measured fp loss where a sweep measured it, "
                "and the source of every number. Alias current: the catalog the advisor answers from.")


def _param(params: dict, name: str, kind):
    value = params.get(name)
    if value in (None, "", "None"):
        return None
    if kind is bool:
        return value.lower() == "true"
    return kind(float(value)) if kind is int else kind(value)



def entries_from_runs(client, experiment_ids: list[str], dataset_digest: str | None = None
                      ) -> list[CatalogEntry]:
    """Entries for the base models that sweeps measured (parent runs tagged ptq.kind=model).

    A model measured by several runs keeps the latest. `dataset_digest` keeps only runs on that
    evaluation text, so measured losses compare like with like.
    """
    runs, token = [], None
    while True:
        page = client.search_runs(list(experiment_ids), "tags.`ptq.kind` = 'model'", max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    entries: dict[str, CatalogEntry] = {}
    for run in runs:
        params, metrics, run_id = run.data.params, run.data.metrics, run.info.run_id
        if "nll_fp" not in metrics or "total_params" not in metrics:
            continue  # a sweep that stopped before measuring the fp loss
        if dataset_digest and params.get("dataset_digest") != dataset_digest:
            continue
        uri = f"runs:/{run_id}"
        try:
            arch = {k: _param(params, f"arch.{k}", int) for k in _COUNTS if k not in
                    ("total_params", "non_embedding_params", "quantized_params")}
            tied = _param(params, "arch.tied_embeddings", bool)
        except ValueError as err:
            raise CatalogError(f"run {run_id} ({run.info.run_name!r}): unreadable arch.* param: {err}"
                               ) from None
        tokens = metrics.get("train_tokens") or _param(params, "train_tokens", float)
        data = {"name": run.info.run_name or run_id, "family": _param(params, "family", str) or "unknown",
                "hub_id": params.get("model") if params.get("model_kind") == "hub" else None,
                "architecture": _param(params, "arch.model_type", str),  # optional: config.model_type
                "total_params": int(metrics["total_params"]),
                "non_embedding_params": int(metrics.get("non_embedding_params", metrics["total_params"])),
                "quantized_params": int(metrics["quantized_params"]) if "quantized_params" in metrics
                else None,
                "train_tokens": tokens, **arch, "tied_embeddings": tied,
                "sources": {"architecture": uri, "params": uri, "measured_fp": uri,
                            **({"train_tokens": uri} if tokens else {})},
                "measured_fp": {"nll": metrics["nll_fp"], "bpb": metrics.get("bpb_fp"),
                                "dataset": params.get("dataset") or "unknown",
                                "dataset_digest": params.get("dataset_digest"), "run_id": run_id}}
        entries.pop(data["name"], None)  # re-inserted, so the list ends in order of the latest runs
        entries[data["name"]] = _check(data, f"run {run_id}", _MINIMUM)
    return list(entries.values())



def merge(seed: list[CatalogEntry], measured: list[CatalogEntry]) -> list[CatalogEntry]:
    """Seed entries with measured fp losses attached where a measured model matches one by name, hub
    id or alias (seed facts win; a missing train_tokens is filled); unmatched measured models appended."""
    merged = list(seed)
    index = {key: i for i, entry in enumerate(merged) for key in _match_keys(entry)}
    for entry in measured:
        hit = next((index[k] for k in sorted(_match_keys(entry)) if k in index), None)
        if hit is None:
            index.update({key: len(merged) for key in _match_keys(entry)})
            merged.append(entry)
            continue
        base = merged[hit]
        sources = {**base.sources, "measured_fp": entry.sources["measured_fp"]}
        tokens = base.train_tokens
        if tokens is None and entry.train_tokens is not None:
            tokens, sources["train_tokens"] = entry.train_tokens, entry.sources["train_tokens"]
        merged[hit] = replace(base, measured_fp=entry.measured_fp, sources=sources, train_tokens=tokens)
    return merged



def register_catalog(entries: list[CatalogEntry], description: str, source: str, client=None):
    """Register `entries` as a `ptq-candidate-catalog` version with alias current; returns the ModelVersion.

    Idempotent on content: when a version already holds the same content digest, `current` points
    at it and it is returned; nothing new is logged. `source` says where the entries came from
    (`seed`, `seed+runs`, `runs`). Runs go through MLflow's fluent API, so a `client` passed in must
    use MLflow's current tracking and registry URIs.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema


    if not entries:
        raise CatalogError("an empty catalog cannot be registered: start from load_seed()")
    _unique(list(entries), "catalog to register")
    client = client or mlflow.MlflowClient()
    digest = content_digest(entries)
    versions = client.search_model_versions(f"name = '{CATALOG}'")
    same = [v for v in versions if v.tags.get("content_digest") == digest]
    if same:
        version = max(same, key=lambda v: int(v.version))
        client.set_registered_model_alias(CATALOG, CURRENT, version.version)
        return client.get_model_version(CATALOG, version.version)
    measured_runs = sorted({e.measured_fp.run_id for e in entries if e.measured_fp})
    payload = {"source": source, "content_digest": digest, "entries": [e.to_dict() for e in entries]}
    signature = ModelSignature(inputs=Schema([ColSpec("string", "name", required=False)]))
    example = pd.DataFrame({"name": [entries[0].name]})  # predict: these rows; no `name` column: all
    with mlflow.start_run(experiment_id=registry_experiment_id(client), description=description, tags=owner_tags(),
                          run_name=f"{CATALOG} · {source} · {len(entries)} models",
                          nested=mlflow.active_run() is not None) as run, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.json"
        path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        mlflow.log_dict({"runs": measured_runs}, "lineage/measured_runs.json")
        # model_config is small on purpose: MLflow also logs it as the run's params
        info = mlflow.pyfunc.log_model(name="model", python_model=_CODE, artifacts={"catalog": str(path)},
                                       model_config={"source": source, "content_digest": digest,
                                                     "entries": len(entries)},
                                       signature=signature, input_example=example,
                                       pip_requirements=PIP_REQUIREMENTS,
                                       registered_model_name=CATALOG)
    version = str(info.registered_model_version)
    tags = {"entries": str(len(entries)), "source": source, "content_digest": digest,
            "families": ",".join(sorted({e.family for e in entries}))[:500],
            "measured": str(len(measured_runs)),
            "lineage": f"run {run.info.run_id}; measured runs in lineage/measured_runs.json"}
    for key, value in tags.items():
        client.set_model_version_tag(CATALOG, version, key, value)
    client.update_model_version(CATALOG, version, description=description)
    client.update_registered_model(CATALOG, description=_DESCRIPTION)
    client.set_registered_model_alias(CATALOG, CURRENT, version)
    return client.get_model_version(CATALOG, version)



def refresh_catalog(client, experiments=("ptq-sweep",)):
    """Register the curated seed merged with the models swept in `experiments` (by name).

    A new version only when the content changed (see `register_catalog`); returns the current one.
    """
    ids = [e.experiment_id for name in experiments if (e := client.get_experiment_by_name(name))]
    measured = entries_from_runs(client, ids) if ids else []
    return register_catalog(merge(load_seed(), measured), client=client,
                            description=f"Curated public models + {len(measured)} swept models",
                            source="seed+runs" if measured else "seed")



def catalog_from_dict(data: dict) -> Catalog:
    """A Catalog from `Catalog.to_dict()` output, every entry validated again."""
    entries = [_check(d, f"catalog entry {i}", _MINIMUM) for i, d in enumerate(data["entries"], 1)]
    return Catalog(tuple(entries), data["version"], data["source"], data["digest"])



def load_catalog(ref: str = CURRENT, client=None) -> Catalog:
    """The catalog version `ref` (alias, number or 'latest'), its content checked against its digest."""
    import mlflow


    client = client or mlflow.MlflowClient()
    try:
        version = resolve_version(client, CATALOG, ref)
    except VersionNotFoundError as err:
        raise CatalogNotFoundError(
            f"{err}; register the curated seed with registry.catalog.entries.register_catalog("
            "registry.catalog.entries.load_seed(), 'curated seed', source='seed')") from None
    where = f"{CATALOG}/{version.version}"
    config = json.loads(Path(version_artifact(client, CATALOG, version.version, "artifacts/catalog.json")).read_text())
    entries = [_check(d, f"{where}: entry {i}", _MINIMUM) for i, d in enumerate(config.get("entries", []), 1)]
    digest = content_digest(entries)
    if digest != version.tags.get("content_digest"):
        raise CatalogError(f"{where}: content digest {digest[:12]} does not match the version's tag "
                           f"{str(version.tags.get('content_digest'))[:12]}: the version was altered")
    return Catalog(tuple(entries), str(version.version), config.get("source", "unknown"), digest)



def grow_catalog(experiments, say, client=None) -> None:
    """After a sweep: its measured models (and their fp loss) become candidates in a new current
    catalog. A failure is said, not raised: every variant is logged already, and `advisor seed`
    refreshes the catalog later."""
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    try:
        version = refresh_catalog(client, tuple(experiments))
        say(f"ptq-candidate-catalog/{version.version} is current")
    except Exception as err:
        say(f"note: the candidate catalog was not refreshed ({type(err).__name__}: {err}); run `advisor seed`")
