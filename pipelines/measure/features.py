"""The feature record of one (model, format): what the loss predictor of Xu et al. reads.

(a) D = quantized weight count, (b) NLL_fp, (c) SQNR_rtn, (d) NLL_rtn, (e) the landscape slope at
the RTN point, (f) the format's P, E, K — and, when GPTQ runs, its target NLL_gptq with SQNR_gptq.
Names follow the project's shared vocabulary (nats/token, bits/byte, dB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipelines.measure.landscape import Landscape
from pipelines.measure.nll import NllResult, evaluate_nll
from pipelines.quantize.formats import Format
from pipelines.quantize.rtn import find_weights, rtn_quantized
from pipelines.sources.token_windows import EvalWindows


@dataclass(frozen=True)
class FeatureSettings:
    """How the features are measured (everything here changes the numbers)."""

    slope_seeds: tuple[int, ...] = (0, 1, 2)
    slope_delta_db: float = 1.0
    hessians: str = "sequential"  # reference GPTQ (the default: fp-network Hessians lose to RTN on real models), or "fp" (Xu et al. §4.3)
    damp: float | None = None  # None: per-layer grid search (Xu et al.)
    mx_mode: str = "column"
    batch_size: int = 8
    eval_dtype: str | None = None  # bfloat16/float16: checked 16-bit NLL evaluations (GPU); the landscape stays float32


def evaluation_record(result: NllResult, method: str) -> dict:
    """How one NLL was evaluated, as numeric columns: its dtype's bits and, if 16-bit, the checked gap."""
    bits = {"float32": 32, "float64": 64}.get(result.dtype, 16)
    return {f"eval_bits_{method}": bits,
            **({f"eval_gap_{method}_nats": result.gap_nats} if result.gap_nats is not None else {})}


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
        rtn = evaluate_nll(model, windows, settings.batch_size, settings.eval_dtype)
    seconds_rtn = time.perf_counter() - start
    start = time.perf_counter()
    # float32 whatever eval_dtype: the slope is a difference of nearby losses, below 16-bit noise
    slope = Landscape(model, targets, slope_windows, settings.batch_size).slope(
        report.sqnr_db, settings.slope_seeds, settings.slope_delta_db)
    return {
        "format": fmt.name, **format_features(fmt),
        "quantized_params": report.quantized_params, "bytes": report.total_bytes,
        "nll_fp": fp.nll, "bpb_fp": fp.bits_per_byte,
        "sqnr_rtn_db": report.sqnr_db, "nll_rtn": rtn.nll, "bpb_rtn": rtn.bits_per_byte,
        "slope_rtn": slope, "seconds_rtn": seconds_rtn, **evaluation_record(rtn, "rtn"),
        "seconds_slope": time.perf_counter() - start,
        "layers": report.layer_table(),
    }


