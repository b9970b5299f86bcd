"""GPTQ's variant record: the predictor's target, NLL and SQNR after GPTQ."""

from __future__ import annotations

import time

import torch

from pipelines.gptq.model import apply_gptq
from pipelines.measure.features import FeatureSettings, evaluation_record
from pipelines.measure.nll import evaluate_nll
from pipelines.quantize.formats import Format
from pipelines.quantize.rtn import WeightBackup, find_weights
from pipelines.sources.token_windows import EvalWindows


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
        gptq = evaluate_nll(model, windows, settings.batch_size, settings.eval_dtype)
    finally:
        backup.restore()
    return {"sqnr_gptq_db": report.sqnr_db, "nll_gptq": gptq.nll, "bpb_gptq": gptq.bits_per_byte,
            "bytes": report.total_bytes, **evaluation_record(gptq, "gptq"),
            "seconds_gptq": time.perf_counter() - start,
            "damp_median": float(torch.tensor(list(damps.values())).median()),
            "gptq_layers": report.layer_table()}
