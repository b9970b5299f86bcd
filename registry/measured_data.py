"""Measured sweep runs as a versioned data file: exported from a store, imported into another.

A fresh machine should get real measured data without running a multi-hour sweep. The file holds
every FINISHED parent (model) and variant run of the chosen sweep experiments — params, metrics
and the identifying tags (`ptq.kind`, `ptq.variant_key`) — with the provenance that makes it
auditable: each model's file fingerprint, the corpus digests, the sweep settings and the code
versions that measured it, the source store's run ids. Its data version is a hash of that content.
Importing recreates the runs (tagged `ptq.seed_data` = version, `ptq.source_run_id`), so the
feature table, the predictor fits, the catalog and the MLflow UI treat them like local sweeps;
an import is idempotent (a parent or variant whose key is already FINISHED there is skipped).
Artifacts (per-layer SQNR tables, landscape plots) stay in the source store. Several stores can
be merged into one file (`merge`): a partial re-measurement replaces exactly what it measured.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

from store.errors import InputError
from store.experiments import experiment_id as ensure_experiment

FORMAT = "ptq-advisor/measured-runs/v1"
DATA_TAG = "ptq.seed_data"
SOURCE_TAG = "ptq.source_run_id"
# ptq.machine: what measured a variant, so its logged seconds keep their meaning in another store
KEEP_TAGS = ("ptq.kind", "ptq.variant_key", "ptq.zoo.family", "ptq.machine")
DEFAULT_FILE = Path(__file__).resolve().parent / "data" / "measured-runs.json.gz"
# research models (the micro-suite) are imported beside the sweep, never into the candidate catalog
ZOO_EXPERIMENT = "ptq-zoo"


class MeasuredDataError(InputError):
    """A data file that is missing, altered or of another format; the message says which."""


def _run_record(run) -> dict:
    # a run imported from a data file names the run that measured it: re-exporting keeps that id,
    # so a store seeded from a file and exported again gives the file's data version back
    return {"name": run.info.run_name, "source_run_id": run.data.tags.get(SOURCE_TAG, run.info.run_id),
            "params": dict(sorted(run.data.params.items())),
            "metrics": dict(sorted(run.data.metrics.items())),
            "tags": {k: v for k, v in sorted(run.data.tags.items()) if k in KEEP_TAGS}}


def content_version(models: list) -> str:
    """sha256 (12 hex) of the canonical JSON of the runs: equal data, equal version."""
    return hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()[:12]


def collect(client, experiments, families=()) -> list[dict]:
    """Every model run of `experiments` (optionally only `families`) with its FINISHED variants."""
    out = []
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise MeasuredDataError(f"no experiment {name!r} in this store")
        runs = client.search_runs([experiment.experiment_id], "attributes.status != 'FAILED' and "
                                  "attributes.status != 'KILLED'", max_results=50_000)
        children = {}
        for run in runs:
            if run.data.tags.get("ptq.kind") == "variant" and run.info.status == "FINISHED":
                children.setdefault(run.data.tags.get("mlflow.parentRunId"), []).append(run)
        # a model run still RUNNING (its sweep goes on) contributes the variants finished so far
        for run in runs:
            if run.data.tags.get("ptq.kind") != "model" or "nll_fp" not in run.data.metrics:
                continue
            if families and run.data.params.get("family") not in families:
                continue
            variants = sorted((_run_record(v) for v in children.get(run.info.run_id, [])), key=lambda r: r["name"])
            if variants:
                research = str(run.data.params.get("family", "")).startswith("zoo-")
                out.append({**_run_record(run), "experiment": ZOO_EXPERIMENT if research else name,
                            "variants": variants})
    return sorted(out, key=lambda m: (m["experiment"], m["name"]))


def _variant_id(record: dict) -> tuple:
    return record["params"].get("format"), record["params"].get("method")


def merge(collections: list[list[dict]]) -> tuple[list[dict], dict]:
    """Records `collect`ed from several stores, oldest first, as one list; what their overlap showed.

    A model (experiment, name) takes its parent from the newest store that has it, and each
    (format, method) variant from the newest store that measured it. So a re-measurement of part of
    a grid (say, one method after a change to its code) replaces exactly that part. A variant kept
    from an older store is given its own parent's `code_version` where it logs none, so the file
    still says which code measured each row. Overlap: for every (format, method) measured in more
    than one store, whether the newer `delta_nll` equals the older (|Δ| ≤ 1e-9) — the check that
    an unchanged method still gives the same numbers.
    """
    merged, report = {}, {"replaced": 0, "identical": 0, "changed": []}
    for models in collections:
        names = [(m["experiment"], m["name"]) for m in models]
        if len(set(names)) != len(names):
            raise MeasuredDataError("a store holds two parent runs of one model in one experiment; "
                                    "export them separately")
        for model in models:
            key, code = (model["experiment"], model["name"]), model["params"].get("code_version")
            variants = dict(merged[key]["variants"]) if key in merged else {}
            for variant in model["variants"]:
                if code and "code_version" not in variant["params"]:
                    variant = {**variant, "params": {**variant["params"], "code_version": code}}
                previous = variants.get(_variant_id(variant))
                if previous is not None:
                    report["replaced"] += 1
                    before, after = (r["metrics"].get("delta_nll") for r in (previous, variant))
                    if before is not None and after is not None and abs(before - after) <= 1e-9:
                        report["identical"] += 1
                    else:
                        report["changed"].append(f"{variant['name']}: {before} -> {after}")
                variants[_variant_id(variant)] = variant
            merged[key] = {**model, "variants": variants}
    out = [{**m, "variants": sorted(m["variants"].values(), key=lambda r: r["name"])} for m in merged.values()]
    return sorted(out, key=lambda m: (m["experiment"], m["name"])), report


def provenance(models: list) -> dict:
    """What measured the data: per model run ("experiment/model") its fingerprint, corpus, settings and
    code versions. (One model can have runs in several experiments, each measured differently.)"""
    rows = {}
    for m in models:
        p = m["params"]
        rows[f"{m['experiment']}/{m['name']}"] = {
            "family": p.get("family"), "model": p.get("model"),
            "fingerprint": p.get("model_fingerprint"), "gguf_file": p.get("gguf_file"),
            "dataset": p.get("dataset"), "dataset_digest": p.get("dataset_digest"),
            "code_version": p.get("code_version"), "variants": len(m["variants"]),
            # which code measured the variants (a merged file mixes versions, see merge)
            "variant_code_versions": dict(sorted(Counter(
                v["params"].get("code_version", p.get("code_version")) for v in m["variants"]).items())),
            "settings": {k[len("setting."):]: v for k, v in p.items() if k.startswith("setting.")}}
    return rows


def export(client, experiments, path: str | Path = DEFAULT_FILE, families=(), note: str = "") -> dict:
    """Write the measured runs of `experiments` to `path` (gzip JSON); the file's header."""
    return export_merged([client], experiments, path, families, note)


def export_merged(clients, experiments, path: str | Path = DEFAULT_FILE, families=(), note: str = "") -> dict:
    """Like `export`, from several stores, oldest first, merged (see `merge`); the header says the overlap."""
    collections = []
    for experiment in experiments:
        if not any(c.get_experiment_by_name(experiment) for c in clients):
            raise MeasuredDataError(f"no experiment {experiment!r} in any of the stores")
    for client in clients:
        present = [e for e in experiments if client.get_experiment_by_name(e) is not None]
        collections.append(collect(client, present, families))
    models, report = merge(collections)
    if not models:
        raise MeasuredDataError(f"no finished sweep runs in {', '.join(experiments)}")
    return write(models, experiments, path, note,
                 merged={"stores": len(clients), **report} if len(clients) > 1 else None)


def write(models: list, experiments, path: str | Path = DEFAULT_FILE, note: str = "", merged=None) -> dict:
    """Write collected model records (see `collect`) as a data file; its header."""
    header = {"format": FORMAT, "data_version": content_version(models),
              "created": datetime.date.today().isoformat(), "note": note, **({"merged": merged} if merged else {}),
              "experiments": list(experiments), "models": len(models),
              "variants": sum(len(m["variants"]) for m in models), "provenance": provenance(models)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({**header, "runs": models}, sort_keys=True, indent=0).encode()
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(body)  # no name, mtime 0 in the header: equal data, equal bytes
    return header


def load(path: str | Path = DEFAULT_FILE) -> dict:
    """The data file, its content checked against its data version."""
    path = Path(path)
    try:
        with gzip.open(path, "rt") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise MeasuredDataError(f"no measured-data file at {path}") from None
    except (OSError, ValueError) as err:
        raise MeasuredDataError(f"{path} is not a measured-data file ({err})") from None
    if data.get("format") != FORMAT:
        raise MeasuredDataError(f"{path} has format {data.get('format')!r}, expected {FORMAT!r}")
    if content_version(data["runs"]) != data["data_version"]:
        raise MeasuredDataError(f"{path}: content does not match its data version {data['data_version']}: "
                                "the file was altered")
    return data


def _batch(client, run_id, record, extra_tags):
    from mlflow.entities import Metric, Param, RunTag

    now = int(datetime.datetime.now().timestamp() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in record["metrics"].items()],
                     params=[Param(k, str(v)) for k, v in record["params"].items()],
                     tags=[RunTag(k, v) for k, v in {**record["tags"], **extra_tags}.items()])
    client.set_terminated(run_id, status="FINISHED")


def _finished_keys(client, experiment_id) -> dict:
    runs = client.search_runs([experiment_id], "attributes.status = 'FINISHED'", max_results=50_000)
    return {r.data.tags["ptq.variant_key"]: r.info.run_id for r in runs if "ptq.variant_key" in r.data.tags}


def import_runs(client, data: dict, say=lambda message: None) -> dict:
    """Recreate the file's runs in their experiments; {"models": n, "variants": n, "skipped": n}."""

    version, counts, keys = data["data_version"], {"models": 0, "variants": 0, "skipped": 0}, {}
    for model in data["runs"]:
        name = model["experiment"]
        if name not in keys:
            exp = ensure_experiment(client, name, "PTQ sweep: a parent run per base model, a child run per "
                                    "(format, method) variant.")
            keys[name] = (exp, _finished_keys(client, exp))
        exp, done = keys[name]
        tags = {DATA_TAG: version}
        parent_id = done.get(model["tags"].get("ptq.variant_key"))
        if parent_id is None:
            parent_id = client.create_run(exp, run_name=model["name"],
                                          tags={SOURCE_TAG: model["source_run_id"]}).info.run_id
            _batch(client, parent_id, model, tags)
            counts["models"] += 1
        for variant in model["variants"]:
            if variant["tags"].get("ptq.variant_key") in done:
                counts["skipped"] += 1
                continue
            run = client.create_run(exp, run_name=variant["name"],
                                    tags={"mlflow.parentRunId": parent_id, SOURCE_TAG: variant["source_run_id"]})
            _batch(client, run.info.run_id, variant, tags)
            counts["variants"] += 1
        say(f"{model['name']}: {len(model['variants'])} variants")
    return counts
