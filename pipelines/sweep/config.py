"""What a sweep is asked to do: models, formats, methods and the settings that change the numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipelines.quantize.formats import Format, parse_formats
from pipelines.sources.model_set import ModelEntry

METHODS = ("rtn", "gptq")


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; what changes the numbers goes into the variant keys."""

    models: tuple[ModelEntry, ...]
    formats: tuple[Format, ...]  # format strings and presets are parsed here, once
    dataset: str
    methods: tuple[str, ...] = METHODS
    experiment: str = "ptq-sweep"
    seq_len: int | None = None
    max_windows: int | None = None
    slope_windows: int = 2
    calibration_size: int = 128
    seed: int = 0
    hessians: str = "sequential"
    damp: float | None = None
    dtype: str = "float32"
    landscape_step_db: float = 4.0  # radial profile 0..40 dB at this step; 0 = no profile
    batch_size: int = 8
    device: str = "cpu"  # where weights, directions, Hessians and evaluation live
    eval_dtype: str = "float32"  # bfloat16/float16: checked 16-bit NLL evaluations (a GPU's fast path)

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(
            f if isinstance(f, Format) else g for f in self.formats
            for g in ([f] if isinstance(f, Format) else parse_formats([f]))))

    def result_settings(self) -> dict:
        """The settings that change measured values (keys of the runs).

        Not the device nor the evaluation dtype: a 16-bit evaluation is used only where it agrees
        with float32 within 0.002 nats/token, and each run records how it was evaluated, so runs
        measured on a GPU and on a CPU resume each other.
        """
        return {k: v for k, v in asdict(self).items()
                if k not in ("models", "formats", "methods", "experiment", "batch_size", "device", "eval_dtype")}
