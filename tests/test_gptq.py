import pytest
import torch

from pipelines.gptq.layer import (
    HessianAccumulator,
    gptq_layer,
    gptq_quantize,
    output_mse,
)
from pipelines.gptq.model import apply_gptq
from pipelines.quantize.formats import parse_format
from pipelines.quantize.rtn import WeightBackup, find_weights, quantize_weight
from pipelines.sources.token_windows import calibration_windows

FAMILIES = ["mxint4_32", "mxint3_16", "mxfp4_e2m1_32", "mxfp6_e3m2_64", "int4_chan", "int3_g32",
            "int4_tens"]


@pytest.fixture(scope="module")
def layer():
    """A random layer whose inputs are correlated, as real activations are."""
    torch.manual_seed(0)
    inp = 192
    weight = torch.randn(96, inp) * 0.05
    x = torch.randn(2048, inp) @ (torch.randn(inp, inp) / inp**0.5) + 0.05 * torch.randn(2048, inp)
    acc = HessianAccumulator(inp)
    for chunk in x.split(500):
        acc.add_batch(chunk)
    return weight, acc.H, x


def test_hessian_is_twice_the_mean_outer_product(layer):
    _, H, x = layer
    assert torch.allclose(H, 2 * x.t() @ x / x.shape[0], rtol=1e-4, atol=1e-5)


def test_output_mse_is_the_mean_squared_output_error(layer):
    weight, H, x = layer
    delta = torch.randn_like(weight) * 0.01
    assert output_mse(delta, H) == pytest.approx(float(((x @ delta.t()) ** 2).mean()), rel=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_gptq_beats_rtn_on_layer_output_error_for_every_family(layer, name):
    weight, H, _ = layer
    fmt = parse_format(name)
    rtn = output_mse(quantize_weight(weight, fmt) - weight, H)
    for mode in ("column", "block"):
        used = []
        q = gptq_quantize(weight, H, fmt, mx_mode=mode, scales=used)
        assert output_mse(q - weight, H) < 0.8 * rtn
        # every column lies on the format's grid: integer codes of the scales GPTQ used
        if fmt.granularity == "channel":
            codes = q / used[0]
            assert torch.allclose(codes, codes.round(), atol=1e-4)
            assert codes.abs().max() <= 2 ** (fmt.precision - 1) - 1 + 1e-4


def test_gptq_output_is_on_the_mx_grid(layer):
    weight, H, _ = layer
    fmt = parse_format("mxint4_32")
    q = gptq_quantize(weight, H, fmt)
    assert torch.equal(quantize_weight(q, fmt), q)


def test_damping_search_is_never_worse_than_the_default(layer):
    weight, H, _ = layer
    fmt = parse_format("mxint3_32")
    fixed = gptq_layer(weight, H, fmt, damp=0.01)
    searched = gptq_layer(weight, H, fmt, damp=None)
    assert searched.output_mse <= fixed.output_mse
    assert searched.damp in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


def test_dead_column_and_zero_block(layer):
    weight, H, _ = layer
    H = H.clone()
    H[5, :] = 0
    H[:, 5] = 0  # input 5 never fires
    w = weight.clone()
    w[:, 32:64] = 0  # a zero MX block
    for name in ("mxint4_32", "int4_g32", "mxfp4_e2m1_32"):
        q = gptq_quantize(w, H, parse_format(name))
        assert torch.isfinite(q).all()
        assert torch.count_nonzero(q[:, 5]) == 0


def test_singular_hessian_gets_more_damping():
    H = torch.zeros(64, 64)
    H[0, 0] = 1.0  # rank one: plain damping 0.01 * mean(diag) is tiny but positive
    w = torch.randn(8, 64)
    q = gptq_quantize(w, H, parse_format("mxint4_32"))
    assert torch.isfinite(q).all()


@pytest.mark.parametrize("hessians", ["fp", "sequential"])
def test_model_gptq_beats_rtn_on_calibration_outputs(trained_model_dir, docs_text, hessians):
    from pipelines.sources.model_source import load_model

    model, tok, _ = load_model(str(trained_model_dir))
    cal = calibration_windows(tok, docs_text[:200000], 64, n=16, seed=0)
    targets = find_weights(model)
    fmt = parse_format("mxint3_32")
    backup = WeightBackup(targets)
    report, damps = apply_gptq(model, fmt, cal, hessians=hessians, damp=0.01)
    assert set(damps) == {t.name for t in targets}
    assert [layer.name for layer in report.layers] == [t.name for t in targets]
    # every weight is on the format's grid, and the model comes back exactly
    assert all(torch.equal(quantize_weight(t.as_out_in(), fmt), t.as_out_in()) for t in targets)
    assert report.quantized_params == sum(t.param.numel() for t in targets)
    backup.restore()
    assert torch.equal(targets[0].param, backup._saved[0][1])


def test_gptq_is_deterministic(layer):
    weight, H, _ = layer
    fmt = parse_format("mxfp4_e2m1_32")
    assert torch.equal(gptq_quantize(weight, H, fmt), gptq_quantize(weight, H, fmt))


def test_gptq_int_scales_weigh_each_error_by_the_hessian(monkeypatch):
    """Inputs of very unequal power (as after a norm with outlier channels): scales fitted on
    H_jj-weighted errors lose less layer output than RTN's data-free |w|² weighting."""
    import pipelines.gptq.layer as gptq_layer_module
    from pipelines.quantize.classic_int import row_scales
    from store.errors import InputError

    torch.manual_seed(0)
    weight = torch.randn(128, 256) * (torch.rand(1, 256) * 2)
    x = torch.randn(1024, 256) * (torch.rand(1, 256) * 3)
    acc = HessianAccumulator(256)
    acc.add_batch(x)
    for name in ("int4_g128", "int4_chan", "int3_g32", "int8_tens"):
        fmt = parse_format(name)
        hessian = gptq_layer(weight, acc.H, fmt, damp=0.01)
        monkeypatch.setattr(gptq_layer_module, "INT_SCALE_OBJECTIVE", "wmse")
        wmse = gptq_layer(weight, acc.H, fmt, damp=0.01)
        monkeypatch.undo()
        assert hessian.output_mse < wmse.output_mse, name
        assert hessian.scales.shape == wmse.scales.shape
    with pytest.raises(InputError, match="needs the error weights"):
        row_scales(weight, 4, "hessian")
