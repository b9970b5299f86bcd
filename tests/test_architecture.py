"""Architecture numbers read from transformers configs, and the parameter split they imply."""

from pipelines.quantize.rtn import count_params
from pipelines.sources.architecture import (
    architecture,
    embedding_params,
    non_embedding_params,
)


def test_llama_facts_and_parameter_split(tiny_llama, tokenizer):
    facts = architecture(tiny_llama)
    assert facts == {"layers": 2, "hidden_size": 64, "heads": 4, "intermediate_size": 96,
                     "vocab_size": len(tokenizer), "kv_heads": 2, "head_dim": 16,
                     "context_length": 128, "tied_embeddings": tiny_llama.config.tie_word_embeddings,
                     "model_type": "llama"}
    # the model really shares (or really does not share) one tensor between input and output
    shared = tiny_llama.get_output_embeddings().weight is tiny_llama.get_input_embeddings().weight
    assert facts["tied_embeddings"] is shared
    vocab, hidden = len(tokenizer), 64
    embeddings = vocab * hidden * (1 if facts["tied_embeddings"] else 2)
    assert embedding_params(tiny_llama) == embeddings
    # per layer: q and o (2·h²), grouped k and v (2·h·kv·hd), gate/up/down (3·h·i), two RMSNorms
    per_layer = 2 * hidden * hidden + 2 * hidden * 2 * 16 + 3 * hidden * 96 + 2 * hidden
    assert non_embedding_params(tiny_llama) == 2 * per_layer + hidden
    assert count_params(tiny_llama) == embeddings + non_embedding_params(tiny_llama)


def test_gpt2_counts_learned_positions_as_embeddings(tiny_gpt2, tokenizer):
    facts = architecture(tiny_gpt2)
    assert facts["layers"] == 2 and facts["heads"] == 4 and facts["kv_heads"] == 4
    assert facts["head_dim"] == 16 and facts["tied_embeddings"] is True
    assert embedding_params(tiny_gpt2) == (len(tokenizer) + 128) * 64
