"""Round-to-nearest applied to a whole model: which weights, in place, reversibly, with a report.

By default every Linear weight inside the transformer blocks is quantized (Xu et al.: "weight
tensors in the transformer layers"); input embeddings and the output layer are switchable. The
blocks are the model's largest `nn.ModuleList` of same-class modules, which finds `model.layers`
(Llama, Qwen, Gemma) and `transformer.h` (GPT-2) without a per-architecture table. GPT-2's
`Conv1D` stores its weight as [in, out]: it is quantized along the same input dimension.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from pipelines.measure.sqnr import pooled_sqnr_db, sqnr_db
from pipelines.quantize.classic_int import quantize_int
from pipelines.quantize.formats import Format
from pipelines.quantize.mx import quantize_mx


def quantize_weight(weight: torch.Tensor, fmt: Format) -> torch.Tensor:
    """RTN of an [out, in] weight to `fmt` (blocks/groups along `in`); a new tensor, same dtype."""
    return quantize_mx(weight, fmt) if fmt.is_mx else quantize_int(weight, fmt)


@dataclass(frozen=True)
class WeightTarget:
    """One quantizable weight: its module name, parameter, and which axis is the input dim."""

    name: str
    param: nn.Parameter
    input_axis: int  # 1 for nn.Linear / nn.Embedding rows, 0 for GPT-2's Conv1D

    def as_out_in(self) -> torch.Tensor:
        """The weight viewed as [out, in] (a view, no copy)."""
        w = self.param.data
        return w if self.input_axis == 1 else w.t()


def transformer_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The model's largest ModuleList of same-class modules: its transformer blocks (or None)."""
    best = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            same = len({type(m) for m in module}) == 1
            if same and (best is None or len(module) > len(best)):
                best = module
    return best


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def find_weights(model: nn.Module, *, include_embeddings: bool = False,
                 include_lm_head: bool = False) -> list[WeightTarget]:
    """The weights RTN/GPTQ quantize, in module order, each shared tensor once."""
    blocks = transformer_blocks(model)
    if blocks is None:
        raise ValueError("found no transformer block list (nn.ModuleList) in the model")
    inside = {id(m) for m in blocks.modules()}
    targets: list[WeightTarget] = []
    seen: set[int] = set()

    def add(name: str, module: nn.Module) -> None:
        param = module.weight
        if id(param) in seen:
            return
        seen.add(id(param))
        conv1d = type(module).__name__ == "Conv1D"
        targets.append(WeightTarget(name, param, 0 if conv1d else 1))

    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if module is embed and include_embeddings:
            add(name, module)
        elif module is head and include_lm_head:
            add(name, module)
        elif id(module) in inside and _is_linear(module):
            add(name, module)
    return targets


@dataclass(frozen=True)
class LayerStats:
    """Quantization of one weight: sums of squares in float64, storage in bytes."""

    name: str
    out_features: int
    in_features: int
    signal_sq: float
    noise_sq: float
    storage_bytes: float

    @classmethod
    def of(cls, name: str, weight: torch.Tensor, quantized: torch.Tensor, fmt: Format) -> "LayerStats":
        """Stats of replacing an [out, in] `weight` by `quantized` in format `fmt`."""
        w = weight.double()
        return cls(name, w.shape[0], w.shape[1], float(w.square().sum()),
                   float((quantized.double() - w).square().sum()), fmt.storage_bytes(*w.shape))

    @property
    def numel(self) -> int:
        return self.out_features * self.in_features

    @property
    def sqnr_db(self) -> float:
        return sqnr_db(self.signal_sq, self.noise_sq)


@dataclass
class QuantizationReport:
    """What quantizing a model to one format did: D, bytes, SQNR pooled and per layer."""

    format: Format
    layers: list[LayerStats] = field(default_factory=list)
    total_params: int = 0
    rest_bits: int = 16  # unquantized parameters are counted at this width (deployment dtype)
    scales: dict = field(default_factory=dict)  # GPTQ, classic int: target name -> fp16 scales used

    @property
    def quantized_params(self) -> int:
        """D of Xu et al.: the number of quantized weight elements."""
        return sum(layer.numel for layer in self.layers)

    @property
    def quantized_bytes(self) -> float:
        return sum(layer.storage_bytes for layer in self.layers)

    @property
    def total_bytes(self) -> float:
        """Quantized weights with their scales + every other parameter at `rest_bits`, in bytes."""
        rest = self.total_params - self.quantized_params
        return self.quantized_bytes + rest * self.rest_bits / 8

    @property
    def sqnr_db(self) -> float:
        """SQNR over the concatenation of all quantized weights, in dB."""
        return pooled_sqnr_db(self.layers)

    def layer_table(self) -> list[dict]:
        """Per-layer rows (name, shape, numel, sqnr_db, bytes) for a table artifact."""
        return [{"layer": s.name, "out_features": s.out_features, "in_features": s.in_features,
                 "numel": s.numel, "sqnr_db": s.sqnr_db, "bytes": s.storage_bytes}
                for s in self.layers]


def count_params(model: nn.Module) -> int:
    """Number of distinct parameter elements (tied tensors once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


class WeightBackup:
    """A copy of the target weights, to undo quantization exactly."""

    def __init__(self, targets: list[WeightTarget]):
        self._saved = [(t.param, t.param.data.clone()) for t in targets]

    def restore(self) -> None:
        with torch.no_grad():
            for param, data in self._saved:
                param.data.copy_(data)


@torch.no_grad()
def apply_rtn(model: nn.Module, fmt: Format, targets: list[WeightTarget] | None = None,
              *, rest_bits: int = 16) -> QuantizationReport:
    """Quantize `targets` (default: `find_weights(model)`) in place to `fmt`; return the report."""
    targets = find_weights(model) if targets is None else targets
    report = QuantizationReport(fmt, total_params=count_params(model), rest_bits=rest_bits)
    for target in targets:
        w = target.as_out_in()
        q = quantize_weight(w, fmt)
        report.layers.append(LayerStats.of(target.name, w, q, fmt))
        w.copy_(q)
    return report


@contextmanager
def rtn_quantized(model: nn.Module, fmt: Format, targets: list[WeightTarget] | None = None,
                  *, rest_bits: int = 16):
    """Context manager: the model quantized to `fmt` inside, restored exactly on exit."""
    targets = find_weights(model) if targets is None else targets
    backup = WeightBackup(targets)
    try:
        yield apply_rtn(model, fmt, targets, rest_bits=rest_bits)
    finally:
        backup.restore()
