import pytest
import torch

from pipelines.quantize.classic_int import int_scales, quantize_int
from pipelines.quantize.formats import parse_format


def test_mse_search_finds_the_hand_computed_optimum():
    # int2 (codes -1, 0, 1) on [1, .5, .25, -1]: for alpha in (.5, 1) the error is
    # 2(1-a)^2 + (.5-a)^2 + .0625, minimal at a = 5/6 (error .2292, vs .3125 at a = 1)
    x = torch.tensor([[1.0, 0.5, 0.25, -1.0]])
    scale = float(int_scales(x, parse_format("int2_tens"), "mse"))
    assert scale == pytest.approx(5 / 6, abs=0.006)
    q = quantize_int(x, parse_format("int2_tens"), "mse")
    assert torch.allclose(q, torch.tensor([[1.0, 1.0, 0.0, -1.0]]) * scale)


def test_codes_are_symmetric_integers_times_an_fp16_scale():
    torch.manual_seed(0)
    x = torch.randn(16, 96)
    for name, groups in (("int4_tens", 1), ("int4_chan", 16), ("int3_g32", 48)):
        fmt = parse_format(name)
        scales = int_scales(x, fmt)
        assert scales.shape == (groups, 1)
        assert torch.equal(scales, scales.half().float())
        q = quantize_int(x, fmt)
        rows = q.reshape(1, -1) if groups == 1 else q.reshape(groups, -1)
        codes = rows / scales
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        limit = 2 ** (fmt.precision - 1) - 1
        assert codes.abs().max() <= limit + 1e-4


def test_mse_calibration_beats_plain_absmax_and_finer_groups_beat_coarser():
    torch.manual_seed(1)
    x = torch.randn(64, 256) * torch.rand(64, 1) * 3
    x[3, 7] = 40.0  # an outlier: absmax scaling wastes the grid on it
    err = {n: float((quantize_int(x, parse_format(n), "mse") - x).square().sum())
           for n in ("int4_tens", "int4_chan", "int4_g32")}
    assert err["int4_g32"] < err["int4_chan"] < err["int4_tens"]
    absmax = x.abs().amax(1, keepdim=True) / 7
    plain = float(((x / absmax).round().clamp(-7, 7) * absmax - x).square().sum())
    assert err["int4_chan"] < plain


def test_ragged_groups_zero_rows_and_dtype():
    x = torch.randn(4, 40)
    x[2] = 0
    q = quantize_int(x.bfloat16(), parse_format("int4_g32"))
    assert q.dtype == torch.bfloat16 and q.shape == (4, 40)
    assert torch.count_nonzero(q[2]) == 0
    assert torch.equal(quantize_int(x, parse_format("int8_g32"))[:, 32:],
                       quantize_int(x[:, 32:].contiguous(), parse_format("int8_g32")))


def test_idempotent():
    torch.manual_seed(2)
    x = torch.randn(8, 64)
    for name in ("int4_chan", "int3_g16", "int8_tens"):
        fmt = parse_format(name)
        once = quantize_int(x, fmt)
        assert torch.allclose(quantize_int(once, fmt), once, atol=1e-6)


def test_weighted_objective_keeps_the_outlier_that_mse_clips():
    # one weight 60x the others: MSE gives it up to round the bulk finely; the |w|²-weighted
    # objective (the default) and absmax keep it within half a step, as the model needs
    torch.manual_seed(3)
    x = torch.randn(1, 4096) * 0.02
    x[0, 100] = 1.2
    fmt = parse_format("int8_tens")
    outlier_error = {o: abs(float(quantize_int(x, fmt, o)[0, 100]) - 1.2) for o in ("mse", "wmse", "absmax")}
    step = {o: float(int_scales(x, fmt, o)) for o in ("mse", "wmse", "absmax")}
    assert outlier_error["mse"] > 2 * step["mse"]  # clipped by several steps
    assert outlier_error["wmse"] <= step["wmse"] / 2 + 1e-6
    assert outlier_error["absmax"] <= step["absmax"] / 2 + 1e-6
    assert step["wmse"] <= step["absmax"] + 1e-6  # it may still tighten where nothing is clipped


def test_the_default_objective_and_a_bad_one():
    from pipelines.quantize import classic_int

    x = torch.randn(8, 64)
    fmt = parse_format("int4_chan")
    assert torch.equal(quantize_int(x, fmt), quantize_int(x, fmt, classic_int.DEFAULT_OBJECTIVE))
    with pytest.raises(ValueError, match="objective must be one of wmse, mse, absmax"):
        quantize_int(x, fmt, "l1")
