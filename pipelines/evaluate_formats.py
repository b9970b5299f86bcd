"""Quantize one model to several formats with RTN and measure each: NLL, bits/byte, SQNR, bytes.

The demo slice of the product and the measuring step of later sweeps: the fp model is evaluated
once, then each format is applied in place, measured, and undone exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipelines.corpus import Corpus
from pipelines.measure.nll import NllResult, evaluate_nll
from pipelines.quantize.formats import Format
from pipelines.quantize.rtn import QuantizationReport, count_params, find_weights, rtn_quantized
from pipelines.token_windows import EvalWindows, evaluation_windows

DEFAULT_MAX_SEQ_LEN = 2048


@dataclass(frozen=True)
class VariantResult:
    """One (format, method) variant of a model, measured."""

    format: Format
    method: str
    report: QuantizationReport
    loss: NllResult
    nll_fp: float
    seconds: float

    def as_row(self) -> dict:
        """Flat record with the project's shared metric names (nats/token, bits/byte, dB, bytes)."""
        return {"format": self.format.name, "method": self.method,
                "bits_per_weight": self.format.bits_per_weight,
                "quantized_params": self.report.quantized_params,
                "bytes": self.report.total_bytes, f"sqnr_{self.method}_db": self.report.sqnr_db,
                f"nll_{self.method}": self.loss.nll, f"bpb_{self.method}": self.loss.bits_per_byte,
                "delta_nll": self.loss.nll - self.nll_fp, "seconds": self.seconds}


def model_context(model) -> int | None:
    """The model's maximum sequence length from its config, if it states one."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def sequence_length(model, cap: int = DEFAULT_MAX_SEQ_LEN) -> int:
    """Evaluation length: the model's context, capped at `cap` tokens."""
    context = model_context(model)
    return min(context, cap) if context else cap


def evaluate_formats(model, tokenizer, corpus: Corpus, formats: list[Format], *,
                     seq_len: int | None = None, max_windows: int | None = None,
                     batch_size: int = 8, include_embeddings: bool = False,
                     include_lm_head: bool = False, progress=None):
    """(fp NllResult, EvalWindows, [VariantResult]) for RTN to each of `formats`.

    `progress(message)` is called before each step when given.
    """
    seq_len = seq_len or sequence_length(model)
    windows: EvalWindows = evaluation_windows(tokenizer, corpus.validation, seq_len,
                                              max_windows=max_windows)
    say = progress or (lambda message: None)
    say(f"fp: {windows.input_ids.shape[0]} windows x {seq_len} tokens")
    fp = evaluate_nll(model, windows, batch_size)
    targets = find_weights(model, include_embeddings=include_embeddings,
                           include_lm_head=include_lm_head)
    results = []
    for fmt in formats:
        say(f"{fmt.name}: rtn")
        start = time.perf_counter()
        with rtn_quantized(model, fmt, targets) as report:
            loss = evaluate_nll(model, windows, batch_size)
        results.append(VariantResult(fmt, "rtn", report, loss, fp.nll, time.perf_counter() - start))
    return fp, windows, results


def fp_bytes(model, rest_bits: int = 16) -> float:
    """Bytes of the unquantized model with every parameter at `rest_bits`."""
    return count_params(model) * rest_bits / 8
