"""Negative log-likelihood of a causal LM on evaluation windows, in nats/token and bits/byte.

NLL is the mean next-token cross-entropy over every predicted token, the quantity behind Hugging
Face's `labels=` loss. Bits per byte divides the total over the UTF-8 bytes those tokens cover,
the only unit comparable across tokenizers. Cross-entropy runs in float32 whatever the model's
dtype, and the total is summed in float64 so that batch size does not change the result.

A 16-bit evaluation (`dtype="bfloat16"`/`"float16"`, a GPU's fast path) runs the forward passes
under autocast and is checked: the first `CHECK_WINDOWS` windows are evaluated in float32 too, and
when the two disagree by more than `TOLERANCE_NATS` per token the whole evaluation runs again in
float32. The result says which dtype it ran in and the gap measured.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipelines.sources.token_windows import EvalWindows
from store.errors import InputError

CE_CHUNK_ROWS = 256
CHECK_WINDOWS = 2
TOLERANCE_NATS = 0.002  # issue 26: a 16-bit evaluation must agree with float32 within this
REDUCED = ("bfloat16", "float16")


@dataclass(frozen=True)
class NllResult:
    """Loss over an evaluation set; `nll` in nats/token, `bits_per_byte` in bits/byte."""

    total_nats: float
    tokens: int
    bytes: int
    dtype: str = "float32"  # what the forward passes ran in
    gap_nats: float | None = None  # |16-bit − float32| per token on the check windows, if 16-bit

    @property
    def nll(self) -> float:
        return self.total_nats / self.tokens

    @property
    def bits_per_byte(self) -> float:
        return self.total_nats / math.log(2) / self.bytes


def _shifted_labels(input_ids: torch.Tensor) -> torch.Tensor:
    labels = input_ids.roll(-1, dims=1)
    labels[:, -1] = -100  # the last position predicts nothing inside the window
    return labels


@torch.inference_mode()
def summed_nll(model, input_ids: torch.Tensor, batch_size: int = 8, autocast: str | None = None) -> float:
    """Total next-token cross-entropy over all windows of `input_ids` [n, L], in nats.

    `autocast` (bfloat16/float16): the forward passes run under torch.autocast in that dtype.
    """
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, input_ids.shape[0], batch_size):
        batch = input_ids[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=getattr(torch, autocast)) if autocast else nullcontext():
            logits = model(input_ids=batch, use_cache=False).logits
        logits = logits.reshape(-1, logits.shape[-1])
        labels = _shifted_labels(batch).reshape(-1)
        # Row chunks keep log-softmax's temporary (and a bf16 model's float32 copy) in cache
        # instead of a fresh tensor the size of all logits.
        for row in range(0, logits.shape[0], CE_CHUNK_ROWS):
            loss = F.cross_entropy(logits[row:row + CE_CHUNK_ROWS].float(),
                                   labels[row:row + CE_CHUNK_ROWS], reduction="sum", ignore_index=-100)
            total += float(loss.double())
    return total


def evaluate_nll(model, windows: EvalWindows, batch_size: int = 8, dtype: str | None = None,
                 tolerance: float = TOLERANCE_NATS) -> NllResult:
    """NLL of `model` on `windows`: nats/token and bits/byte (see module doc).

    `dtype` None/float32: the model's own dtype; bfloat16/float16: checked 16-bit forward passes.
    """
    was_training = model.training
    model.eval()
    own = str(next(model.parameters()).dtype).removeprefix("torch.")
    reduced = dtype if dtype in REDUCED and own == "float32" else None
    gap = None
    ids = windows.input_ids
    try:
        if reduced:  # the check windows' 16-bit pass is part of the total, not run twice
            head, tail = ids[:CHECK_WINDOWS], ids[CHECK_WINDOWS:]
            low = summed_nll(model, head, batch_size, autocast=reduced)
            tokens = head.shape[0] * (head.shape[1] - 1)  # every position but the last predicts one
            gap = abs(low - summed_nll(model, head, batch_size)) / tokens if math.isfinite(low) else math.inf
            total = low + summed_nll(model, tail, batch_size, autocast=reduced) if gap <= tolerance else math.nan
            if not math.isfinite(total):
                reduced = None
        if not reduced:
            total = summed_nll(model, ids, batch_size)
    finally:
        model.train(was_training)
    if not math.isfinite(total):
        raise InputError("the model's loss is not finite (NaN/Inf logits): check its weights and dtype")
    return NllResult(total, windows.predicted_tokens, windows.predicted_bytes,
                     dtype=reduced or own, gap_nats=gap)
