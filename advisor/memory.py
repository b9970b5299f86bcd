"""The memory model: budgets as users type them, and the bytes a quantized model needs.

bytes = quantized Linear weights in the format (elements + every block/group/channel scale,
exactly as `Format.storage_bytes` counts them) + every other parameter (embeddings, untied
output layer, norms, biases) at 16 bits + optional KV cache
(2 · layers · kv_heads · head_dim · context · batch · bytes per element) + a stated runtime
overhead (a fraction of the weights, for activations and allocator slack).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from pipelines.quantize.formats import Format
from registry.catalog.params import kv_bytes
from store.errors import InputError

UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
         "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?\s*([a-z]+)\s*$", re.IGNORECASE)
REST_BITS = 16  # unquantized parameters at the deployment dtype


class BudgetError(InputError):
    """A memory size that cannot be understood."""


@dataclass(frozen=True)
class Budget:
    """A memory budget: its size in bytes and the unit the user typed (for display)."""

    bytes: int
    unit: str
    text: str

    def show(self, n_bytes: float) -> str:
        """`n_bytes` in the user's unit, e.g. '7.52 GB'."""
        return f"{n_bytes / UNITS[self.unit.lower()]:.3g} {self.unit}"


def parse_memory(text: str) -> Budget:
    """'8GB' → 8·10⁹ bytes, '8GiB' → 8·2³⁰; case-insensitive, decimals allowed ('7.5G', '512MB')."""
    match = _SIZE.match(text or "")
    if not match:
        raise BudgetError(f"--memory {text!r} is not a size: write a positive number and a unit, "
                          "e.g. 8GB (10^9 bytes), 6GiB (2^30), 512MB")
    number, exponent, unit = match.groups()
    if unit.lower() not in UNITS:
        raise BudgetError(f"--memory {text!r}: unknown unit {unit!r} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    value = float(number + (exponent or "")) * UNITS[unit.lower()]
    if not math.isfinite(value) or value >= 2**63:
        raise BudgetError(f"--memory {text!r} is too large to be a memory size")
    if value < 1:
        raise BudgetError(f"--memory {text!r} must be at least one byte")
    display = {"k": "KB", "m": "MB", "g": "GB", "t": "TB", "ki": "KiB", "mi": "MiB", "gi": "GiB",
               "ti": "TiB"}.get(unit.lower(), unit)
    return Budget(int(value), display, text)


@dataclass(frozen=True)
class Architecture:
    """What the memory model needs of a model: widths (elements), counts, context (tokens)."""

    layers: int
    hidden_size: int
    intermediate_size: int
    heads: int
    kv_heads: int
    head_dim: int
    total_params: int
    gated_mlp: bool = True  # Llama-style gate/up/down; GPT-2, OPT, BLOOM, Pythia have up/down
    fused_qkv: bool = False  # one [q+k+v, hidden] tensor (GPT-2, BLOOM, Pythia): matters for tensor scales

    def linear_shapes(self) -> list[tuple[int, int]]:
        """[out, in] of every decoder Linear (attention q, k, v, o and the MLP), all layers."""
        h, attn, kv, i = self.hidden_size, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate_size
        qkv = [(attn + 2 * kv, h)] if self.fused_qkv else [(attn, h), (kv, h), (kv, h)]
        layer = qkv + [(h, attn)] + [(i, h)] * (2 if self.gated_mlp else 1) + [(h, i)]
        return layer * self.layers

    @cached_property
    def shape_counts(self) -> dict[tuple[int, int], int]:
        """{[out, in]: how many decoder Linears have that shape} — a handful of distinct shapes."""
        return dict(Counter(self.linear_shapes()))

    @cached_property
    def quantized_params(self) -> int:
        """Elements in the decoder Linears (what a format quantizes; Xu et al.'s D)."""
        return sum(o * i * n for (o, i), n in self.shape_counts.items())


def quantized_weight_bytes(shapes, fmt: Format, container: bool = False) -> float:
    """Bytes of Linear weights [out, in] in `fmt` with every scale; `container`: as exported to ONNX."""
    counts = shapes if isinstance(shapes, dict) else Counter(shapes)
    return sum(fmt.storage_bytes(o, i, container) * n for (o, i), n in counts.items())


def weight_bytes(arch: Architecture, fmt: Format | None, container: bool = False) -> float:
    """Quantized Linears (with scales) + other parameters at 16 bits; fmt None = all 16-bit."""
    if fmt is None:
        return arch.total_params * REST_BITS / 8
    quantized = quantized_weight_bytes(arch.shape_counts, fmt, container)
    return quantized + (arch.total_params - arch.quantized_params) * REST_BITS / 8


@dataclass(frozen=True)
class MemoryPlan:
    """What counts towards the budget besides the weights."""

    context: int = 0  # tokens of KV cache per sequence; 0 = weights only
    batch: int = 1
    kv_bits: int = 16
    overhead: float = 0.05  # fraction of the weight bytes

    def total(self, weights: float, layers: int, kv_heads: int, head_dim: int) -> dict:
        """{weights, kv_cache, overhead, total} in bytes."""
        kv = kv_bytes(layers, kv_heads, head_dim, self.context, self.batch, self.kv_bits / 8) if self.context else 0.0
        extra = weights * self.overhead
        return {"weights": weights, "kv_cache": kv, "overhead": extra, "total": weights + kv + extra}
