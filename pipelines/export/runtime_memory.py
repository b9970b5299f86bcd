"""The runtime memory model: the peak resident bytes a deployed model needs, per runtime.

For the product's export on onnxruntime's CPU provider (`onnxruntime-cpu`) the peak of a
generator at `context` tokens — a prefill of context − 1 tokens, then a decode step — is

    weights      as onnxruntime holds them after session start (`ort_layout`: packed codes, float32
                 scales, the float16 table + the float32 output layer, other parameters float32)
  + overhead     onnxruntime's own (session state, the graph's nodes and kernels, allocator, thread
                 pools) and what the heap keeps of the 4-bit weights MLAS prepacked (their freed
                 originals): a base + a fraction of those weights — measured constants, not a percentage
  + kv_cache     2 · layers · batch · kv_heads · head_dim · context · 4 bytes (the export's KV is float32)
  + logits       batch · (context − 1) · vocab · 4 bytes (the prefill returns every position's logits)
  + activations  the attention score buffers (batch · heads · context² · 4 bytes each) and token
                 buffers (batch · context · (hidden + intermediate) · 4 bytes each) its arena holds at
                 the peak — measured multipliers — plus the float32 copies of one layer's weights that
                 unpacked (2-/8-bit) kernels allocate per call.
  − logits_reused  onnxruntime's arena keeps freed chunks and coalesces neighbours: when the logits
                 fit in the space of `reused_buffers` freed score buffers they take it and add nothing
                 (measured on SmolLM2: from ~1800 tokens on; Gemma-3's 262k-word logits never fit).
At session start the output layer is folded to float32 before MLAS packs it (`load_transient`);
the peak is the larger of that and the prefill.

The constants in `ORT_CPU` are fitted by `bench/runtime_memory.py --fit` on peaks measured at
contexts the benchmark does not judge (`fit_rows` of bench/runtime-memory.json); the benchmark's
rows report the error at the others. onnxruntime's arena keeps what it grew to, so the activation
term is an envelope, not a trace: see bench/RESULTS.md for where it misses.

PyTorch on CUDA (fp16/bf16) is a placeholder: not measured, because no accelerator was available.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.export.ort_layout import (
    FLOAT32,
    embedding_file_bytes,
    embedding_resident_bytes,
    linear_layout,
)
from store.errors import InputError

RUNTIMES = ("onnxruntime-cpu", "pytorch-cuda-fp16", "pytorch-cuda-bf16")
NOT_MEASURED = {"pytorch-cuda-fp16": "not measured: no accelerator", "pytorch-cuda-bf16": "not measured: no accelerator"}


class RuntimeNotMeasuredError(InputError):
    """A runtime whose memory model has no measured constants yet."""


@dataclass(frozen=True)
class OrtCpuConstants:
    """onnxruntime CPU's measured constants (fitted by `bench/runtime_memory.py --fit` on its fit_rows)."""

    base_bytes: float  # session state, the graph's nodes and kernels, arena and thread pools
    packed_residue: float  # × the bytes of weights MLAS prepacks: their freed originals the heap keeps
    attention_buffers: float  # [batch, heads, context, context] float32 buffers the prefill's arena holds
    token_buffers: float  # [batch, context, hidden + intermediate] float32 buffers it holds besides
    reused_buffers: float  # logits up to this many attention buffers reuse their freed space


ORT_CPU = OrtCpuConstants(base_bytes=50e6, packed_residue=0.35, attention_buffers=4.85, token_buffers=3.2,
                          reused_buffers=3.0)


@dataclass(frozen=True)
class ModelShape:
    """What the runtime memory model needs of a model (widths in elements, counts)."""

    layers: int
    hidden_size: int
    intermediate_size: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    tied: bool
    linear_shapes: tuple  # ((out, in), count) of every quantized Linear
    rest_params: int  # parameters neither in those Linears nor the token embedding / output layer


def _linear_bytes(shape: ModelShape, fmt, resident: bool) -> int:
    if fmt is None:  # unquantized: float32 MatMul weights (MLAS packs them once, same size)
        return sum(o * i * n for (o, i), n in shape.linear_shapes) * FLOAT32
    layout = linear_layout(fmt)
    count = layout.resident_bytes if resident else layout.file_bytes
    return sum(count(o, i, fmt) * n for (o, i), n in shape.linear_shapes)


def stored_bytes(shape: ModelShape, fmt) -> int:
    """model.onnx's weights: quantized Linears as laid out, 16-bit embeddings once, the rest float32."""
    linears = _linear_bytes(shape, fmt, resident=False)
    return linears + embedding_file_bytes(shape.vocab_size, shape.hidden_size, shape.tied) + shape.rest_params * FLOAT32


def resident_weight_bytes(shape: ModelShape, fmt) -> int:
    """The weights as onnxruntime holds them after session start (fmt None: float32 Linears)."""
    linears = _linear_bytes(shape, fmt, resident=True)
    return (linears + embedding_resident_bytes(shape.vocab_size, shape.hidden_size, shape.tied)
            + shape.rest_params * FLOAT32)


def kv_cache_bytes(shape: ModelShape, context: int, batch: int = 1, bytes_per_element: int = FLOAT32) -> int:
    """Keys and values of every layer for `context` tokens of `batch` sequences."""
    return 2 * shape.layers * batch * shape.kv_heads * shape.head_dim * context * bytes_per_element


def prepacked_bytes(shape: ModelShape, fmt) -> int:
    """Bytes of the quantized weights MLAS prepacks at session start (4-bit MatMulNBits codes)."""
    if fmt is None:
        return 0
    layout = linear_layout(fmt)
    return sum(layout.resident_bytes(o, i, fmt) * n for (o, i), n in shape.linear_shapes if layout.packed(i))


def one_layer_call_bytes(shape: ModelShape, fmt) -> int:
    """The float32 copies of one layer's weights that unpacked kernels allocate per call (arena-held)."""
    if fmt is None:
        return 0
    layout = linear_layout(fmt)
    return sum(layout.call_bytes(o, i) * n // shape.layers for (o, i), n in shape.linear_shapes)


def parts(shape: ModelShape, fmt, context: int, batch: int = 1, constants: OrtCpuConstants | None = None) -> dict:
    """Every term of the onnxruntime-cpu estimate, bytes (`estimate` adds them up)."""
    c = constants or ORT_CPU
    tokens = batch * context
    attention = batch * shape.heads * context * context * FLOAT32  # one score buffer
    logits = batch * max(1, context - 1) * shape.vocab_size * FLOAT32
    return {"weights": resident_weight_bytes(shape, fmt),
            "overhead": c.base_bytes + c.packed_residue * prepacked_bytes(shape, fmt),
            "kv_cache": kv_cache_bytes(shape, context, batch),
            "logits": logits,
            # the arena's free attention space holds the logits when they fit (then they add nothing)
            "logits_reused": logits if logits <= c.reused_buffers * attention else 0,
            "activations": c.attention_buffers * attention
            + c.token_buffers * tokens * (shape.hidden_size + shape.intermediate_size) * FLOAT32
            + one_layer_call_bytes(shape, fmt),
            # session start: the output layer is folded to float32 before it is packed, both alive
            "load_transient": shape.vocab_size * shape.hidden_size * FLOAT32}


def estimate(shape: ModelShape, fmt, context: int, batch: int = 1, runtime: str = "onnxruntime-cpu",
             constants: OrtCpuConstants | None = None) -> dict:
    """Peak bytes of `shape` in `fmt` on `runtime` at `context` tokens × `batch`, and its parts
    (`constants`: onnxruntime CPU's, default `ORT_CPU`)."""
    if runtime in NOT_MEASURED:
        raise RuntimeNotMeasuredError(f"{runtime}: {NOT_MEASURED[runtime]} — its memory model has no measured "
                                      "constants yet; use onnxruntime-cpu")
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    p = parts(shape, fmt, context, batch, constants)
    held = p["weights"] + p["overhead"]
    run_peak = held + p["kv_cache"] + p["logits"] - p["logits_reused"] + p["activations"]
    load_peak = held + p["load_transient"]
    return {"runtime": runtime, "context": context, "batch": batch, "stored_bytes": int(stored_bytes(shape, fmt)),
            **{k: int(v) for k, v in p.items()}, "load_peak": int(load_peak), "total": int(max(run_peak, load_peak)),
            "peak_at": "prefill" if run_peak >= load_peak else "session start"}
