"""The one table of architecture layouts (config.json's model_type): what a formula needs to know.

Parameter counts (registry/catalog/params.py) and the memory model's Linear shapes
(advisor/memory.py) both read it, so a new architecture is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """How one architecture lays out a decoder block."""

    gated_mlp: bool  # gate/up/down (Llama-style) rather than up/down
    fused_qkv: bool  # one [q+k+v, hidden] tensor: matters for per-tensor scales
    norms_per_layer: int = 2  # RMS/LayerNorms per block (gemma2/3: 4)
    qkv_bias: bool = False  # qwen2
    qk_norm: bool = False  # gemma3, qwen3: per-head q/k RMSNorms (2·head_dim weights)
    qk_norm_full: bool = False  # olmo2: q/k RMSNorms over the whole projection ((heads + kv_heads)·head_dim)


ARCHITECTURES = {
    "llama": Layout(gated_mlp=True, fused_qkv=False),
    "mistral": Layout(gated_mlp=True, fused_qkv=False),
    "smollm3": Layout(gated_mlp=True, fused_qkv=False),  # Llama blocks; some layers skip RoPE (NoPE)
    "qwen2": Layout(gated_mlp=True, fused_qkv=False, qkv_bias=True),
    "qwen3": Layout(gated_mlp=True, fused_qkv=False, qk_norm=True),
    "olmo2": Layout(gated_mlp=True, fused_qkv=False, qk_norm_full=True),
    "phi3": Layout(gated_mlp=True, fused_qkv=True),
    "gemma2": Layout(gated_mlp=True, fused_qkv=False, norms_per_layer=4),
    "gemma3_text": Layout(gated_mlp=True, fused_qkv=False, norms_per_layer=4, qk_norm=True),
    "gpt2": Layout(gated_mlp=False, fused_qkv=True),
    "gpt_neox": Layout(gated_mlp=False, fused_qkv=True),
    "bloom": Layout(gated_mlp=False, fused_qkv=True),
    "opt": Layout(gated_mlp=False, fused_qkv=False),
}


def layout(model_type: str | None) -> Layout:
    """The layout of `model_type` (unknown or missing: Llama's, the common modern one)."""
    return ARCHITECTURES.get((model_type or "llama").lower(), ARCHITECTURES["llama"])
