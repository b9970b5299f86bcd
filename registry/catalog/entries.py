"""The candidate catalog: base models the advisor may recommend, each fact with its source.

Seeded from `seed.yaml` (model cards, config.json files, papers), grown by sweeps (parent
runs tagged `ptq.kind=model` carry the architecture numbers and the measured fp loss), and
versioned as the registered model `ptq-candidate-catalog`: a recommendation cites
`ptq-candidate-catalog/<version>` exactly like the predictor and law versions it used, the alias
`current` moves when the content changes, and each version's run holds its lineage (the sweep runs
behind its measured losses). A version is a pyfunc defined in code (`catalog_model.py`) whose
artifact `catalog.json` holds the entries and whose `predict` returns them as a table: nothing is
pickled. A registered model rather than a logged dataset because that is how the advisor already
cites, aliases and traces its other versioned knowledge.

This module imports neither torch nor MLflow at module level: the advisor's recommend path reads
the catalog without paying for them. Units: parameter counts in elements, tokens in tokens, memory
in bytes, losses in nats/token (nll) and bits/byte (bpb).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

from registry.versions import (
    VersionNotFoundError,
    registry_experiment_id,
    resolve_version,
    version_artifact,
)
from store.errors import InputError

CATALOG = "ptq-candidate-catalog"
CURRENT = "current"
SEED_PATH = Path(__file__).with_name("seed.yaml")
PIP_REQUIREMENTS = ["mlflow==3.17.2", "pandas==3.1.1"]
_CODE = str(Path(__file__).with_name("catalog_model.py"))
_DESCRIPTION = ("Candidate base models for the advisor: parameter counts, training tokens, the architecture "
                "numbers a KV-cache estimate needs, tokenizer, measured fp loss where a sweep measured it, "
                "and the source of every number. Alias current: the catalog the advisor answers from.")


class CatalogError(InputError, ValueError):
    """A catalog entry or file that cannot be used; the one-line message names the entry and field."""


class CatalogNotFoundError(InputError, LookupError):
    """No catalog version where one was asked for; the message says how to register one."""


@dataclass(frozen=True)
class MeasuredFp:
    """Unquantized loss measured by a sweep: nll in nats/token, bpb in bits/byte of UTF-8 text."""

    nll: float
    bpb: float | None
    dataset: str
    dataset_digest: str | None
    run_id: str


@dataclass(frozen=True)
class CatalogEntry:
    """One candidate base model. Counts in elements, train_tokens in tokens, context in tokens.

    non_embedding_params excludes token and learned position embeddings and an untied output
    layer; quantized_params counts the Linear weights inside the transformer blocks (what RTN/GPTQ
    quantize). `sources` maps each fact (or group of facts) to a URL, a `runs:/<id>` or a note.
    """

    name: str
    family: str
    total_params: int
    non_embedding_params: int
    sources: dict
    hub_id: str | None = None
    architecture: str | None = None  # config.json model_type: selects the parameter-count formula
    quantized_params: int | None = None
    train_tokens: float | None = None
    layers: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    context_length: int | None = None
    vocab_size: int | None = None
    tied_embeddings: bool | None = None
    tokenizer: str | None = None
    license: str | None = None
    aliases: tuple[str, ...] = ()
    extras: dict = field(default_factory=dict)  # architecture-specific numbers (e.g. OPT-350m's projections)
    notes: str | None = None
    measured_fp: MeasuredFp | None = None

    @property
    def unquantized_params(self) -> int | None:
        """Elements kept at full precision by weight quantization: embeddings, output layer, norms, biases."""
        return None if self.quantized_params is None else self.total_params - self.quantized_params

    def to_dict(self) -> dict:
        """Plain JSON/YAML-safe data (lists, not tuples)."""
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        return data


SEED_REQUIRED = ("name", "hub_id", "family", "architecture", "total_params", "non_embedding_params",
                 "quantized_params", "layers", "hidden_size", "intermediate_size", "heads", "kv_heads",
                 "head_dim", "context_length", "vocab_size", "tied_embeddings", "tokenizer", "sources")
_MINIMUM = ("name", "family", "total_params", "non_embedding_params", "sources")
_COUNTS = ("total_params", "non_embedding_params", "quantized_params", "layers", "hidden_size",
           "intermediate_size", "heads", "kv_heads", "head_dim", "context_length", "vocab_size")
_TEXTS = ("name", "family", "hub_id", "architecture", "tokenizer", "license", "notes")
_FIELDS = {f.name for f in fields(CatalogEntry)}


@dataclass(frozen=True)
class Catalog:
    """A catalog version: its entries, registered version number (None if unregistered), source, digest."""

    entries: tuple[CatalogEntry, ...]
    version: str | None
    source: str
    digest: str

    @property
    def reference(self) -> str:
        """How a recommendation cites this catalog: `ptq-candidate-catalog/<version>`."""
        return f"{CATALOG}/{self.version or 'unregistered'}"

    def get(self, name: str) -> CatalogEntry:
        """The entry whose name, hub id or alias is `name` (case-insensitive)."""
        for entry in self.entries:
            if _key(name) in _match_keys(entry):
                return entry
        raise CatalogError(f"no model {name!r} in catalog {self.reference}; known: "
                           f"{', '.join(e.name for e in self.entries)}")

    def to_dict(self) -> dict:
        """JSON-able form (entries, version, source, digest); `catalog_from_dict` reads it back."""
        return {"entries": [e.to_dict() for e in self.entries], "version": self.version,
                "source": self.source, "digest": self.digest}

    def table(self):
        """The entries as a pandas DataFrame, one row each (the registered pyfunc's predict output)."""
        import pandas as pd

        return pd.DataFrame([_row(e.to_dict()) for e in self.entries])


def _row(entry: dict) -> dict:
    # restated in catalog_model.py (which must load without this package); a test holds them equal
    row = {k: v for k, v in entry.items() if k not in ("measured_fp", "sources", "aliases", "extras")}
    measured = entry.get("measured_fp") or {}
    row.update({"nll_fp": measured.get("nll"), "bpb_fp": measured.get("bpb"),
                "fp_dataset": measured.get("dataset"), "fp_dataset_digest": measured.get("dataset_digest"),
                "fp_run_id": measured.get("run_id")})
    row.update({k: json.dumps(entry.get(k) or {}, sort_keys=True) for k in ("sources", "aliases", "extras")})
    return row


# ---------------------------------------------------------------- facts derived from the architecture

class ParamCounts(NamedTuple):
    """Parameter counts in elements: total, non-embedding, and Linear weights inside the blocks."""

    total: int
    non_embedding: int
    quantized: int


_GATED = {"llama", "mistral", "qwen2", "phi3", "gemma2", "gemma3_text"}
_CLASSIC = {"gpt2", "gpt_neox", "bloom", "opt"}


def architecture_param_counts(entry: CatalogEntry) -> ParamCounts:
    """Parameter counts (elements) from the architecture numbers, exact per family (H hidden, I
    intermediate, L layers, V vocab, E token-embedding width, h heads, k KV heads, d head dim):

    - gated (llama, mistral, qwen2, phi3, gemma2, gemma3_text): per layer H·d·(h+2k) + h·d·H + 3·H·I
      Linear weights, plus RMSNorms (2·H; 4·H for gemma2/3), q/k/v biases d·(h+2k) for qwen2, q/k
      norms 2·d for gemma3; final norm H.
    - classic (gpt2, gpt_neox, bloom, opt): per layer 4·H² + 2·H·I weights and 9·H + I biases and
      LayerNorms; final LayerNorm 2·H (bloom also normalizes its embeddings: 2·H more; opt-350m has
      no final norm but 512↔1024 projections, 2·E·H).
    - embeddings V·E, learned positions (gpt2: context·H, opt: (context+2)·H), untied head V·H.
    """
    arch = entry.architecture
    if arch not in _GATED | _CLASSIC:
        raise CatalogError(f"entry {entry.name!r}: no parameter-count formula for architecture {arch!r}; "
                           f"known: {', '.join(sorted(_GATED | _CLASSIC))}")
    names = ("vocab_size", "hidden_size", "layers", "intermediate_size", "heads", "kv_heads", "head_dim")
    missing = [n for n in names if getattr(entry, n) is None]
    missing += ["tied_embeddings"] if entry.tied_embeddings is None else []
    if missing:
        raise CatalogError(f"entry {entry.name!r}: counting parameters needs {', '.join(missing)}")
    V, H, L, I, h, k, d = (getattr(entry, n) for n in names)
    E = entry.extras.get("word_embed_proj_dim", H)
    tokens = V * E
    context = entry.context_length or 0
    positions = {"gpt2": context * H, "opt": (context + 2) * H}.get(arch, 0)  # learned position rows
    head = 0 if entry.tied_embeddings else V * H
    if arch in _GATED:
        weights = H * d * (h + 2 * k) + h * d * H + 3 * H * I
        other = (4 if arch in ("gemma2", "gemma3_text") else 2) * H
        other += d * (h + 2 * k) if arch == "qwen2" else 0
        other += 2 * d if arch == "gemma3_text" else 0
        final = H
    else:
        weights, other = 4 * H * H + 2 * H * I, 9 * H + I
        final = {"gpt2": 2 * H, "gpt_neox": 2 * H, "bloom": 4 * H}.get(arch)
        if arch == "opt":
            final = (2 * H if entry.extras.get("final_layer_norm", True) else 0) + (2 * E * H if E != H else 0)
    total = tokens + positions + head + L * (weights + other) + final
    return ParamCounts(total, total - tokens - positions - head, L * weights)


def kv_cache_bytes(entry: CatalogEntry, context: int, batch: int, bytes_per_element: float) -> int:
    """KV-cache size in bytes: 2·layers·kv_heads·head_dim·context·batch·bytes_per_element.

    Full attention in every layer: an upper bound for sliding-window models (Mistral, Gemma 2/3).
    """
    missing = [n for n in ("layers", "kv_heads", "head_dim") if getattr(entry, n) is None]
    if missing:
        raise CatalogError(f"entry {entry.name!r} lacks {', '.join(missing)}: no KV-cache estimate")
    return math.ceil(2 * entry.layers * entry.kv_heads * entry.head_dim * context * batch * bytes_per_element)


# ---------------------------------------------------------------- reading and validating entries

def _check(data, where: str, required) -> CatalogEntry:
    """A CatalogEntry from a mapping, or CatalogError naming `where` and the field."""
    name = data.get("name") if isinstance(data, dict) else None
    label = f"{where} ({name!r})" if isinstance(name, str) else where

    def fail(problem):
        raise CatalogError(f"{label}: {problem}")

    if not isinstance(data, dict):
        fail(f"expected a mapping of facts, got {type(data).__name__}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        fail(f"unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
    for key in required:
        if data.get(key) is None:
            fail(f"field {key!r} is missing")
    for key in _COUNTS:
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            fail(f"field {key!r} must be a positive integer, got {value!r}")
    tokens = data.get("train_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, (int, float))
                               or not math.isfinite(tokens) or tokens <= 0):
        hint = " (YAML 1.1 reads 2e12 as text: write 2.0e+12)" if isinstance(tokens, str) else ""
        fail(f"field 'train_tokens' must be a positive number or null, got {tokens!r}{hint}")
    for key in _TEXTS:
        if data.get(key) is not None and (not isinstance(data[key], str) or not data[key].strip()):
            fail(f"field {key!r} must be non-empty text, got {data[key]!r}")
    if data.get("tied_embeddings") is not None and not isinstance(data["tied_embeddings"], bool):
        fail(f"field 'tied_embeddings' must be true or false, got {data['tied_embeddings']!r}")
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in sources.items()):
        fail("field 'sources' must map each fact to where it comes from (URL, runs:/<id> or note)")
    aliases = data.get("aliases") or []
    if not isinstance(aliases, (list, tuple)) or not all(isinstance(a, str) and a for a in aliases):
        fail(f"field 'aliases' must be a list of names, got {aliases!r}")
    if not isinstance(data.get("extras") or {}, dict):
        fail(f"field 'extras' must be a mapping, got {data['extras']!r}")
    if data["non_embedding_params"] > data["total_params"]:
        fail("non_embedding_params exceeds total_params")
    if data.get("quantized_params") and data["quantized_params"] > data["non_embedding_params"]:
        fail("quantized_params exceeds non_embedding_params")
    if data.get("heads") and data.get("kv_heads") and data["heads"] % data["kv_heads"]:
        fail(f"kv_heads ({data['kv_heads']}) must divide heads ({data['heads']})")
    measured = data.get("measured_fp")
    if measured is not None:
        wanted = {f.name for f in fields(MeasuredFp)}
        numeric = isinstance(measured, dict) and isinstance(measured.get("nll"), (int, float))
        if not (numeric and set(measured) == wanted):
            fail(f"field 'measured_fp' must hold {sorted(wanted)} with a numeric nll, got {measured!r}")
        measured = MeasuredFp(**measured)
    return CatalogEntry(**{**data, "aliases": tuple(aliases), "extras": dict(data.get("extras") or {}),
                           "sources": dict(sources), "measured_fp": measured,
                           "train_tokens": None if tokens is None else float(tokens)})


def _key(text: str) -> str:
    """A match key: lower case, no `.gguf`, no trailing quantization tag (`.Q4_1`, `-q4_k_m`, `-f16`)."""
    text = text.strip().lower().removesuffix(".gguf")
    return re.sub(r"[.\-_](i?q\d\w*|f16|f32|bf16)$", "", text)


def _match_keys(entry: CatalogEntry) -> set[str]:
    keys = {_key(entry.name), *(_key(a) for a in entry.aliases)}
    if entry.hub_id:
        keys |= {_key(entry.hub_id), _key(entry.hub_id.rsplit("/", 1)[-1])}
    return keys


def _unique(entries: list[CatalogEntry], where: str) -> None:
    owner: dict[str, str] = {}
    for i, entry in enumerate(entries, 1):
        for key in sorted(_match_keys(entry)):
            if key in owner and owner[key] != entry.name:
                raise CatalogError(f"{where}: entry {i} ({entry.name!r}): name, hub id or alias {key!r} "
                                   f"already belongs to {owner[key]!r}")
            if key == _key(entry.name) and key in owner:
                raise CatalogError(f"{where}: entry {i} ({entry.name!r}): duplicate name")
            owner[key] = entry.name


def load_seed(path: str | Path | None = None) -> list[CatalogEntry]:
    """The curated seed entries (default: registry/catalog/entries/seed.yaml), validated."""
    import yaml

    path = Path(path) if path else SEED_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CatalogError(f"cannot read catalog seed {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise CatalogError(f"catalog seed {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise CatalogError(f"catalog seed {path} needs a non-empty list under 'models:'")
    entries = [_check(item, f"{path.name}: entry {i}", SEED_REQUIRED) for i, item in enumerate(items, 1)]
    _unique(entries, path.name)
    return entries


def content_digest(entries: list[CatalogEntry]) -> str:
    """sha256 of the entries' facts, independent of their order (hex)."""
    data = sorted((e.to_dict() for e in entries), key=lambda d: d["name"])
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------- grown by sweeps

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


# ---------------------------------------------------------------- versions in the Model Registry

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
    with mlflow.start_run(experiment_id=registry_experiment_id(client), description=description,
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
