"""Facts derived from a catalog entry's architecture numbers: parameter counts and KV-cache bytes."""

from __future__ import annotations

import math
from typing import NamedTuple

from registry.catalog.architectures import ARCHITECTURES
from registry.catalog.entries import CatalogEntry, CatalogError


class ParamCounts(NamedTuple):
    """Parameter counts in elements: total, non-embedding, and Linear weights inside the blocks."""

    total: int
    non_embedding: int
    quantized: int



_GATED = {"llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3", "gemma2", "gemma3_text"}



_CLASSIC = {"gpt2", "gpt_neox", "bloom", "opt"}



def architecture_param_counts(entry: CatalogEntry) -> ParamCounts:
    """Parameter counts (elements) from the architecture numbers, exact per family (H hidden, I
    intermediate, L layers, V vocab, E token-embedding width, h heads, k KV heads, d head dim):

    - gated (llama, mistral, qwen2, qwen3, olmo2, phi3, gemma2, gemma3_text): per layer
      H·d·(h+2k) + h·d·H + 3·H·I Linear weights, plus RMSNorms (2·H; 4·H for gemma2/3), q/k/v biases
      d·(h+2k) for qwen2, per-head q/k norms 2·d for gemma3 and qwen3, whole-projection q/k norms
      d·(h+k) for olmo2 (its two norms sit after attention and MLP); final norm H.
    - classic (gpt2, gpt_neox, bloom, opt): per layer 4·H² + 2·H·I weights and 9·H + I biases and
      LayerNorms; final LayerNorm 2·H (bloom also normalizes its embeddings: 2·H more; opt-350m has
      no final norm but 512↔1024 projections, 2·E·H).
    - embeddings V·E, learned positions (gpt2: context·H, opt: (context+2)·H), untied head V·H.
    """
    arch = entry.architecture
    if arch not in ARCHITECTURES:
        raise CatalogError(f"entry {entry.name!r}: no parameter-count formula for architecture {arch!r}; "
                           f"known: {', '.join(sorted(ARCHITECTURES))}")
    shape = ARCHITECTURES[arch]
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
    if shape.gated_mlp:
        weights = H * d * (h + 2 * k) + h * d * H + 3 * H * I
        other = shape.norms_per_layer * H
        other += d * (h + 2 * k) if shape.qkv_bias else 0
        other += 2 * d if shape.qk_norm else 0
        other += d * (h + k) if shape.qk_norm_full else 0
        final = H
    else:
        weights, other = 4 * H * H + 2 * H * I, 9 * H + I
        final = {"gpt2": 2 * H, "gpt_neox": 2 * H, "bloom": 4 * H}.get(arch)
        if arch == "opt":
            final = (2 * H if entry.extras.get("final_layer_norm", True) else 0) + (2 * E * H if E != H else 0)
    total = tokens + positions + head + L * (weights + other) + final
    return ParamCounts(total, total - tokens - positions - head, L * weights)


def kv_bytes(layers: int, kv_heads: int, head_dim: int, context: int, batch: int, bytes_per_element: float) -> float:
    """Keys and values of every layer for `batch` sequences of `context` tokens, bytes.

    Full attention in every layer: an upper bound for sliding-window models (Mistral, Gemma 2/3).
    """
    return 2 * layers * kv_heads * head_dim * context * batch * bytes_per_element


def kv_cache_bytes(entry: CatalogEntry, context: int, batch: int, bytes_per_element: float) -> int:
    """KV-cache size of a catalog entry in whole bytes (see `kv_bytes`)."""
    missing = [n for n in ("layers", "kv_heads", "head_dim") if getattr(entry, n) is None]
    if missing:
        raise CatalogError(f"entry {entry.name!r} lacks {', '.join(missing)}: no KV-cache estimate")
    return math.ceil(kv_bytes(entry.layers, entry.kv_heads, entry.head_dim, context, batch, bytes_per_element))
