"""Quantize one model to several formats and measure each: the feature record per format.

The demo slice of the product and the measuring step of later sweeps: the fp model is evaluated
once, then each format is applied (RTN, and GPTQ when asked), measured, and undone exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.gptq.features import measure_gptq
from pipelines.measure.features import FeatureSettings, measure_rtn
from pipelines.measure.nll import NllResult, evaluate_nll
from pipelines.quantize.formats import Format
from pipelines.quantize.rtn import count_params, find_weights
from pipelines.sources.corpus import Corpus
from pipelines.sources.token_windows import (
    EvalWindows,
    calibration_windows,
    evaluation_and_subset_windows,
)
from store.errors import InputError

DEFAULT_MAX_SEQ_LEN = 2048


@dataclass(frozen=True)
class EvaluationPlan:
    """What to measure beyond RTN, and on how much data."""

    seq_len: int | None = None  # None: the model's context, capped at DEFAULT_MAX_SEQ_LEN
    max_windows: int | None = None  # evaluation windows (None: the whole validation split)
    slope_windows: int = 2  # the landscape slope's cheaper evaluation subset
    gptq: bool = False
    calibration_size: int = 128  # Xu et al.: 128 sequences from the training split
    seed: int = 0
    include_embeddings: bool = False
    include_lm_head: bool = False
    features: FeatureSettings = FeatureSettings()


def model_context(model) -> int | None:
    """The model's maximum sequence length from its config, if it states one."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def sequence_length(model, requested: int | None = None, cap: int = DEFAULT_MAX_SEQ_LEN) -> int:
    """Evaluation length in tokens: `requested`, or (None/0) the model's context capped at `cap`.

    Raises ValueError when `requested` exceeds the model's context.
    """
    context = model_context(model)
    if requested:
        if context and requested > context:
            raise InputError(f"sequence length {requested} exceeds the model's context of {context} tokens")
        return requested
    return min(context, cap) if context else cap


def evaluate_formats(model, tokenizer, corpus: Corpus, formats: list[Format],
                     plan: EvaluationPlan = EvaluationPlan(), progress=None):
    """(fp NllResult, EvalWindows, [feature record per format]); see `features.measure_variant`.

    `progress(message)` is called before each step when given.
    """
    say = progress or (lambda message: None)
    seq_len = sequence_length(model, plan.seq_len)
    windows, slope_windows = evaluation_and_subset_windows(
        tokenizer, corpus.validation, seq_len, plan.max_windows, plan.slope_windows)
    n = windows.input_ids.shape[0]
    calibration = None
    if plan.gptq:
        calibration = calibration_windows(tokenizer, corpus.train, seq_len, plan.calibration_size,
                                          seed=plan.seed)
    say(f"fp: {n} windows x {seq_len} tokens")
    settings = plan.features
    fp: NllResult = evaluate_nll(model, windows, settings.batch_size, settings.eval_dtype)
    targets = find_weights(model, include_embeddings=plan.include_embeddings,
                           include_lm_head=plan.include_lm_head)
    records = []
    for fmt in formats:
        say(f"{fmt.name}: rtn, slope" + (", gptq" if plan.gptq else ""))
        records.append(measure_variant(model, fmt, windows, slope_windows, fp=fp,
                                       calibration=calibration, settings=settings, targets=targets))
    return fp, windows, records


def fp_bytes(model, rest_bits: int = 16) -> float:
    """Bytes of the unquantized model with every parameter at `rest_bits`."""
    return count_params(model) * rest_bits / 8


def measure_variant(model, fmt: Format, windows: EvalWindows, slope_windows: EvalWindows, *,
                    fp: NllResult | None = None, calibration: torch.Tensor | None = None,
                    settings: FeatureSettings = FeatureSettings(), targets=None) -> dict:
    """Feature record of `model` in `fmt`; GPTQ runs when `calibration` windows are given.

    `windows` evaluate the NLLs; the cheaper `slope_windows` (a subset) serve the slope.
    The model's weights are the same afterwards as before.
    """
    targets = find_weights(model) if targets is None else targets
    fp = fp or evaluate_nll(model, windows, settings.batch_size, settings.eval_dtype)
    record = measure_rtn(model, fmt, windows, slope_windows, fp, settings=settings, targets=targets)
    if calibration is not None:
        record.update(measure_gptq(model, fmt, windows, calibration, settings=settings,
                                   targets=targets))
    return record
