"""The micro-suite's presets: sizes, token budgets and checkpoints (no torch: the CLI lists them).

`cpu-small` is the smallest useful suite on a 2-core CPU; `gpu` the same design with 1.5 decades
more compute, for a CUDA machine (bring a larger corpus with --dataset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ZooSize:
    """One model size of the suite (Llama layout, multi-head attention, tied embeddings)."""

    name: str
    hidden: int
    layers: int
    heads: int
    lr: float | None = None  # peak learning rate when not the preset's (wider models need less, as in Pythia)

    def peak_lr(self, preset: "ZooPreset") -> float:
        return preset.lr if self.lr is None else self.lr

    @property
    def intermediate(self) -> int:
        return int(self.hidden * 8 / 3) // 8 * 8  # Llama's SwiGLU width rule, a multiple of 8


@dataclass(frozen=True)
class ZooPreset:
    """Everything that fixes a suite: sizes, tokens, checkpoints, data and optimisation."""

    name: str
    sizes: tuple[ZooSize, ...]
    max_tokens: int  # D of the last checkpoint, per size
    checkpoints: int  # log-spaced from max_tokens / 2**(checkpoints-1) to max_tokens
    vocab_size: int = 4096
    seq_len: int = 256
    batch: int = 16
    lr: float = 2e-3
    warmup: float = 0.05  # fraction of steps
    min_lr: float = 0.1  # cosine floor, fraction of lr (Pythia decays to 10 %)
    eval_windows: int = 64
    dataset: str = "shakespeare-milton"
    description: str = ""

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    @property
    def total_steps(self) -> int:
        return math.ceil(self.max_tokens / self.tokens_per_step)

    def checkpoint_steps(self) -> list[int]:
        """Steps after which a checkpoint is saved: log-spaced tokens, factor 2 apart."""
        steps = {max(1, round(self.total_steps / 2 ** k)) for k in range(self.checkpoints)}
        return sorted(steps)


PRESETS = {
    # seconds: the tests' suite (python docs corpus, three sizes)
    "test": ZooPreset("test", (ZooSize("xs", 32, 1, 2), ZooSize("s", 64, 2, 4), ZooSize("m", 128, 2, 4)),
                      max_tokens=96 * 1024, checkpoints=3, vocab_size=512, seq_len=64, batch=16, lr=3e-3,
                      eval_windows=16, dataset="python-docs", description="test preset (seconds)"),
    # ~35 min on 2 CPU cores (fp32: no AVX-512 bf16 here, where bf16 is slower)
    "cpu-small": ZooPreset("cpu-small", (ZooSize("xs", 48, 2, 3), ZooSize("s", 96, 3, 3),
                                         ZooSize("m", 160, 4, 5), ZooSize("l", 256, 5, 8, lr=1e-3)),
                           max_tokens=3_276_800, checkpoints=7,
                           description="4 sizes, 55 k-3.9 M non-embedding params, 7 checkpoints 51 k-3.3 M tokens"),
    # a GPU: same design, 1.5 decades more compute; bring in a larger corpus with --dataset
    "gpu": ZooPreset("gpu", (ZooSize("s", 256, 6, 8), ZooSize("m", 512, 8, 8, lr=8e-4),
                             ZooSize("l", 768, 12, 12, lr=6e-4), ZooSize("xl", 1024, 16, 16, lr=5e-4)),
                     max_tokens=400_000_000, checkpoints=8, vocab_size=16384, seq_len=512, batch=64, lr=1e-3,
                     eval_windows=256, description="4 sizes, 5 M-200 M non-embedding params, up to 400 M tokens"),
}


def tokens_label(tokens: int) -> str:
    """`3.3M`, `51k`: a short label for a token count."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{unit}"
    return str(tokens)
