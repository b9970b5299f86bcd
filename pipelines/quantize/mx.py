"""Round-to-nearest into OCP Microscaling (MX v1.0) formats, vectorised and exact.

A block is K consecutive elements along the last dimension (a Linear weight's input dim), the
ragged tail zero-padded. The block shares the scale 2^S, S = floor(log2 max|x|) - emax_elem,
clamped to the E8M0 range [-127, 127]. Each element is rounded half-to-even onto its grid and
saturated to +-max_normal:
  int elements: multiples of 2^(S-(P-2)), |k| <= 2^(P-1) - 1 (sign-magnitude, symmetric);
  fp elements:  M mantissa bits at the element's own exponent, never below emin (subnormals).

Exponents come from the IEEE bits, never from float log2, which rounds values just below a power
of two up a binade. All scaling is by powers of two, so every step is exact in float32; blocks so
tiny or huge that a step would leave float32's normal range take an exact float64 path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.quantize.formats import Format
from pipelines.quantize.threads import chunk_elements, one_thread
from store.errors import InputError

E8M0_MIN, E8M0_MAX = -127, 127


def _floor_log2_biased(x: torch.Tensor) -> torch.Tensor:
    """floor(log2|x|) + bias from the exponent bits (float32 or float64), as an int tensor."""
    if x.dtype == torch.float64:
        return (x.view(torch.int64) >> 52) & 0x7FF
    return (x.view(torch.int32) >> 23) & 0xFF


def _pow2(exponent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exactly 2**exponent for integer exponents inside dtype's normal range."""
    if dtype == torch.float64:
        return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32)


def block_amax(blocks: torch.Tensor) -> torch.Tensor:
    """max|x| of each block of `blocks` [..., K], shape [..., 1]."""
    # amax and -amin beat abs().amax() and vector_norm(inf) severalfold on CPU: no |x| temporary.
    return torch.maximum(blocks.amax(-1, keepdim=True), blocks.amin(-1, keepdim=True).neg_())


def shared_exponents(amax: torch.Tensor, fmt: Format) -> torch.Tensor:
    """The E8M0 exponent S = floor(log2 amax) - emax_elem, clamped to [-127, 127]; int32."""
    if not bool(torch.isfinite(amax).all()):
        raise InputError("weight tensor holds NaN or Inf values; MX quantization needs finite weights")
    bias = 1023 if amax.dtype == torch.float64 else 127
    # A zero (or float32-subnormal) block gets the minimum exponent; zeros stay zeros anyway.
    exp = _floor_log2_biased(amax).to(torch.int32) - bias
    return (exp - fmt.element.emax).clamp_(E8M0_MIN, E8M0_MAX)


@dataclass(frozen=True)
class BlockScales:
    """Per-block constants of the element rounding, precomputed once per set of blocks."""

    dtype: torch.dtype  # float32, or float64 for blocks outside float32's normal range
    step: torch.Tensor | None = None  # int: 2^(S-(P-2)), [..., 1]
    inverse: torch.Tensor | None = None  # int: its reciprocal
    lowest: torch.Tensor | None = None  # fp: biased exponent S + emin (subnormal floor)
    bound: torch.Tensor | None = None  # fp: max_normal * 2^S


def block_scales(shared: torch.Tensor, fmt: Format, dtype: torch.dtype = torch.float32) -> BlockScales:
    """The rounding constants of blocks with shared exponents `shared` [..., 1]."""
    el = fmt.element
    if el.kind == "int":
        step_exp = shared - (el.precision - 2)
        return BlockScales(dtype, step=_pow2(step_exp, dtype), inverse=_pow2(-step_exp, dtype))
    bias, itype = (1023, torch.int64) if dtype == torch.float64 else (127, torch.int32)
    return BlockScales(dtype, lowest=(shared + (el.emin + bias)).to(itype),
                       bound=_pow2(shared, dtype) * el.max_normal)


def quantize_blocks(blocks: torch.Tensor, scales: BlockScales, fmt: Format,
                     out: torch.Tensor) -> None:
    """RTN of blocks [..., K] with their precomputed scales, written into `out` (same dtype)."""
    el = fmt.element
    dtype = blocks.dtype
    if el.kind == "int":
        limit = float(2 ** (el.precision - 1) - 1)
        torch.mul(blocks, scales.inverse, out=out)
        out.round_().clamp_(-limit, limit).mul_(scales.step)
        return
    bias, shift, itype = (1023, 52, torch.int64) if dtype == torch.float64 else (127, 23, torch.int32)
    # Per element: exponent p = max(floor(log2|x|), S + emin); step 2^(p - M). Everything below
    # runs in place on two integer scratch tensors: this loop is memory-bound.
    step = torch.bitwise_right_shift(blocks.view(itype), shift)
    step.bitwise_and_(0x7FF if dtype == torch.float64 else 0xFF)
    torch.maximum(step, scales.lowest, out=step)
    step.sub_(el.man_bits)  # biased exponent of the step
    inverse = torch.mul(step, -1).add_(2 * bias).bitwise_left_shift_(shift)
    step.bitwise_left_shift_(shift)
    torch.mul(blocks, inverse.view(dtype), out=out)
    out.round_().mul_(step.view(dtype))
    torch.minimum(out, scales.bound, out=out)
    torch.maximum(out, -scales.bound, out=out)


def needs_float64(shared: torch.Tensor, fmt: Format) -> bool:
    """True when some step or inverse step of these blocks leaves float32's normal range."""
    el = fmt.element
    low = el.emin - el.man_bits if el.kind == "fp" else -(el.precision - 2)
    high = el.emax + 1 if el.kind == "fp" else 1
    lo, hi = int(shared.min()), int(shared.max())
    return lo < -126 or lo + low < -126 or hi + high > 126


def quantize_mx(weight: torch.Tensor, fmt: Format) -> torch.Tensor:
    """RTN of `weight` to MX format `fmt`, blocks along the last dim; a new tensor, same dtype."""
    if not fmt.is_mx:
        raise ValueError(f"{fmt} is not an MX format")
    k = fmt.block_size
    n = weight.shape[-1]
    rows = weight.reshape(-1, n)
    n_blocks = -(-n // k)
    out = torch.empty(rows.shape, dtype=weight.dtype, device=weight.device)
    direct = weight.dtype == torch.float32 and n_blocks * k == n  # write straight into `out`
    chunk_rows = max(1, chunk_elements(rows) // (n_blocks * k))
    with one_thread():
        _quantize_chunks(rows, out, fmt, k, n, n_blocks, chunk_rows, direct)
    return out.reshape(weight.shape)


def _quantize_chunks(rows, out, fmt: Format, k: int, n: int, n_blocks: int, chunk_rows: int, direct: bool):
    for start in range(0, rows.shape[0], chunk_rows):
        x = rows[start:start + chunk_rows].float()
        if n_blocks * k != n:
            x = torch.nn.functional.pad(x, (0, n_blocks * k - n))
        blocks = x.reshape(x.shape[0], n_blocks, k)
        amax = block_amax(blocks)
        # A zero block stays zero under any scale: give it S = 0 so it never forces float64.
        shared = shared_exponents(amax, fmt).masked_fill_(amax == 0, 0)
        if needs_float64(shared, fmt):
            blocks = blocks.double()
        in_place = direct and blocks.dtype == torch.float32
        dst = out[start:start + chunk_rows] if in_place else torch.empty_like(blocks)
        quantize_blocks(blocks, block_scales(shared, fmt, blocks.dtype), fmt, dst.view(blocks.shape))
        if not in_place:
            out[start:start + chunk_rows] = dst.reshape(x.shape[0], -1)[:, :n]
