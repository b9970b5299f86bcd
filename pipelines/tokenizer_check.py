"""Refuse a model whose tokenizer transformers built wrongly, before any loss is measured with it.

transformers 4.57 builds some GGUF tokenizers wrongly: for Gemma-3's SentencePiece-BPE GGUFs it
reads the merge ranks as Unigram scores, and text splits into near-single characters (1.0
characters/token where the model's own tokenizer gives ~4), so every NLL is measured on the wrong
tokens (Gemma-3-270M: NLL 3.6 where the repaired tokenizer gives 1.02 bits/byte). A GGUF-loaded
tokenizer is checked on the evaluation text itself; a folder's or the hub's tokenizer.json is the
model's own and is not second-guessed (a tiny model's small vocabulary may well give 2 chars/token).
"""

from __future__ import annotations

from pipelines.sources.offline_models import MIN_CHARS_PER_TOKEN, chars_per_token
from store.errors import InputError

SAMPLE_CHARS = 20_000
# GGUF architectures whose tokenizer transformers is known to build wrongly, and the fix
KNOWN_BAD = {
    "gemma3": "transformers reads Gemma-3 GGUF merge ranks as Unigram scores; `advisor fetch-model "
              "gemma-3-270m` writes a folder with a repaired tokenizer",
    "gemma3_text": "transformers reads Gemma-3 GGUF merge ranks as Unigram scores; `advisor fetch-model "
                   "gemma-3-270m` writes a folder with a repaired tokenizer",
}


class TokenizerError(InputError):
    """A tokenizer that splits text far finer than any sound one: measuring with it would be wrong."""


def refuse_broken_tokenizer(model, tokenizer, source, text: str) -> float | None:
    """Characters per token of a GGUF-loaded tokenizer on `text` (None when not from a GGUF)."""
    if source.kind != "gguf" and not source.gguf_file:
        return refuse_known_bad(getattr(model.config, "model_type", None), tokenizer, text, source.spec)
    return _checked(getattr(model.config, "model_type", "?"), tokenizer, text, source.gguf_file or source.spec)


def refuse_known_bad(model_type: str | None, tokenizer, text: str, where: str) -> float | None:
    """A tokenizer of an architecture transformers is known to mis-build from GGUF, wherever it now
    sits (a folder exported or saved from such a load carries the broken tokenizer.json along)."""
    if model_type not in KNOWN_BAD:
        return None
    return _checked(model_type, tokenizer, text, where)


def _checked(model_type: str, tokenizer, text: str, where: str) -> float:
    value = chars_per_token(tokenizer, text[:SAMPLE_CHARS])
    if value < MIN_CHARS_PER_TOKEN:
        fix = KNOWN_BAD.get(model_type, "give a folder with the model's own tokenizer.json (and the GGUF file)")
        raise TokenizerError(f"{where}: its tokenizer gives {value:.2f} characters/token on the evaluation text "
                             f"(a sound one gives ~3-5), so every loss would be measured on the wrong tokens; {fix}")
    return value
