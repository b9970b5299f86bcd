"""The feature record of one (model, format): what the loss predictor of Xu et al. reads.

(a) D = quantized weight count, (b) NLL_fp, (c) SQNR_rtn, (d) NLL_rtn, (e) the landscape slope at
the RTN point, (f) the format's P, E, K — and, when GPTQ runs, its target NLL_gptq with SQNR_gptq.
Names follow the project's shared vocabulary (nats/token, bits/byte, dB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from pipelines.measure.landscape import Landscape
from pipelines.measure.nll import NllResult, evaluate_nll
from pipelines.quantize.formats import Format
from pipelines.quantize.gptq_model import apply_gptq
from pipelines.quantize.rtn import WeightBackup, find_weights, rtn_quantized
from pipelines.sources.token_windows import EvalWindows


@dataclass(frozen=True)
class FeatureSettings:
    """How the features are measured (everything here changes the numbers)."""

    slope_seeds: tuple[int, ...] = (0, 1, 2)
    slope_delta_db: float = 1.0
    hessians: str = "fp"  # "fp" (Xu et al.) or "sequential" (reference GPTQ)
    damp: float | None = None  # None: per-layer grid search (Xu et al.)
    mx_mode: str = "column"
    batch_size: int = 8


def format_features(fmt: Format) -> dict:
    """(f): the format's P, E, M, K and family, as feature columns."""
    return {"precision": fmt.precision, "exp_bits": fmt.exp_bits, "man_bits": fmt.man_bits,
            "block_size": fmt.block_size or 0, "family": fmt.family,
            "granularity": fmt.granularity, "bits_per_weight": fmt.bits_per_weight}


def measure_rtn(model, fmt: Format, windows: EvalWindows, slope_windows: EvalWindows,
                fp: NllResult, *, settings: FeatureSettings = FeatureSettings(), targets=None) -> dict:
    """Features (a)–(f) of `model` in `fmt`: RTN's D, bytes, SQNR and NLL, and the slope there."""
    targets = find_weights(model) if targets is None else targets
    start = time.perf_counter()
    with rtn_quantized(model, fmt, targets) as report:
        rtn = evaluate_nll(model, windows, settings.batch_size)
    seconds_rtn = time.perf_counter() - start
    start = time.perf_counter()
    slope = Landscape(model, targets, slope_windows, settings.batch_size).slope(
        report.sqnr_db, settings.slope_seeds, settings.slope_delta_db)
    return {
        "format": fmt.name, **format_features(fmt),
        "quantized_params": report.quantized_params, "bytes": report.total_bytes,
        "nll_fp": fp.nll, "bpb_fp": fp.bits_per_byte,
        "sqnr_rtn_db": report.sqnr_db, "nll_rtn": rtn.nll, "bpb_rtn": rtn.bits_per_byte,
        "slope_rtn": slope, "seconds_rtn": seconds_rtn,
        "seconds_slope": time.perf_counter() - start,
        "layers": report.layer_table(),
    }


def measure_gptq(model, fmt: Format, windows: EvalWindows, calibration: torch.Tensor, *,
                 settings: FeatureSettings = FeatureSettings(), targets=None) -> dict:
    """The predictor's target: NLL and SQNR after GPTQ (calibrated on `calibration` windows)."""
    targets = find_weights(model) if targets is None else targets
    start = time.perf_counter()
    backup = WeightBackup(targets)
    try:
        report, damps = apply_gptq(
            model, fmt, calibration, targets=targets, hessians=settings.hessians,
            damp=settings.damp, mx_mode=settings.mx_mode, batch_size=settings.batch_size)
        gptq = evaluate_nll(model, windows, settings.batch_size)
    finally:
        backup.restore()
    return {"sqnr_gptq_db": report.sqnr_db, "nll_gptq": gptq.nll, "bpb_gptq": gptq.bits_per_byte,
            "bytes": report.total_bytes,
            "seconds_gptq": time.perf_counter() - start,
            "damp_median": float(torch.tensor(list(damps.values())).median()),
            "gptq_layers": report.layer_table()}


def measure_variant(model, fmt: Format, windows: EvalWindows, slope_windows: EvalWindows, *,
                    fp: NllResult | None = None, calibration: torch.Tensor | None = None,
                    settings: FeatureSettings = FeatureSettings(), targets=None) -> dict:
    """Feature record of `model` in `fmt`; GPTQ runs when `calibration` windows are given.

    `windows` evaluate the NLLs; the cheaper `slope_windows` (a subset) serve the slope.
    The model's weights are the same afterwards as before.
    """
    targets = find_weights(model) if targets is None else targets
    fp = fp or evaluate_nll(model, windows, settings.batch_size)
    record = measure_rtn(model, fmt, windows, slope_windows, fp, settings=settings, targets=targets)
    if calibration is not None:
        record.update(measure_gptq(model, fmt, windows, calibration, settings=settings,
                                   targets=targets))
    return record
