"""RTN with scales held fixed per group of input columns: the quantizer interface GPTQ drives.

GPTQ visits the columns of a [out, in] weight left to right and updates the columns it has not
reached. A format's scale is therefore fitted when the sweep *enters* its group, from the
already-updated weights: an MX block's shared exponent, a classic int group's calibrated scale
(weighed by the Hessian diagonal of those columns when GPTQ passes it). Formats whose scale spans
the whole row or tensor (int_chan, int_tens) are fitted once, before the sweep.
The element maths is the same code as plain RTN (`mx.py`, `classic_int.py`): one implementation.
"""

from __future__ import annotations

import torch

from pipelines.quantize.classic_int import row_scales
from pipelines.quantize.formats import Format
from pipelines.quantize.mx import (
    block_amax,
    block_scales,
    needs_float64,
    quantize_blocks,
    shared_exponents,
)


class GroupQuantizer:
    """Fit scales on a group of columns, then quantize columns of that group with them."""

    def __init__(self, fmt: Format):
        self.fmt = fmt
        self.group_size = fmt.block_size if fmt.granularity in ("block", "group") else None
        self._mx = None  # MX: BlockScales of the current group, [out, 1]
        self._scale = None  # classic int: float32 [out, 1] or [1, 1]
        self.fitted: list[torch.Tensor] = []  # classic int: every scale fitted, in column order

    def fit(self, columns: torch.Tensor, objective: str | None = None,
            error_weight: torch.Tensor | None = None) -> "GroupQuantizer":
        """Set the scales from `columns` [out, g] (the whole weight for tensor/channel scales).

        Classic ints: `objective` (classic_int's, default its DEFAULT_OBJECTIVE) and, for "hessian",
        `error_weight` [g], one weight per column (GPTQ's H_jj).
        """
        if self.fmt.is_mx:
            amax = block_amax(columns.float())
            shared = shared_exponents(amax, self.fmt).masked_fill_(amax == 0, 0)
            dtype = torch.float64 if needs_float64(shared, self.fmt) else torch.float32
            self._mx = block_scales(shared, self.fmt, dtype)
        elif self.fmt.granularity == "tensor":
            weight = None if error_weight is None else error_weight.expand(columns.shape).reshape(1, -1)
            self._scale = row_scales(columns.reshape(1, -1), self.fmt.precision, objective, weight)
        else:  # per channel, or one group: a scale per row over these columns
            weight = None if error_weight is None else error_weight.reshape(1, -1)
            self._scale = row_scales(columns, self.fmt.precision, objective, weight)
        if self._scale is not None:
            self.fitted.append(self._scale)
        return self

    def scales(self) -> torch.Tensor | None:
        """Classic int: the scales used, [out, groups] / [out, 1] / [1, 1]; MX: None (see encoding)."""
        return torch.cat(self.fitted, dim=1) if self.fitted else None

    def quantize(self, columns: torch.Tensor) -> torch.Tensor:
        """RTN of `columns` [out, c] with the fitted scales; float32."""
        x = columns.float()
        if self.fmt.is_mx:
            x = x.to(self._mx.dtype)
            out = torch.empty_like(x)
            quantize_blocks(x, self._mx, self.fmt, out)
            return out.float()
        qmax = 2 ** (self.fmt.precision - 1) - 1
        return torch.div(x, self._scale).round_().clamp_(-qmax, qmax).mul_(self._scale)
