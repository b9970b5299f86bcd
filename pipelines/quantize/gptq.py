"""GPTQ (Frantar et al. 2022) for one weight matrix, with any format of the core.

    H = 2/T Σ x xᵀ over the T calibration tokens feeding the layer (`HessianAccumulator`).
    Dead inputs (H_dd = 0) get H_dd = 1 and a zero weight column; H += damp·mean(diag H)·I;
    U = upper Cholesky factor of H⁻¹. Columns are swept left to right in lazy blocks: each column
    is quantized, its error (w − q)/U_ii is spread over the columns not yet visited, and a block's
    errors reach the rest of the matrix in one matmul when the block is done.

Formats plug in through `GroupQuantizer`: an MX block's shared exponent (or an int group's scale)
is fitted from the already-updated weights when the sweep enters the block. Lazy blocks are
widened to a multiple of the group size so that no group straddles two of them (the reference
implementation fits such groups on stale weights). Two MX strategies:
  "column" — GPTQ proper: every column of a block is quantized and compensated in turn;
  "block"  — the block's K columns are quantized jointly, the error (W_b − Q_b)·U_bb⁻¹ spread to
             later columns (d-Matrix's OptimalBrainCompressor, as used by Sharify et al. 2024).
Xu et al.'s per-layer damping search picks, from a grid, the damping that minimises the layer's
output error on the calibration data: tr(ΔW H ΔWᵀ) / (2·out) = mean over tokens and outputs of
(ΔW x)², computed from H without another forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipelines.quantize.formats import Format
from pipelines.quantize.group_quantizer import GroupQuantizer

DAMP_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)  # Xu et al. §4.3


class HessianAccumulator:
    """Running H = 2/T Σ x xᵀ over the inputs of one layer (float32, on the inputs' device)."""

    def __init__(self, columns: int, device: torch.device | str = "cpu"):
        self.H = torch.zeros(columns, columns, device=device)
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        """Add activations [..., in] (every leading index is one token)."""
        x = inputs.reshape(-1, inputs.shape[-1]).float()
        n = x.shape[0]
        self.H *= self.tokens / (self.tokens + n)
        self.tokens += n
        x = x * (2.0 / self.tokens) ** 0.5
        self.H.addmm_(x.t(), x)


def output_mse(delta: torch.Tensor, H: torch.Tensor) -> float:
    """Mean squared layer-output error of a weight change ΔW [out, in] given H = 2/T Σ x xᵀ."""
    return float(torch.einsum("oi,ij,oj->", delta.double(), H.double(), delta.double())) / (2 * delta.shape[0])


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp·mean(diag H)·I)⁻¹, raising damping if H is singular."""
    mean_diag = float(torch.diag(H).mean())
    for attempt in range(6):
        Hd = H.clone()
        Hd.diagonal().add_(damp * mean_diag * 10**attempt)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0:
                return U
    raise FloatingPointError("GPTQ: the Hessian stays singular even with heavy damping")


@dataclass(frozen=True)
class GPTQResult:
    """A quantized weight [out, in], the damping used and its layer-output MSE on calibration data."""

    weight: torch.Tensor
    damp: float
    output_mse: float


def gptq_quantize(weight: torch.Tensor, H: torch.Tensor, fmt: Format, *, damp: float = 0.01,
                  blocksize: int = 128, mx_mode: str = "column") -> torch.Tensor:
    """GPTQ of `weight` [out, in] to `fmt` with Hessian `H` [in, in]; returns Q (float32)."""
    if mx_mode not in ("column", "block"):
        raise ValueError(f"mx_mode must be 'column' or 'block', not {mx_mode!r}")
    W = weight.detach().float().clone()
    H = H.float().clone()
    columns = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    quantizer = GroupQuantizer(fmt)
    group = quantizer.group_size
    if group is None:
        quantizer.fit(W)
    else:
        blocksize = -(-max(blocksize, group) // group) * group
    joint = fmt.is_mx and mx_mode == "block"
    U = _inverse_cholesky(H, damp)
    Q = torch.zeros_like(W)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        step = group if joint else 1
        for i in range(0, i2 - i1, step):
            if group is not None and i % group == 0:
                quantizer.fit(W1[:, i:i + group])
            j = min(i + step, i2 - i1)
            q = quantizer.quantize(W1[:, i:j])
            Q[:, i1 + i:i1 + j] = q
            if joint:  # the whole MX block at once: E = (W_b − Q_b) U_bb⁻¹
                err = torch.linalg.solve_triangular(U1[i:j, i:j], W1[:, i:j] - q, upper=True, left=False)
            else:
                err = (W1[:, i:j] - q) / U1[i, i]
            W1[:, j:] -= err @ U1[i:j, j:]
            Err1[:, i:j] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q


def gptq_layer(weight: torch.Tensor, H: torch.Tensor, fmt: Format, *, damp: float | None = 0.01,
               damp_grid: tuple[float, ...] = DAMP_GRID, blocksize: int = 128,
               mx_mode: str = "column") -> GPTQResult:
    """GPTQ with a fixed damping, or (`damp=None`) the grid damping of least layer-output MSE."""
    w = weight.detach().float()
    candidates = damp_grid if damp is None else (damp,)
    best = None
    for d in candidates:
        q = gptq_quantize(w, H, fmt, damp=d, blocksize=blocksize, mx_mode=mx_mode)
        mse = output_mse(q - w, H)
        if best is None or mse < best.output_mse:
            best = GPTQResult(q, d, mse)
    return best
