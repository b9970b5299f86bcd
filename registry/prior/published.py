"""Published quantization results as versioned data: `registry/data/published-results.yaml`.

One row per (model, method, format, corpus) as printed in a paper, README or maintainer thread:
the fp and quantized perplexities, the evaluation corpus and window, and the source with its
link. The derived quantity is ΔNLL = ln(ppl_q / ppl_fp) in nats/token (perplexity is exp of the
mean NLL, so the ratio of perplexities is the difference of NLLs). Rows are validated on loading:
the format string parses in the product's grammar, perplexities are positive, every model is a
catalog model or listed in the file's `models:` section (with the facts the prior needs).

The data version is a hash of the validated content, like `registry/measured_data.py`: equal
data, equal version; a fit cites it. The format grammar lives in `pipelines` (which this layer
must not import): the caller passes `describe`, a function from a format string to its facts
(advisor passes `pipelines.quantize.formats.parse_format(...).as_dict`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from store.errors import InputError

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "data" / "published-results.yaml"
SCHEMA = 1
METHODS = ("rtn", "gptq", "awq", "omniquant", "quip#", "spqr", "aqlm", "k-quant", "other")
ROW_FIELDS = {"model", "method", "format", "format_note", "corpus", "seq_len", "ppl_fp", "ppl_q",
              "source", "link", "catalog"}
MODEL_FIELDS = {"name", "family", "architecture", "layers", "hidden_size", "intermediate_size", "heads",
                "kv_heads", "head_dim", "vocab_size", "tied_embeddings", "context_length", "train_tokens",
                "sources", "notes"}
ARCHITECTURE_NUMBERS = ("layers", "hidden_size", "intermediate_size", "heads", "kv_heads", "head_dim",
                        "vocab_size")


class PublishedDataError(InputError):
    """A published-results file or row that cannot be used; the message names the row and field."""


@dataclass(frozen=True)
class PublishedData:
    """The validated file: rows (dicts, with `delta_nll`), listed models (name → facts), version."""

    rows: tuple
    models: dict
    data_version: str
    path: str


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_row(row, i: int, describe, known) -> dict:
    where = f"published row {i}" + (f" ({row.get('model')!r})" if isinstance(row, dict) else "")

    def fail(problem):
        raise PublishedDataError(f"{where}: {problem}")

    if not isinstance(row, dict):
        fail(f"expected a mapping, got {type(row).__name__}")
    unknown = sorted(set(row) - ROW_FIELDS)
    if unknown:
        fail(f"unknown field(s) {unknown}; allowed: {sorted(ROW_FIELDS)}")
    for key in ("model", "method", "source", "link"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            fail(f"field {key!r} must be non-empty text")
    if row["method"] not in METHODS:
        fail(f"method {row['method']!r} is not one of {', '.join(METHODS)}")
    for key in ("ppl_fp", "ppl_q"):
        if not _positive(row.get(key)):
            hint = " (YAML 1.1 reads 1.3e3 as text: write 1.3e+3)" if isinstance(row.get(key), str) else ""
            fail(f"{key} must be a positive number, got {row.get(key)!r}{hint}")
    facts = None
    if row.get("format") is not None:
        try:
            facts = describe(row["format"])
        except InputError as err:
            fail(f"format {row['format']!r} does not parse: {err}")
    if known is not None and row["model"] not in known:
        fail(f"model {row['model']!r} is neither a catalog model nor listed under `models:`")
    return {**row, "format_facts": facts, "delta_nll": math.log(row["ppl_q"] / row["ppl_fp"])}


def _check_model(model, i: int) -> dict:
    name = model.get("name") if isinstance(model, dict) else None
    where = f"published models entry {i}" + (f" ({name!r})" if name else "")
    if not isinstance(model, dict) or not isinstance(name, str) or not name.strip():
        raise PublishedDataError(f"{where}: needs a name")
    unknown = sorted(set(model) - MODEL_FIELDS)
    if unknown:
        raise PublishedDataError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(MODEL_FIELDS)}")
    if not isinstance(model.get("family"), str) or not isinstance(model.get("sources"), dict):
        raise PublishedDataError(f"{where}: needs a family and sources")
    numbers = [model.get(k) for k in ARCHITECTURE_NUMBERS]
    if any(v is not None for v in numbers) and not all(_positive(v) and float(v).is_integer() for v in numbers):
        raise PublishedDataError(f"{where}: architecture numbers {ARCHITECTURE_NUMBERS} must all be positive "
                                 "integers, or all left out")
    tokens = model.get("train_tokens")
    if tokens is not None and not _positive(tokens):
        raise PublishedDataError(f"{where}: train_tokens must be a positive number or null, got {tokens!r}")
    return dict(model)


def content_version(rows, models) -> str:
    """sha256 (12 hex) of the canonical JSON of rows and listed models: equal data, equal version."""
    body = json.dumps({"rows": list(rows), "models": models}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def load_published(describe, catalog_names=None, path: str | Path = DEFAULT_FILE) -> PublishedData:
    """The published-results file, every row validated; `catalog_names` None skips the model check."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PublishedDataError(f"no published-results file at {path}") from None
    except yaml.YAMLError as err:
        raise PublishedDataError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("rows"), list):
        raise PublishedDataError(f"{path}: expected `schema: {SCHEMA}` and a list under `rows:`")
    listed = {}
    for i, model in enumerate(data.get("models") or [], 1):
        entry = _check_model(model, i)
        if entry["name"] in listed:
            raise PublishedDataError(f"published models entry {i}: {entry['name']!r} is listed twice")
        listed[entry["name"]] = entry
    overlap = sorted(set(listed) & set(catalog_names or ()))
    if overlap:
        raise PublishedDataError(f"{path}: {overlap[0]!r} is a catalog model: take it out of `models:`")
    known = None if catalog_names is None else set(catalog_names) | set(listed)
    rows = tuple(_check_row(row, i, describe, known) for i, row in enumerate(data["rows"], 1))
    return PublishedData(rows, listed, content_version(data["rows"], listed), str(path))
