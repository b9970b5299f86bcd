"""The local radial loss landscape around pre-trained weights (Xu et al. 2024, §2.2, Fig. 1–3).

w is the concatenation of all quantizable weights. Along a unit direction ê the weights move to
w + λ·ê with λ = ‖w‖·10^(−SNR/20), so that the perturbation's SNR is exactly SNR dB, and the NLL
is measured there. Directions: seeded random ones (ê uniform on the sphere: a normalised Gaussian),
or a quantizer's own error direction (Q(w) − w)/‖Q(w) − w‖, on which SNR = SQNR reaches Q(w).

The landscape feature of the loss predictor is the slope at the RTN point. We report it as
`slope_rtn` = −dNLL/dSNR of the typical (random-direction) profile at SNR = SQNR_rtn, in nats per
dB: positive, the loss gained per dB of SNR given up. It comes from a central difference at
SQNR_rtn ± `delta_db`, averaged over the directions — two evaluations per direction, on an
evaluation subset, far cheaper than GPTQ (Xu et al. App. E).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from pipelines.measure.nll import evaluate_nll
from pipelines.quantize.rtn import WeightBackup, WeightTarget
from pipelines.sources.token_windows import EvalWindows

DEFAULT_SNR_GRID_DB = tuple(float(s) for s in range(0, 42, 2))


def weight_norm(targets: list[WeightTarget]) -> float:
    """‖w‖ over the concatenation of the targets' weights."""
    return math.sqrt(sum(float(t.param.data.double().square().sum()) for t in targets))


class SeededDirection:
    """A seeded unit direction over all targets together, drawn part by part whenever it is iterated.

    Never held whole: its memory is one weight's, not the model's (a 1.5 B-parameter model's
    float32 direction alone is 6 GB, which with the model and its backup overflowed a 24 GB
    machine). Every pass redraws the same numbers from the seed on a CPU generator, so a seed is
    the same direction on every machine, and divides them by the norm measured once; each part
    is then moved to its weight's device. Iterating gives the float32 parts in target order.
    """

    def __init__(self, targets: list[WeightTarget], seed: int):
        self.targets, self.seed = targets, seed
        self.norm = math.sqrt(sum(float(p.double().square().sum()) for p in self._draws()))

    def _draws(self):
        gen = torch.Generator().manual_seed(self.seed)
        for t in self.targets:
            yield torch.randn(t.param.shape, generator=gen)

    def __iter__(self):
        for part, t in zip(self._draws(), self.targets):
            yield (part / self.norm).to(t.param.device)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> torch.Tensor:
        for i, part in enumerate(self):
            if i == index:
                return part
        raise IndexError(index)


def random_direction(targets: list[WeightTarget], seed: int) -> SeededDirection:
    """A seeded unit direction (over all targets together), one float32 tensor per target, drawn lazily."""
    return SeededDirection(targets, seed)


def difference_direction(targets: list[WeightTarget], moved: list[torch.Tensor]) -> list[torch.Tensor]:
    """Unit direction from the current weights towards `moved` (e.g. their RTN or GPTQ version)."""
    parts = [m.float() - t.param.data.float() for t, m in zip(targets, moved)]
    norm = math.sqrt(sum(float(p.double().square().sum()) for p in parts))
    if norm == 0:
        raise ValueError("the direction is zero: the moved weights equal the current ones")
    return [p / norm for p in parts]


@dataclass(frozen=True)
class ProfilePoint:
    """NLL (nats/token) at a perturbation of `snr_db` along direction `direction`."""

    direction: str
    snr_db: float
    nll: float


class Landscape:
    """Measures NLL at perturbed weights and always puts the weights back exactly."""

    def __init__(self, model, targets: list[WeightTarget], windows: EvalWindows, batch_size: int = 8):
        self.model, self.targets, self.windows, self.batch_size = model, targets, windows, batch_size
        self.norm = weight_norm(targets)

    @torch.no_grad()
    def nll_at(self, direction: Iterable[torch.Tensor], snr_db: float) -> float:
        """NLL at w + λ·ê with λ = ‖w‖·10^(−snr/20)."""
        if math.isinf(snr_db):
            return evaluate_nll(self.model, self.windows, self.batch_size).nll
        step = self.norm * 10 ** (-snr_db / 20)
        backup = WeightBackup(self.targets)
        try:
            for t, e in zip(self.targets, direction):
                t.param.data.add_((e * step).to(t.param.dtype))
            return evaluate_nll(self.model, self.windows, self.batch_size).nll
        finally:
            backup.restore()

    def profile(self, directions: dict[str, Iterable[torch.Tensor]],
                snr_grid_db=DEFAULT_SNR_GRID_DB) -> list[ProfilePoint]:
        """The radial profile along each named direction over the SNR grid."""
        return [ProfilePoint(name, float(s), self.nll_at(d, s))
                for name, d in directions.items() for s in snr_grid_db]

    def slope(self, snr_db: float, seeds=(0, 1, 2), delta_db: float = 1.0) -> float:
        """−dNLL/dSNR of the random-direction profile at `snr_db`, nats/dB (central difference)."""
        slopes = []
        for seed in seeds:
            e = random_direction(self.targets, seed)
            lower = self.nll_at(e, snr_db - delta_db)  # more noise
            upper = self.nll_at(e, snr_db + delta_db)
            slopes.append((lower - upper) / (2 * delta_db))
        return sum(slopes) / len(slopes)
