"""One base model loaded for measuring: its windows, fp loss, variants and their keys (no MLflow)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.gptq.features import measure_gptq
from pipelines.measure.evaluate_formats import sequence_length
from pipelines.measure.features import FeatureSettings, measure_rtn
from pipelines.measure.nll import NllResult
from pipelines.quantize.rtn import find_weights
from pipelines.sources.corpus import load_corpus
from pipelines.sources.model_set import ModelEntry, short_name
from pipelines.sources.model_source import load_model
from pipelines.sources.token_windows import (
    calibration_windows,
    evaluation_and_subset_windows,
)
from pipelines.sweep.config import SweepConfig
from pipelines.sweep.measuring_code import core_code_version, method_code_version
from pipelines.tokenizer_check import refuse_broken_tokenizer
from store.keys import variant_key


def _numeric(record: dict, names: list[str]) -> dict:
    return {n: float(record[n]) for n in names if n in record and record[n] is not None}


def _evaluation(record: dict, method: str) -> dict:
    """`eval_bits` (32, or 16 for a checked 16-bit evaluation) and its `eval_gap_nats`, as run metrics."""
    names = {f"eval_bits_{method}": "eval_bits", f"eval_gap_{method}_nats": "eval_gap_nats"}
    return {short: float(record[long]) for long, short in names.items() if long in record}


@dataclass
class Variant:
    """One (format, method) of a model: its run name, key and params."""

    name: str
    key: str
    fmt: object  # pipelines.quantize.formats.Format
    method: str
    params: dict


class ModelContext:
    """What measuring any variant of one base model needs, loaded once per process (no MLflow)."""

    def __init__(self, config: SweepConfig, entry: ModelEntry):

        self.config, self.entry = config, entry
        self.corpus = load_corpus(config.dataset)
        self.model, self.tokenizer, self.source = load_model(entry.spec, dtype=config.dtype,
                                                             gguf_file=entry.gguf_file, device=config.device)
        refuse_broken_tokenizer(self.model, self.tokenizer, self.source, self.corpus.validation)
        self.seq_len = sequence_length(self.model, config.seq_len)
        self.name = entry.name or short_name(self.source.gguf_file or entry.spec)
        self.model_key = variant_key({"model": self.source.fingerprint, "dataset": self.corpus.digest,
                                      "settings": config.result_settings(), "code": core_code_version()})
        self.settings = FeatureSettings(slope_seeds=tuple(config.seed + i for i in range(3)),
                                        hessians=config.hessians, damp=config.damp,
                                        batch_size=config.batch_size, eval_dtype=config.eval_dtype)
        self.windows, self.slope_windows = evaluation_and_subset_windows(
            self.tokenizer, self.corpus.validation, self.seq_len, config.max_windows, config.slope_windows)
        self.targets = find_weights(self.model)
        self.fp = None  # NllResult, from the parent run or measured
        self._calibration = None

    def calibration(self):

        if self._calibration is None:
            self._calibration = calibration_windows(self.tokenizer, self.corpus.train, self.seq_len,
                                                    self.config.calibration_size, seed=self.config.seed)
        return self._calibration

    def fp_from(self, metrics: dict):

        self.fp = NllResult(metrics["nll_fp_total_nats"], self.windows.predicted_tokens,
                            self.windows.predicted_bytes)
        return self.fp

    def variants(self) -> list[Variant]:

        out = []
        for fmt in self.config.formats:
            base = {"format": fmt.name, "family": fmt.family, "precision": fmt.precision,
                    "exp_bits": fmt.exp_bits, "man_bits": fmt.man_bits,
                    "block_size": fmt.block_size or 0, "granularity": fmt.granularity}
            for method in self.config.methods:
                code = method_code_version(method) or core_code_version()
                out.append(Variant(f"{self.name} · {fmt.name} · {method}",
                                   self.variant_key(fmt.name, method),
                                   fmt, method, {**base, "method": method, "code_version": code}))
        return out

    def variant_key(self, format_name: str, method: str) -> str:
        """The key of one variant: its model's key, the format, the method and that method's own code."""
        fields = {"model": self.model_key, "format": format_name, "method": method}
        code = method_code_version(method)
        return variant_key(fields | {"code": code} if code else fields)

    def measure(self, variant: Variant):
        """(metrics, tables) of one variant; the model's weights are restored afterwards."""

        fmt, fp = variant.fmt, self.fp
        if variant.method == "rtn":
            r = measure_rtn(self.model, fmt, self.windows, self.slope_windows, fp, settings=self.settings,
                            targets=self.targets)
            m = _numeric(r, ["nll_rtn", "bpb_rtn", "sqnr_rtn_db", "slope_rtn", "bytes",
                             "bits_per_weight", "quantized_params", "seconds_rtn", "seconds_slope"])
            m.update(nll=r["nll_rtn"], delta_nll=r["nll_rtn"] - fp.nll, sqnr_db=r["sqnr_rtn_db"],
                     bpb=r["bpb_rtn"], **_evaluation(r, "rtn"))
            return m, {"layers_sqnr.json": r["layers"]}
        r = measure_gptq(self.model, fmt, self.windows, self.calibration(), settings=self.settings,
                         targets=self.targets)
        m = _numeric(r, ["nll_gptq", "bpb_gptq", "sqnr_gptq_db", "seconds_gptq", "damp_median"])
        m.update(nll=r["nll_gptq"], delta_nll=r["nll_gptq"] - fp.nll, sqnr_db=r["sqnr_gptq_db"],
                 bpb=r["bpb_gptq"], bytes=r["bytes"], bits_per_weight=fmt.bits_per_weight, **_evaluation(r, "gptq"))
        return m, {"layers_sqnr.json": r["gptq_layers"]}
