"""Quantized weights as integer codes × scales: what an export stores instead of floats.

Every format here puts a quantized weight on an integer grid: value = code × step, one step per
MX block (a power of two), per classic-int group, channel or tensor (an fp16 number).
- MX: the block's shared exponent is re-derived from the quantized values themselves with the
  quantizer's own rule (S = floor(log2 max|q|) − emax_elem). Quantization is idempotent, so this
  is the exponent RTN used, and for GPTQ a block whose largest code fell below the top binade gets
  an exponent that is smaller but represents the same values. Element codes are the values in
  units of the element's smallest step: int elements 2^(S−(P−2)), float elements 2^(S+emin−M)
  (so FP4 E2M1's {0, 0.5, …, 6} become the integers {0, 1, …, 12}).
- Classic int: the fp16 scales the quantizer used, given (RTN recomputes them; GPTQ records them).
Every encoding is checked: codes × step must give back the quantized weight bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.quantize.formats import Format
from pipelines.quantize.mx import block_amax, shared_exponents
from store.errors import InputError


class EncodingError(InputError):
    """A weight that is not exactly on the format's grid."""


@dataclass
class EncodedWeight:
    """codes [out, in] (int64), steps [out, groups] (float32), and the container width in bits."""

    codes: torch.Tensor
    steps: torch.Tensor
    group_size: int  # input columns per step; in_features for a channel, out·in for a tensor scale
    exponents: torch.Tensor | None  # MX: the E8M0 shared exponent per block (int32), else None
    container_bits: int  # 4, 8, 16 or 32: the smallest signed integer type holding every code

    def dequantize(self) -> torch.Tensor:
        """codes × step, float32 [out, in]."""
        return self.codes.float() * _per_element(self.steps, self.group_size, self.codes.shape)


def _per_element(steps: torch.Tensor, group: int, shape) -> torch.Tensor:
    """The step of every element of a [out, in] weight."""
    if steps.numel() == 1:
        return steps.reshape(1, 1).expand(shape)
    return steps.repeat_interleave(group, dim=1)[:, :shape[1]]


def max_code(fmt: Format) -> int:
    """The largest |code| of the format's elements (in units of the smallest step)."""
    return fmt.max_code


def container_bits(fmt: Format) -> int:
    """Bits of the signed integer container of the codes (ONNX INT4 / INT8 / INT16 / INT32)."""
    try:
        return fmt.container_bits
    except ValueError as err:
        raise EncodingError(str(err)) from None


def _mx_steps(quantized: torch.Tensor, fmt: Format) -> tuple[torch.Tensor, torch.Tensor]:
    out, inp = quantized.shape
    k = fmt.block_size
    pad = (-inp) % k
    blocks = torch.nn.functional.pad(quantized.float(), (0, pad)).reshape(out, -1, k)
    exponents = shared_exponents(block_amax(blocks), fmt)[..., 0]  # [out, blocks]
    e = fmt.element
    offset = (e.emin - e.man_bits) if e.kind == "fp" else -(fmt.precision - 2)
    steps = torch.pow(2.0, (exponents + offset).double()).float()
    return exponents, steps


def encode(quantized: torch.Tensor, fmt: Format, scales: torch.Tensor | None = None) -> EncodedWeight:
    """Codes and steps of a weight [out, in] already quantized to `fmt`.

    `scales` (classic int only): the quantizer's fp16 scales, [out, groups] / [out, 1] / [1, 1].
    """
    q = quantized.detach().float()
    out, inp = q.shape
    exponents = None
    if fmt.is_mx:
        exponents, steps = _mx_steps(q, fmt)
        group = fmt.block_size
    else:
        if scales is None:
            raise EncodingError(f"{fmt.name}: classic-int encoding needs the quantizer's scales")
        steps = scales.detach().float().reshape(1 if fmt.granularity == "tensor" else out, -1)
        group = {"group": fmt.block_size, "channel": inp, "tensor": out * inp}[fmt.granularity]
    per_element = _per_element(steps, group, q.shape)
    codes = torch.where(per_element > 0, q / per_element, torch.zeros_like(q)).round().to(torch.int64)
    encoded = EncodedWeight(codes, steps, group, exponents, container_bits(fmt))
    limit = max_code(fmt)
    if int(encoded.codes.abs().max()) > limit or not torch.equal(encoded.dequantize(), q):
        raise EncodingError(f"{fmt.name}: the weight is not on the format's grid "
                            "(was it quantized with these scales?)")
    return encoded
