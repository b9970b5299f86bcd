"""Quantized weights as integer codes × scales, exactly, for every family of format."""

import pytest
import torch

from pipelines.gptq.layer import HessianAccumulator, gptq_layer
from pipelines.quantize.classic_int import int_scales, quantize_int
from pipelines.quantize.encoding import EncodingError, container_bits, encode, max_code
from pipelines.quantize.formats import parse_format
from pipelines.quantize.mx import quantize_mx


@pytest.mark.parametrize("name, bits, top", [
    ("mxint4_32", 4, 7), ("mxint3_128", 4, 3), ("mxint8_32", 8, 127), ("mxfp4_e2m1_32", 8, 12),
    ("mxfp6_e3m2_32", 16, 448), ("mxfp8_e4m3_32", 32, 229376), ("int4_g128", 4, 7), ("int8_chan", 8, 127),
])
def test_containers_hold_every_code(name, bits, top):
    fmt = parse_format(name)
    assert (container_bits(fmt), max_code(fmt)) == (bits, top)


@pytest.mark.parametrize("name", ["mxint4_32", "mxint3_128", "mxfp4_e2m1_32", "mxfp6_e2m3_16", "mxint8_32",
                                  "int4_g128", "int8_chan", "int3_tens"])
def test_rtn_weights_encode_exactly_and_mx_exponents_are_the_quantizers(name):
    torch.manual_seed(0)
    w = torch.randn(24, 200) * torch.logspace(-3, 1, 24)[:, None]  # rows of very different scale
    fmt = parse_format(name)
    if fmt.is_mx:
        q, encoded = quantize_mx(w, fmt), encode(quantize_mx(w, fmt), fmt)
        assert encoded.exponents.shape == (24, -(-200 // fmt.block_size))
    else:
        q = quantize_int(w, fmt)
        encoded = encode(q, fmt, int_scales(w, fmt))
    assert torch.equal(encoded.dequantize(), q)
    assert int(encoded.codes.abs().max()) <= max_code(fmt)


def test_gptq_records_the_classic_int_scales_it_used():
    torch.manual_seed(0)
    w, x = torch.randn(32, 256), torch.randn(512, 256)
    acc = HessianAccumulator(256)
    acc.add_batch(x)
    fmt = parse_format("int4_g128")
    result = gptq_layer(w, acc.H, fmt, damp=0.01)
    assert result.scales.shape == (32, 2)
    assert torch.equal(encode(result.weight, fmt, result.scales).dequantize(), result.weight)


def test_a_weight_off_the_grid_is_refused():
    fmt = parse_format("int4_chan")
    w = torch.randn(4, 64)
    with pytest.raises(EncodingError, match="not on the format's grid"):
        encode(w, fmt, int_scales(w, fmt))
