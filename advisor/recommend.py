"""Candidates under a memory budget, their predicted loss, and the pick (no CLI, no torch).

Two kinds of candidate rows (DESIGN: "two predictors, one answer"):
- measured: a sweep logged the model's RTN features → RTN loss as measured, GPTQ loss from
  `ptq-loss-predictor@champion` with its conformal interval; bytes as measured.
- catalog-only: only N, D and the architecture are known → fp loss (measured, else the 16-bit
  law) + ΔqLoss from the QiD law; bytes from the memory model. Coarser, and labelled so.
Rows are ranked by bits per byte (comparable across tokenizers); nats/token are shown too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from advisor.memory import Architecture, Budget, MemoryPlan, weight_bytes
from pipelines.quantize.formats import Format
from registry.catalog.architectures import layout

SCHEMA = "ptq-advisor/recommendation/v1"
ASSUMED_BYTES_PER_TOKEN = 4.0  # English BPE text, when a catalog model's tokenizer was never measured
LN2 = math.log(2)
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
    memory: dict  # weights, kv_cache, overhead, total (bytes)
    nll: float  # predicted NLL, nats/token
    nll_fp: float
    bpb: float  # predicted bits per byte
    source: str  # what produced the loss: measured | predictor | law
    cite: str  # the registered versions / run behind it
    nll_lower: float | None = None
    nll_upper: float | None = None
    measured_nll: float | None = None
    bytes_per_token_assumed: bool = False
    pareto: bool = False
    notes: list = field(default_factory=list)
    spec: str | None = None  # where the weights come from (a swept path / GGUF, or a hub id)
    gguf_file: str | None = None

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
                "measured_nll": self.measured_nll, "source": self.source, "cite": self.cite,
                "bytes_per_token_assumed": self.bytes_per_token_assumed, "pareto": self.pareto,
                "notes": self.notes, "spec": self.spec}


def _text(value) -> str | None:
    return value if isinstance(value, str) and value and value != "None" else None


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def measured_rows(table, formats: dict[str, Format], methods, plan: MemoryPlan, predictor) -> list[Row]:
    """Rows for every (swept model, format, method) in `formats`; GPTQ loss from `predictor`."""
    rows = []
    table = table[table["format"].isin(formats)]
    if table.empty:
        return rows
    predicted = predictor.predict(table) if predictor is not None and "gptq" in methods else None
    for _, r in table.drop_duplicates("parent_run_id").iterrows():
        kv = [r.get("layers"), r.get("kv_heads"), r.get("head_dim")]
        if _finite(r.get("total_params")) and (not plan.context or all(_finite(x) for x in kv)):
            memory = plan.total(float(r["total_params"]) * 2, *[int(x) if _finite(x) else 0 for x in kv])
            rows.append(Row(r["model"], "fp16", "none", 16.0, memory, r["nll_fp"], r["nll_fp"], r["bpb_fp"],
                            "measured", f"runs:/{r['parent_run_id']}", measured_nll=r["nll_fp"]))
    for i, (_, r) in enumerate(table.iterrows()):
        fmt = formats[r["format"]]
        kv = [r.get("layers"), r.get("kv_heads"), r.get("head_dim")]
        if plan.context and not all(_finite(x) for x in kv):
            continue  # an old sweep run without architecture numbers: no KV-cache estimate possible
        memory = plan.total(float(r["bytes"]), *[int(x) if _finite(x) else 0 for x in kv])
        per_nat = r["bpb_fp"] / r["nll_fp"]  # bits/byte per nat/token: the tokenizer's bytes per token
        if "rtn" in methods:
            rows.append(Row(r["model"], fmt.name, "rtn", fmt.bits_per_weight, memory, r["nll_rtn"], r["nll_fp"],
                            r["nll_rtn"] * per_nat, "measured", f"runs:/{r['rtn_run_id']}",
                            measured_nll=r["nll_rtn"], spec=_text(r.get("model_spec")),
                            gguf_file=_text(r.get("gguf_file"))))
        if predicted is not None:
            nll, lower, upper = (float(predicted[c].iloc[i]) for c in ("nll_gptq", "lower", "upper"))
            measured = r["nll_gptq"] if _finite(r["nll_gptq"]) else None
            rows.append(Row(r["model"], fmt.name, "gptq", fmt.bits_per_weight, memory, nll, r["nll_fp"],
                            nll * per_nat, "predictor", predictor.uri, lower, upper, measured,
                            spec=_text(r.get("model_spec")), gguf_file=_text(r.get("gguf_file"))))
    return rows


def architecture_of(entry) -> Architecture:
    """The memory model's view of a catalog entry."""
    shape = layout(entry.architecture)
    return Architecture(layers=entry.layers, hidden_size=entry.hidden_size,
                        intermediate_size=entry.intermediate_size, heads=entry.heads,
                        kv_heads=entry.kv_heads, head_dim=entry.head_dim, total_params=entry.total_params,
                        gated_mlp=shape.gated_mlp, fused_qkv=shape.fused_qkv)


def catalog_rows(entries, formats: dict[str, Format], methods, plan: MemoryPlan, qid_law, loss16_law,
                 catalog_cite: str) -> tuple[list[Row], list[str]]:
    """Rows for catalog models from the laws; ([Row], [why an entry was skipped]). One law call each."""
    import pandas as pd

    models, skipped = [], []
    for entry in entries:
        missing = [f for f in ARCHITECTURE_FIELDS if not _finite(getattr(entry, f, None))]
        if missing:
            skipped.append(f"{entry.name}: catalog entry lacks {', '.join(missing)}, so its size is unknown")
        elif plan.context and entry.context_length and plan.context > entry.context_length:
            skipped.append(f"{entry.name}: context {plan.context} exceeds its {entry.context_length} tokens")
        elif entry.measured_fp is not None or (_finite(entry.train_tokens) and _finite(entry.non_embedding_params)):
            models.append(entry)
        else:
            skipped.append(f"{entry.name}: no measured fp loss and no training tokens for the 16-bit law")
    if not models:
        return [], skipped
    sizes = pd.DataFrame({"N": [float(e.non_embedding_params) for e in models],
                          "D": [float(e.train_tokens) if _finite(e.train_tokens) else 1.0 for e in models]})
    law16 = loss16_law.predict(sizes)["loss16"].to_numpy()
    rows, grid = [], []
    for entry, predicted_fp in zip(models, law16):
        measured = entry.measured_fp
        if measured is not None:
            nll_fp, fp_source = float(measured.nll), f"measured fp loss (runs:/{measured.run_id})"
        else:
            nll_fp, fp_source = float(predicted_fp), loss16_law.cite
        if measured is not None and _finite(measured.bpb):
            per_nat, assumed = measured.bpb / measured.nll, False
        else:
            per_nat, assumed = 1 / (LN2 * ASSUMED_BYTES_PER_TOKEN), True
        arch, kv = architecture_of(entry), (entry.layers, entry.kv_heads, entry.head_dim)
        rows.append(Row(entry.name, "fp16", "none", 16.0, plan.total(weight_bytes(arch, None), *kv),
                        nll_fp, nll_fp, nll_fp * per_nat, "catalog", f"{catalog_cite}; {fp_source}",
                        bytes_per_token_assumed=assumed))
        if not _finite(entry.train_tokens):
            skipped.append(f"{entry.name}: training tokens unknown, so no QiD prediction for its formats")
            continue
        for fmt in formats.values():
            for method in methods:
                grid.append((entry, fmt, method, nll_fp, fp_source, per_nat, assumed,
                             plan.total(weight_bytes(arch, fmt), *kv)))
    if grid:
        frame = pd.DataFrame({"N": [float(g[0].non_embedding_params) for g in grid],
                              "D": [float(g[0].train_tokens) for g in grid],
                              "P": [float(g[1].precision) for g in grid], "method": [g[2] for g in grid],
                              "family": [g[1].family for g in grid]})
        law = qid_law.predict(frame)
        for (entry, fmt, method, nll_fp, fp_source, per_nat, assumed, memory), delta, key in zip(
                grid, law["delta_nll"], law["law_key"]):
            nll = nll_fp + float(delta)
            rows.append(Row(entry.name, fmt.name, method, fmt.bits_per_weight, memory, nll, nll_fp,
                            nll * per_nat, "law", f"{qid_law.cite} ({key}); {fp_source}",
                            bytes_per_token_assumed=assumed, spec=entry.hub_id))
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
    return sorted(fitting, key=lambda r: (r.bpb, r.memory["total"]))
