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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from store.errors import InputError

CATALOG = "ptq-candidate-catalog"
CURRENT = "current"
SEED_PATH = Path(__file__).with_name("seed.yaml")
class CatalogError(InputError):
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

# ---------------------------------------------------------------- versions in the Model Registry

