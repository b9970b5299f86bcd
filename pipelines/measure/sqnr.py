"""Signal-to-quantization-noise ratio (Xu et al. 2024, §2.2), in dB."""

from __future__ import annotations

import math


def sqnr_db(signal_sq: float, noise_sq: float) -> float:
    """10·log10(‖w‖² / ‖Q(w) − w‖²) in dB; +inf when quantization is lossless."""
    if noise_sq == 0:
        return math.inf
    if signal_sq == 0:
        return -math.inf
    return 10.0 * math.log10(signal_sq / noise_sq)


def pooled_sqnr_db(layers) -> float:
    """SQNR over the concatenation of many tensors (not a mean of per-layer dB), in dB.

    `layers` yields objects with `signal_sq` and `noise_sq` (sums of squares, float64).
    """
    signal = noise = 0.0
    for layer in layers:
        signal += layer.signal_sq
        noise += layer.noise_sq
    return sqnr_db(signal, noise)
