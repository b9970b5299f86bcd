"""Text -> fixed-length token windows for evaluation and calibration, with exact byte accounting.

Bits per byte needs the UTF-8 bytes that the *predicted* tokens cover. The tokenizer's character
offsets give them: token i owns the text from the end of token i-1 to its own end (gaps and
whitespace go to the following token), so a run of consecutive predicted tokens covers exactly
bytes(end of its last token) - bytes(end of the token before it).

BOS convention: `bos="auto"` prepends the BOS token to every window when the tokenizer itself adds
one to plain text (e.g. SmolLM2's GGUF tokenizer does, although its GGUF metadata says not to).
Then BOS is context only and every text token of the window is predicted; without BOS the first
token of each window is context only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from store.errors import InputError


@dataclass(frozen=True)
class TokenizedText:
    """A token stream and, per token, the cumulative UTF-8 bytes of text up to its end."""

    ids: np.ndarray  # int64 [T]
    end_bytes: np.ndarray  # int64 [T]; end_bytes[i] = bytes of text[: end of token i]
    exact_bytes: bool  # False when the tokenizer gave no offsets (slow tokenizer): bytes estimated


def tokenize(tokenizer, text: str) -> TokenizedText:
    """Tokenize without special tokens, keeping byte offsets when the tokenizer can give them."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, return_token_type_ids=False, verbose=False)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        char_ends = np.asarray([end for _, end in enc["offset_mapping"]], dtype=np.int64)
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        char_starts = np.flatnonzero((raw & 0xC0) != 0x80)  # byte offset of every character
        byte_of_char = np.append(char_starts, raw.size)
        # byte-level BPE may give a later token an earlier end (a split character): keep monotone
        end_bytes = np.maximum.accumulate(byte_of_char[char_ends]) if ids.size else char_ends
        return TokenizedText(ids, end_bytes.astype(np.int64), True)
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    per_token = len(text.encode("utf-8")) / max(1, ids.size)
    return TokenizedText(ids, np.round(np.arange(1, ids.size + 1) * per_token).astype(np.int64), False)


def uses_bos(tokenizer, bos: str | bool = "auto") -> bool:
    """Whether windows start with BOS: `auto` = whatever the tokenizer does to plain text."""
    if bos != "auto":
        return bool(bos)
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


@dataclass(frozen=True)
class EvalWindows:
    """Evaluation batches: input ids [n, L], and the tokens and bytes they predict."""

    input_ids: torch.Tensor
    predicted_tokens: int
    predicted_bytes: int
    bos: bool
    exact_bytes: bool


def evaluation_windows(tokenizer, text: str, seq_len: int, *, max_windows: int | None = None,
                       bos: str | bool = "auto") -> EvalWindows:
    """Non-overlapping windows of `seq_len` tokens over `text`; `max_windows` spread evenly."""
    return _windows(tokenize(tokenizer, text), tokenizer, seq_len, max_windows, bos)


def evaluation_and_subset_windows(tokenizer, text: str, seq_len: int, max_windows: int | None,
                                  subset: int, bos: str | bool = "auto") -> tuple[EvalWindows, EvalWindows]:
    """The evaluation windows and a smaller evenly spread set (e.g. for the slope), tokenizing once.

    The subset has min(`subset`, evaluation windows) windows spread over the whole text.
    """
    stream = tokenize(tokenizer, text)
    windows = _windows(stream, tokenizer, seq_len, max_windows, bos)
    return windows, _windows(stream, tokenizer, seq_len, min(subset, len(windows.input_ids)), bos)


def _windows(stream: TokenizedText, tokenizer, seq_len: int, max_windows: int | None,
             bos: str | bool) -> EvalWindows:
    with_bos = uses_bos(tokenizer, bos)
    stride = seq_len - 1 if with_bos else seq_len
    n = stream.ids.size // stride
    if n == 0:
        raise InputError(f"evaluation text has {stream.ids.size} tokens, fewer than one window of {seq_len}")
    starts = np.arange(n) * stride
    if max_windows is not None and max_windows < n:
        starts = starts[np.linspace(0, n - 1, max_windows).round().astype(np.int64)]
    rows = np.stack([stream.ids[s:s + stride] for s in starts])
    first_predicted = starts if with_bos else starts + 1
    last = starts + stride - 1
    before = np.where(first_predicted > 0, stream.end_bytes[np.maximum(first_predicted - 1, 0)], 0)
    predicted_bytes = int((stream.end_bytes[last] - before).sum())
    if with_bos:
        rows = np.concatenate([np.full((rows.shape[0], 1), tokenizer.bos_token_id), rows], axis=1)
    return EvalWindows(torch.from_numpy(rows), rows.shape[0] * (seq_len - 1), predicted_bytes,
                       with_bos, stream.exact_bytes)


def calibration_windows(tokenizer, text: str, seq_len: int, n: int = 128, *, seed: int = 0,
                        bos: str | bool = "auto") -> torch.Tensor:
    """`n` windows of `seq_len` tokens at seeded random positions of `text`; int64 [n, L]."""
    ids = tokenize(tokenizer, text).ids
    with_bos = uses_bos(tokenizer, bos)
    length = seq_len - 1 if with_bos else seq_len
    if ids.size <= length:
        raise InputError(f"calibration text has {ids.size} tokens, too few for windows of {seq_len}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, ids.size - length, size=n)
    rows = np.stack([ids[s:s + length] for s in starts])
    if with_bos:
        rows = np.concatenate([np.full((n, 1), tokenizer.bos_token_id), rows], axis=1)
    return torch.from_numpy(rows)
