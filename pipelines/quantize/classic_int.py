"""Classic symmetric integer quantization with calibrated scales (Xu et al. 2024, App. C).

Codes are sign-magnitude like the MX ints, q in [-(2^(P-1)-1), 2^(P-1)-1], with one scale per
tensor, per output channel or per group of K input elements. Each scale is alpha * max|x| / qmax
with alpha chosen per scale group by an objective: a coarse grid over [0.2, 1] (absmax, alpha = 1,
included), then a fine grid around the best coarse point. Scales are stored as fp16, and the
search scores the fp16-rounded scale so that what is chosen is what is stored.

Objectives (OBJECTIVES): "mse" minimises the squared error, as Xu et al. do; it clips the few
large weights to round the many small ones finely, and on real models those outliers carry the
loss (SmolLM2 int8_tens: MSE loses ~1 nat/token where absmax loses ~0.05; bench_int_calibration).
"wmse" weighs each weight's squared error by its own square, a data-free stand-in for its share
of the layer's output, so clipping an outlier costs what it does end to end. "absmax" never clips.
The default is the one the end-to-end bench supports (bench/RESULTS.md). GPTQ, which has the layer's
Hessian H, uses "hessian": each weight's squared error weighed by H_jj of its input column — the
layer-output error of that weight alone — instead of a data-free stand-in (pipelines/gptq/layer.py).
"""

from __future__ import annotations

import torch

from pipelines.quantize.formats import Format
from pipelines.quantize.threads import chunk_elements, one_thread
from store.errors import InputError

COARSE_ALPHAS = torch.linspace(1.0, 0.2, 17)  # step 0.05
FINE_OFFSETS = torch.linspace(-0.05, 0.05, 21)  # step 0.005 around the coarse winner
FP16_TINY, FP16_MAX = 2.0**-24, 65504.0
OBJECTIVES = ("wmse", "mse", "absmax")
DEFAULT_OBJECTIVE = "wmse"


def _scales(amax: torch.Tensor, alpha: torch.Tensor, qmax: int) -> torch.Tensor:
    """fp16-representable scales for groups of max `amax` shrunk by `alpha`; never zero."""
    scale = (amax * alpha / qmax).clamp_(FP16_TINY, FP16_MAX)
    return scale.half().float()


def _fake_quant(x: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    return torch.div(x, scale).round_().clamp_(-qmax, qmax).mul_(scale)


def _sq_error(x: torch.Tensor, scale: torch.Tensor, qmax: int, weight: torch.Tensor | None) -> torch.Tensor:
    err = _fake_quant(x, scale, qmax).sub_(x)
    err = err.mul_(err)
    return (err if weight is None else err.mul_(weight)).sum(-1, keepdim=True)


def _search_scales(groups: torch.Tensor, qmax: int, objective: str,
                   error_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The fp16 scale minimising `objective` for each row of `groups` [G, n]; shape [G, 1]."""
    amax = torch.linalg.vector_norm(groups, ord=float("inf"), dim=-1, keepdim=True)
    if objective == "absmax":
        return _scales(amax, torch.tensor(1.0), qmax)
    weight = groups * groups if objective == "wmse" else error_weight if objective == "hessian" else None
    best_err = torch.full_like(amax, float("inf"))
    best_alpha = torch.ones_like(amax)
    for alpha in COARSE_ALPHAS.tolist():
        err = _sq_error(groups, _scales(amax, torch.tensor(alpha), qmax), qmax, weight)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_alpha = torch.where(better, alpha, best_alpha)
    coarse = best_alpha.clone()
    for offset in FINE_OFFSETS.tolist():
        alpha = (coarse + offset).clamp_(0.01, 1.0)
        err = _sq_error(groups, _scales(amax, alpha, qmax), qmax, weight)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_alpha = torch.where(better, alpha, best_alpha)
    return _scales(amax, best_alpha, qmax)


def _groups_view(x: torch.Tensor, fmt: Format) -> torch.Tensor:
    """[out, in] -> [G, n]: the rows of this view share one scale each."""
    if fmt.granularity == "tensor":
        return x.reshape(1, -1)
    if fmt.granularity == "channel":
        return x
    k = fmt.block_size
    pad = (-x.shape[1]) % k
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(-1, k)


def row_scales(groups: torch.Tensor, precision: int, objective: str | None = None,
               error_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The calibrated fp16 scale for each row of `groups` [G, n] at P bits; float32 [G, 1].

    `error_weight` ([1, n] or [G, n], objective "hessian" only): each weight's squared error is
    weighed by it, e.g. GPTQ's Hessian diagonal H_jj (pipelines/gptq/layer.py).
    """
    objective = objective or DEFAULT_OBJECTIVE
    if objective == "hessian" and error_weight is None:
        raise InputError("the 'hessian' int scale objective needs the error weights (a layer's Hessian diagonal)")
    if objective not in OBJECTIVES + ("hessian",):
        raise InputError(f"int scale objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    qmax = 2 ** (precision - 1) - 1
    groups = groups.float()
    step = max(1, chunk_elements(groups) // groups.shape[1])

    def weight_of(i):
        if error_weight is None or error_weight.shape[0] == 1:
            return error_weight
        return error_weight[i:i + step]

    with one_thread():
        return torch.cat([_search_scales(groups[i:i + step], qmax, objective, weight_of(i))
                          for i in range(0, groups.shape[0], step)])


def int_scales(weight: torch.Tensor, fmt: Format, objective: str | None = None) -> torch.Tensor:
    """The calibrated fp16 scales of a [out, in] weight, one per scale group, as float32 [G, 1]."""
    x = weight.float().reshape(-1, weight.shape[-1])
    return row_scales(_groups_view(x, fmt), fmt.precision, objective)


def quantize_int(weight: torch.Tensor, fmt: Format, objective: str | None = None) -> torch.Tensor:
    """RTN of `weight` to classic int format `fmt` (groups along the last dim); same dtype."""
    if fmt.family != "int":
        raise ValueError(f"{fmt} is not a classic int format")
    if not bool(torch.isfinite(weight).all()):
        raise InputError("weight tensor holds NaN or Inf values; int quantization needs finite weights")
    n = weight.shape[-1]
    x = weight.float().reshape(-1, n)
    qmax = 2 ** (fmt.precision - 1) - 1
    groups = _groups_view(x, fmt)
    q = _fake_quant(groups, int_scales(x, fmt, objective), qmax)
    if fmt.granularity == "group":
        q = q.reshape(x.shape[0], -1)[:, :n]
    return q.reshape(weight.shape).to(weight.dtype)
