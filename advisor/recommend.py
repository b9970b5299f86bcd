"""Candidates under a memory budget, their predicted loss, and the pick (no CLI, no torch).

Three kinds of candidate rows:
- measured: a sweep logged the model's variants → RTN (and GPTQ, where measured) loss as measured,
  ranked by it, with the prediction beside it; GPTQ not measured → `ptq-loss-predictor@champion`
  with its conformal interval; bytes as measured.
- published: a catalog model in a format and method a paper or README printed → that ΔNLL, cited.
- prior: any other catalog (model, format, method) → ΔNLL from `ptq-prior@champion` with its
  multiplicative interval (wider when the model's training tokens are unknown); without a
  registered prior, the QiD law (`law`). The fp loss under it: measured, else published (an fp
  perplexity printed next to quantized ones), else the 16-bit law — `fp_source` says which.
Rows are ranked by bits per byte (comparable across tokenizers); nats/token are shown too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from advisor.memory import Architecture, Budget, MemoryPlan
from pipelines.quantize.formats import Format
from registry.catalog.architectures import layout
from registry.predictor.feature_table import ARCHITECTURE_PARAMS

SCHEMA = "ptq-advisor/recommendation/v1"
ASSUMED_BYTES_PER_TOKEN = 4.0  # English BPE text, when a catalog model's tokenizer was never measured
LN2 = math.log(2)
UNQUANTIZED = "fp32"  # the unquantized row: the export's Linears as onnxruntime CPU holds them
ARCHITECTURE_FIELDS = ("total_params", "non_embedding_params", "layers", "hidden_size", "intermediate_size",
                       "heads", "kv_heads", "head_dim")
# config.json model_type → MLP and attention layout (the memory model needs the Linear shapes)


class NothingFits(RuntimeError):
    """No candidate fits the budget (the message names the smallest one)."""


@dataclass
class Row:
    """One candidate: a model in a format by a method, with its size (bytes) and predicted loss."""

    model: str
    format: str
    method: str  # rtn | gptq | none (16-bit)
    bits_per_weight: float
    memory: dict  # the runtime memory model's parts and total (bytes), and the context it was sized at
    nll: float  # predicted NLL, nats/token
    nll_fp: float
    bpb: float  # predicted bits per byte
    source: str  # what produced the loss: measured | published | predictor | prior | law | catalog
    cite: str  # the registered versions / run / publication behind it
    nll_lower: float | None = None
    nll_upper: float | None = None
    measured_nll: float | None = None
    bytes_per_token_assumed: bool = False
    pareto: bool = False
    notes: list = field(default_factory=list)
    spec: str | None = None  # where the weights come from (a swept path / GGUF, or a hub id)
    gguf_file: str | None = None
    fp_source: str = "measured"  # where nll_fp comes from: measured | published | law
    predicted_nll: float | None = None  # the prediction beside a measured or published loss

    @property
    def delta_nll(self) -> float:
        return self.nll - self.nll_fp

    def as_dict(self, budget: Budget) -> dict:
        scale = self.bpb / self.nll if self.nll else 0.0
        return {"model": self.model, "format": self.format, "method": self.method,
                "bits_per_weight": self.bits_per_weight, "bytes": self.memory["total"],
                "size": budget.show(self.memory["total"]), "budget_fraction": self.memory["total"] / budget.bytes,
                "memory": self.memory, "nll": self.nll, "nll_lower": self.nll_lower, "nll_upper": self.nll_upper,
                "nll_fp": self.nll_fp, "delta_nll": self.delta_nll, "bpb": self.bpb,
                "bpb_lower": None if self.nll_lower is None else self.nll_lower * scale,
                "bpb_upper": None if self.nll_upper is None else self.nll_upper * scale,
                "lower": None if self.nll_lower is None else self.nll_lower - self.nll_fp,
                "upper": None if self.nll_upper is None else self.nll_upper - self.nll_fp,
                "measured_nll": self.measured_nll, "predicted_nll": self.predicted_nll,
                "source": self.source, "cite": self.cite, "fp_source": self.fp_source,
                "bytes_per_token_assumed": self.bytes_per_token_assumed, "pareto": self.pareto,
                "notes": self.notes, "spec": self.spec}


def _text(value) -> str | None:
    return value if isinstance(value, str) and value and value != "None" else None


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def measured_rows(table, formats: dict[str, Format], methods, plan: MemoryPlan, predictor) -> list[Row]:
    """Rows for every (swept model, format, method) in `formats`: RTN and GPTQ as measured; a GPTQ
    variant not measured from `predictor` (without one, it is left out: the caller counts it)."""
    rows = []
    table = table[table["format"].isin(formats)]
    if table.empty:
        return rows
    predicted = predictor.predict(table) if predictor is not None and "gptq" in methods else None
    for _, r in table.drop_duplicates("parent_run_id").iterrows():
        arch = measured_architecture(r)
        if arch is not None and plan.holds(arch):
            rows.append(Row(r["model"], UNQUANTIZED, "none", 32.0, plan.total(arch, None), r["nll_fp"], r["nll_fp"],
                            r["bpb_fp"], "measured", f"runs:/{r['parent_run_id']}", measured_nll=r["nll_fp"]))
    for i, (_, r) in enumerate(table.iterrows()):
        fmt = formats[r["format"]]
        arch = measured_architecture(r)
        if arch is None or not plan.holds(arch):
            continue  # an old sweep run without architecture numbers (run-time memory unknown), or too short a context
        memory = plan.total(arch, fmt)
        per_nat = r["bpb_fp"] / r["nll_fp"]  # bits/byte per nat/token: the tokenizer's bytes per token
        if "rtn" in methods:
            rows.append(Row(r["model"], fmt.name, "rtn", fmt.bits_per_weight, memory, r["nll_rtn"], r["nll_fp"],
                            r["nll_rtn"] * per_nat, "measured", f"runs:/{r['rtn_run_id']}",
                            measured_nll=r["nll_rtn"], spec=_text(r.get("model_spec")),
                            gguf_file=_text(r.get("gguf_file"))))
        if "gptq" in methods and predicted is None and _finite(r["nll_gptq"]):  # no predictor: the measurement
            measured = float(r["nll_gptq"])
            rows.append(Row(r["model"], fmt.name, "gptq", fmt.bits_per_weight, memory, measured, r["nll_fp"],
                            measured * per_nat, "measured", f"runs:/{r['gptq_run_id']}", measured_nll=measured,
                            spec=_text(r.get("model_spec")), gguf_file=_text(r.get("gguf_file"))))
        if predicted is not None:
            nll, lower, upper = (float(predicted[c].iloc[i]) for c in ("nll_gptq", "lower", "upper"))
            where = {"spec": _text(r.get("model_spec")), "gguf_file": _text(r.get("gguf_file"))}
            if _finite(r["nll_gptq"]):  # measured: ranked by the measurement, the prediction beside it
                measured = float(r["nll_gptq"])
                rows.append(Row(r["model"], fmt.name, "gptq", fmt.bits_per_weight, memory, measured, r["nll_fp"],
                                measured * per_nat, "measured", f"runs:/{r['gptq_run_id']}", measured_nll=measured,
                                predicted_nll=nll, notes=[f"predicted {nll:.4f} by {predictor.uri}"], **where))
            else:
                rows.append(Row(r["model"], fmt.name, "gptq", fmt.bits_per_weight, memory, nll, r["nll_fp"],
                                nll * per_nat, "predictor", predictor.uri, lower, upper, **where))
    return rows


def architecture_of(entry) -> Architecture:
    """The memory model's view of a catalog entry."""
    shape = layout(entry.architecture)
    return Architecture(layers=entry.layers, hidden_size=entry.hidden_size,
                        intermediate_size=entry.intermediate_size, heads=entry.heads,
                        kv_heads=entry.kv_heads, head_dim=entry.head_dim, total_params=entry.total_params,
                        gated_mlp=shape.gated_mlp, fused_qkv=shape.fused_qkv, vocab_size=entry.vocab_size,
                        tied_embeddings=entry.tied_embeddings is not False, context_length=entry.context_length)


def measured_architecture(r) -> Architecture | None:
    """The memory model's view of a swept model (its parent run's arch.* params); None for runs
    logged before those params (or without a total parameter count)."""
    numbers = [r.get(name) for name in ("total_params", *ARCHITECTURE_PARAMS) if name != "context_length"]
    if not all(_finite(x) for x in numbers):
        return None
    shape = layout(_text(r.get("model_type")) or "llama")
    tied = str(r.get("tied_embeddings")).lower() != "false"
    context = int(r["context_length"]) if _finite(r.get("context_length")) else None
    return Architecture(layers=int(r["layers"]), hidden_size=int(r["hidden_size"]),
                        intermediate_size=int(r["intermediate_size"]), heads=int(r["heads"]),
                        kv_heads=int(r["kv_heads"]), head_dim=int(r["head_dim"]),
                        total_params=int(r["total_params"]), gated_mlp=shape.gated_mlp, fused_qkv=shape.fused_qkv,
                        vocab_size=int(r["vocab_size"]), tied_embeddings=tied, context_length=context)


def _fp_loss(entry, prior, law16) -> tuple[float, str, str] | None:
    """(nll_fp nats/token, fp_source, what to cite): measured, else published, else the 16-bit law."""
    measured = entry.measured_fp
    if measured is not None:
        return float(measured.nll), "measured", f"measured fp loss (runs:/{measured.run_id})"
    published = prior.fp_published(entry.name) if prior is not None else None
    if published is not None:
        return (published["nll"], "published",
                f"fp ppl {published['ppl']:g} on {published['corpus']} ({published['source']})")
    if law16 is not None:
        return law16[0], "law", law16[1]
    return None


def _prior_frame(grid):
    import pandas as pd

    from registry.prior.features import REFERENCE_CORPUS

    return pd.DataFrame({
        "non_embedding_params": [float(g["entry"].non_embedding_params) for g in grid],
        "train_tokens": [float(g["entry"].train_tokens) if _finite(g["entry"].train_tokens) else math.nan
                         for g in grid],
        "method": [g["method"] for g in grid], "sqnr_db": [g["sqnr"] for g in grid],
        "precision": [g["fmt"].precision for g in grid], "format_family": [g["fmt"].family for g in grid],
        "granularity": [g["fmt"].granularity for g in grid], "corpus": REFERENCE_CORPUS})


def _prior_row(g, prior, point, lower, upper, unknown_d) -> Row:
    """A catalog row answered by the prior, or by the published result for exactly this variant."""
    entry, fmt, method, nll_fp = g["entry"], g["fmt"], g["method"], g["nll_fp"]
    common = {"bytes_per_token_assumed": g["assumed"], "spec": entry.hub_id, "fp_source": g["fp_source"]}
    found = prior.published(entry.name, fmt.name, method)
    if found is not None:  # a published measurement, not a prediction: no interval, the prior beside it
        nll = nll_fp + found["delta_nll"]
        return Row(entry.name, fmt.name, method, fmt.bits_per_weight, g["memory"], nll, nll_fp, nll * g["per_nat"],
                   "published", f"{found['source']} ({found['link']}): {found['corpus']} ppl {found['ppl_fp']:g} → "
                   f"{found['ppl_q']:g}" + ("" if found["source"] in g["fp_cite"] else f"; {g['fp_cite']}"),
                   predicted_nll=nll_fp + point,
                   notes=[(f"published ΔNLL {found['delta_nll']:.4f}; {prior.cite} predicts {point:.4f} "
                          f"[{lower:.4f}, {upper:.4f}]")], **common)
    notes = ["training tokens unknown: imputed, wider interval"] if unknown_d else []
    nll = nll_fp + point
    return Row(entry.name, fmt.name, method, fmt.bits_per_weight, g["memory"], nll, nll_fp, nll * g["per_nat"],
               "prior", f"{prior.cite}; {g['fp_cite']}", nll_fp + lower, nll_fp + upper, notes=notes, **common)


def catalog_rows(entries, formats: dict[str, Format], methods, plan: MemoryPlan, qid_law, loss16_law,
                 catalog_cite: str, prior=None) -> tuple[list[Row], list[str]]:
    """Rows for catalog models: published results, else the prior, else the QiD law; ([Row], [why an
    entry or variant got no row]). One prior call and one law call for the whole grid."""
    import pandas as pd

    models, skipped = [], []
    for entry in entries:
        missing = [f for f in ARCHITECTURE_FIELDS if not _finite(getattr(entry, f, None))]
        if missing:
            skipped.append(f"{entry.name}: catalog entry lacks {', '.join(missing)}, so its size is unknown")
        elif plan.context is not None and entry.context_length and plan.context > entry.context_length:
            skipped.append(f"{entry.name}: context {plan.context} exceeds its {entry.context_length} tokens")
        else:
            models.append(entry)
    lawful = [e for e in models if _finite(e.train_tokens) and _finite(e.non_embedding_params)]
    law16 = {}
    if lawful:
        sizes = pd.DataFrame({"N": [float(e.non_embedding_params) for e in lawful],
                              "D": [float(e.train_tokens) for e in lawful]})
        law16 = {e.name: (float(v), loss16_law.cite) for e, v in zip(lawful, loss16_law.predict(sizes)["loss16"])}
    rows, grid = [], []
    for entry in models:
        fp = _fp_loss(entry, prior, law16.get(entry.name))
        if fp is None:
            skipped.append(f"{entry.name}: no fp loss: not measured, none published, and no training tokens "
                           "for the 16-bit law")
            continue
        nll_fp, fp_source, fp_cite = fp
        measured = entry.measured_fp
        if measured is not None and _finite(measured.bpb):
            per_nat, assumed = measured.bpb / measured.nll, False
        else:
            per_nat, assumed = 1 / (LN2 * ASSUMED_BYTES_PER_TOKEN), True
        arch = architecture_of(entry)
        rows.append(Row(entry.name, UNQUANTIZED, "none", 32.0, plan.total(arch, None),
                        nll_fp, nll_fp, nll_fp * per_nat, "catalog", f"{catalog_cite}; {fp_cite}",
                        bytes_per_token_assumed=assumed, fp_source=fp_source))
        if prior is None and not _finite(entry.train_tokens):
            skipped.append(f"{entry.name}: training tokens unknown, so no QiD prediction for its formats")
            continue
        for fmt in formats.values():
            memory = plan.total(arch, fmt)  # one figure for every method: the export holds the same bytes
            sqnr = prior.sqnr_db(fmt.as_dict()) if prior is not None else math.nan
            for method in methods:
                grid.append({"entry": entry, "fmt": fmt, "method": method, "nll_fp": nll_fp, "fp_source": fp_source,
                             "fp_cite": fp_cite, "per_nat": per_nat, "assumed": assumed, "memory": memory,
                             "sqnr": sqnr})
    law_grid = grid
    if prior is not None and grid:
        answer = [g for g in grid if _finite(g["sqnr"])]
        if answer:
            predicted = prior.predict(_prior_frame(answer))
            for g, (_, p) in zip(answer, predicted.iterrows()):
                rows.append(_prior_row(g, prior, p["delta_nll"], p["lower"], p["upper"], bool(p["unknown_d"])))
        outside = [g for g in grid if not _finite(g["sqnr"])]
        law_grid = [g for g in outside if _finite(g["entry"].train_tokens)]
        skipped += [f"{g['entry'].name} · {g['fmt'].name}: outside the prior's SQNR table and no training tokens "
                    "for the QiD law" for g in outside if not _finite(g["entry"].train_tokens)]
    if law_grid:
        frame = pd.DataFrame({"N": [float(g["entry"].non_embedding_params) for g in law_grid],
                              "D": [float(g["entry"].train_tokens) for g in law_grid],
                              "P": [float(g["fmt"].precision) for g in law_grid],
                              "method": [g["method"] for g in law_grid],
                              "family": [g["fmt"].family for g in law_grid]})
        law = qid_law.predict(frame)
        for g, delta, key in zip(law_grid, law["delta_nll"], law["law_key"]):
            nll = g["nll_fp"] + float(delta)
            notes = ["format outside the prior's SQNR table"] if prior is not None else []
            rows.append(Row(g["entry"].name, g["fmt"].name, g["method"], g["fmt"].bits_per_weight, g["memory"], nll,
                            g["nll_fp"], nll * g["per_nat"], "law", f"{qid_law.cite} ({key}); {g['fp_cite']}",
                            bytes_per_token_assumed=g["assumed"], spec=g["entry"].hub_id, fp_source=g["fp_source"],
                            notes=notes))
    return rows, skipped


def mark_pareto(rows: list[Row]) -> None:
    """Flag rows no other row beats on both bytes and bits/byte (the loss-vs-size frontier)."""
    best = math.inf
    for row in sorted(rows, key=lambda r: (r.memory["total"], r.bpb)):
        row.pareto = row.bpb < best
        best = min(best, row.bpb)


def choose(rows: list[Row], budget: Budget, max_delta_nll: float | None = None) -> list[Row]:
    """Rows within the budget (and ΔNLL limit), best predicted bits/byte first."""
    if not rows:
        raise NothingFits("there are no candidates: check --models / --formats, or seed the store")
    fitting = [r for r in rows if r.memory["total"] <= budget.bytes
               and (max_delta_nll is None or r.delta_nll <= max_delta_nll)]
    if not fitting:
        small = min(rows, key=lambda r: r.memory["total"])
        limit = f" with ΔNLL ≤ {max_delta_nll}" if max_delta_nll is not None else ""
        raise NothingFits(f"no candidate fits {budget.text}{limit}: the smallest is {small.model} · "
                          f"{small.format} · {small.method} at {budget.show(small.memory['total'])} "
                          f"({small.memory['total']:.0f} bytes)")
    # equal loss and size (e.g. RTN and GPTQ published alike): the lower prediction first
    return sorted(fitting, key=lambda r: (r.bpb, r.memory["total"],
                                          r.nll if r.predicted_nll is None else r.predicted_nll))
