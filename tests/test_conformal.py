"""Conformal intervals per band of bits (registry/conformal.py), shared by the predictor and the prior."""

import math

import numpy as np

from registry.conformal import (
    band_label,
    band_metric_name,
    conformal_halfwidth,
    group_widths,
    heldout_widths,
    precision_bands,
    widths_text,
)


def test_halfwidth_is_the_conformal_rank_or_inf_when_too_few():
    residuals = np.arange(1, 10, dtype=float)  # 9 residuals: ⌈10·0.9⌉ = 9th smallest
    assert conformal_halfwidth(-residuals, 0.1) == 9.0
    assert conformal_halfwidth(residuals[:8], 0.1) == math.inf and conformal_halfwidth([], 0.1) == math.inf
    assert conformal_halfwidth(residuals, 0.5) == 5.0  # ⌈10·0.5⌉ = 5


def test_bands_take_the_first_match_and_name_themselves():
    assert precision_bands([1, 2, 3, 4, 8, 16]).tolist() == ["p<=2", "p<=2", "p=3", "p>=4", "p>=4", "p>=4"]
    assert precision_bands([3, 4], "p<=3,p>=4").tolist() == ["p<=3", "p>=4"]
    assert precision_bands([5], "p<=2,p=3").tolist() == [""]
    assert [band_metric_name(b) for b in ("p<=2", "p=3", "p>=4")] == ["le2", "eq3", "ge4"]
    assert [band_label(b) for b in ("p<=2", "p=3", "p>=4")] == ["≤ 2 bits", "3 bits", "≥ 4 bits"]


def test_each_band_gets_the_width_of_its_own_residuals():
    # a few huge 2-bit errors must not widen the 4-bit interval
    bits = np.array([2] * 10 + [4] * 10)
    residuals = np.concatenate([np.full(10, 20.0), np.linspace(0.01, 0.1, 10)])
    widths = group_widths(residuals, precision_bands(bits), 0.1, ["p<=2", "p=3", "p>=4"])
    assert widths == {"p<=2": 20.0, "p=3": math.inf, "p>=4": conformal_halfwidth(residuals[10:], 0.1)}
    assert list(group_widths(residuals, precision_bands(bits), 0.1)) == ["p<=2", "p>=4"]  # the groups present
    assert group_widths([np.nan, 1.0], ["a", "a"], 0.5) == {"a": 1.0}  # a failed prediction is no evidence
    assert widths["p>=4"] < 0.11
    assert widths_text(widths) == "±0.1000 at ≥ 4 bits, none at 3 bits, ±20.0000 at ≤ 2 bits"


def test_held_out_coverage_takes_each_groups_width_from_the_others():
    # family b errs ten times more than a and c: held out, it falls outside their band's width
    groups = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10)
    residuals = np.concatenate([np.linspace(0.1, 1, 10), np.linspace(1, 10, 10) * 1.5, np.linspace(0.1, 1, 10)])
    bands = precision_bands(np.full(30, 4))
    widths = heldout_widths(residuals, groups, bands, 0.1)
    assert (widths[10:20] == conformal_halfwidth(np.r_[residuals[:10], residuals[20:]], 0.1)).all()
    inside = residuals <= widths
    assert inside[:10].all() and inside[20:].all() and not inside[10:20].any()  # b is covered by nobody
