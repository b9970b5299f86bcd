"""The architecture numbers of a loaded causal LM that a memory model needs (KV cache, parameters)."""

from __future__ import annotations

from pipelines.measure.evaluate_formats import model_context
from pipelines.quantize.rtn import count_params

# transformers spells the same quantity differently per architecture (Llama vs GPT-2 configs)
_ALIASES = {
    "layers": ("num_hidden_layers", "n_layer"),
    "hidden_size": ("hidden_size", "n_embd"),
    "heads": ("num_attention_heads", "n_head"),
    "intermediate_size": ("intermediate_size", "n_inner"),
    "vocab_size": ("vocab_size",),
}


def _first(config, names):
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def architecture(model) -> dict:
    """Layers, widths, heads, KV heads, head dim (elements), context (tokens), vocab, tied, model type."""
    config = model.config
    facts = {key: _first(config, names) for key, names in _ALIASES.items()}
    if facts["intermediate_size"] is None and facts["hidden_size"]:
        facts["intermediate_size"] = 4 * facts["hidden_size"]  # GPT-2's n_inner=None means 4·n_embd
    facts["kv_heads"] = _first(config, ("num_key_value_heads",)) or facts["heads"]
    head_dim = _first(config, ("head_dim",))
    if head_dim is None and facts["hidden_size"] and facts["heads"]:
        head_dim = facts["hidden_size"] // facts["heads"]
    facts["head_dim"] = head_dim
    facts["context_length"] = model_context(model)
    facts["tied_embeddings"] = _tied(model)
    facts["model_type"] = config.model_type  # selects the Linear layout (gated MLP, fused qkv)
    return facts


def _tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def embedding_params(model) -> int:
    """Elements of the token (and learned position) embeddings and an untied output layer."""
    seen = {}
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            seen[id(module.weight)] = module.weight.numel()
    for name, param in model.named_parameters():
        if name.endswith(("wpe.weight", "embed_positions.weight")):  # learned positions (GPT-2, OPT)
            seen[id(param)] = param.numel()
    return sum(seen.values())


def non_embedding_params(model) -> int:
    """Parameters outside the embeddings and output layer (Kaplan et al.'s N), elements."""
    return count_params(model) - embedding_params(model)
