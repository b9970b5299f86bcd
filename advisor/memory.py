"""The memory model: budgets as users type them, and the bytes a quantized model needs at run time.

What a candidate is charged against a budget is `MemoryPlan.total` → `runtime_bytes`: the peak
resident bytes of the product's export on a runtime (onnxruntime CPU, measured;
`pipelines.export.runtime_memory`) — weights as held, KV cache at the runtime's dtype for the
context and batch, activations and logits for the context, and the runtime's own overhead as
measured constants. The context defaults to `DEFAULT_CONTEXT`, capped at the model's.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from pipelines.export.runtime_memory import ModelShape, estimate
from pipelines.quantize.formats import Format
from store.errors import InputError

UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
         "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(e[+-]?\d+)?\s*([a-z]+)\s*$", re.IGNORECASE | re.ASCII)


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
    if not (text or "").isascii():  # '８GB' would parse as 8 GB unseen: say what was typed
        plain = unicodedata.normalize("NFKC", text)
        hint = f": did you mean {plain!r}?" if plain.isascii() else ""
        raise BudgetError(f"--memory {text!r} has characters other than ASCII digits and letters{hint}")
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
    vocab_size: int | None = None  # None: derived from the parameters outside the Linears (runtime_bytes)
    tied_embeddings: bool = True
    context_length: int | None = None  # the model's maximum context, tokens

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


DEFAULT_CONTEXT = 4096  # a realistic serving context, tokens (capped at the model's)


def serving_context(arch: Architecture, requested: int | None = None) -> int:
    """`requested` tokens (default `DEFAULT_CONTEXT`), capped at the model's context when it states one."""
    context = DEFAULT_CONTEXT if requested is None else requested
    return min(context, arch.context_length) if arch.context_length else context


def model_shape(arch: Architecture) -> ModelShape:
    """The runtime memory model's view of an architecture. Without a vocabulary size, the token
    embedding is taken as every parameter outside the Linears but the norms (2 per layer + 1)."""
    tables = 1 if arch.tied_embeddings else 2
    norms = (2 * arch.layers + 1) * arch.hidden_size
    vocab = arch.vocab_size or max(0, (arch.total_params - arch.quantized_params - norms)
                                   // (arch.hidden_size * tables))
    rest = max(0, arch.total_params - arch.quantized_params - vocab * arch.hidden_size * tables)
    return ModelShape(layers=arch.layers, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                      heads=arch.heads, kv_heads=arch.kv_heads, head_dim=arch.head_dim, vocab_size=vocab,
                      tied=arch.tied_embeddings, linear_shapes=tuple(sorted(arch.shape_counts.items())),
                      rest_params=rest)


def runtime_bytes(arch: Architecture, fmt: Format | None, context: int, batch: int = 1,
                  runtime: str = "onnxruntime-cpu") -> dict:
    """Peak bytes of the model exported in `fmt` (None: float32 Linears) on `runtime` at `context`
    tokens × `batch`: {total, weights, kv_cache, logits, activations, overhead, stored_bytes, …}.

    Pure arithmetic with measured constants (no torch). `runtime`: one of `RUNTIMES`
    (onnxruntime-cpu, pytorch-cuda-fp16, pytorch-cuda-bf16); PyTorch on CUDA raises
    `RuntimeNotMeasuredError` (an InputError: not measured, no accelerator).
    """
    return estimate(model_shape(arch), fmt, context, batch, runtime)


@dataclass(frozen=True)
class MemoryPlan:
    """What a candidate needs at run time: the runtime memory model at a context and batch.

    `context` None serves each model at `DEFAULT_CONTEXT` tokens capped at its own context; a
    number is taken as asked (a caller skips models whose context is shorter)."""

    context: int | None = None
    batch: int = 1
    runtime: str = "onnxruntime-cpu"

    def context_for(self, arch: Architecture) -> int:
        return serving_context(arch) if self.context is None else self.context

    def holds(self, arch: Architecture) -> bool:
        """False when an asked context exceeds what the model can attend to."""
        return self.context is None or not arch.context_length or self.context <= arch.context_length

    def total(self, arch: Architecture, fmt: Format | None) -> dict:
        """The runtime memory model's parts and `total` (bytes) for `arch` in `fmt` (None: unquantized)."""
        return runtime_bytes(arch, fmt, self.context_for(arch), self.batch, self.runtime)

    def describe(self) -> str:
        """The plan in words, for table headers."""
        tokens = (f"{self.context:,} tokens" if self.context is not None
                  else f"{DEFAULT_CONTEXT:,} tokens (or the model's context if shorter)")
        return f"peak on {self.runtime} at {tokens} × batch {self.batch}"

    def as_dict(self) -> dict:
        return {"runtime": self.runtime, "context": self.context, "default_context": DEFAULT_CONTEXT,
                "batch": self.batch}
