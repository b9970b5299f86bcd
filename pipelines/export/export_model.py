"""Quantize a model for real, export it to ONNX with low-bit weights, verify it, then publish it.

The steps, in a temporary folder next to the destination (renamed into place only once verified,
so a failed export never leaves a folder that looks complete):
1. load the model; RTN or GPTQ (calibration windows from the dataset's train split) in PyTorch;
2. encode every quantized weight as integer codes + scales (`pipelines.quantize.encoding`);
3. `optimum.exporters.onnx.main_export` (task text-generation-with-past), then replace each
   quantized weight's fp32 initializer by DequantizeLinear(codes, scales) (`onnx_weights`);
4. verify with onnxruntime against the PyTorch-quantized model: logits on the evaluation windows
   within `LOGITS_ATOL`, NLL within 0.5 %, the weights' bytes equal to the memory model's;
5. write `quantization.json` and rename the folder into place.
onnxruntime fuses 4-bit DequantizeLinear+MatMul into MatMulNBits and then, by default, quantizes
activations to int8; the verification (and `session_options()`) keeps it exact with
`session.qdq_matmulnbits_accuracy_level = 0`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.export.onnx_weights import quantize_initializers, quantized_bytes
from pipelines.gptq.model import apply_gptq
from pipelines.measure.evaluate_formats import sequence_length
from pipelines.measure.nll import evaluate_nll
from pipelines.quantize.classic_int import int_scales
from pipelines.quantize.encoding import encode
from pipelines.quantize.formats import parse_format
from pipelines.quantize.rtn import apply_rtn, find_weights
from pipelines.sources.corpus import load_corpus
from pipelines.sources.model_source import load_model
from pipelines.sources.token_windows import calibration_windows, evaluation_windows
from store.errors import InputError

# onnxruntime's fp32 graph of SmolLM2-135M alone differs from PyTorch by 1.1e-4 (summation order
# over 30 layers); 1e-3 leaves room for that and still catches any wrong code or scale (≥ 1e-2).
LOGITS_ATOL = 1e-3
NLL_RTOL = 0.005
TASK = "text-generation-with-past"


class ExportError(RuntimeError):
    """The export did not verify (the message says which check failed)."""


class ExportInputError(InputError, ExportError):
    """The export cannot start: destination, architecture or method (bad input)."""


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how to check it."""

    model: str
    format: str
    method: str
    out: str
    dataset: str
    gguf_file: str | None = None
    calibration_size: int = 128
    seq_len: int | None = None
    max_windows: int | None = 16
    damp: float | None = None
    hessians: str = "sequential"  # as the sweep's default, so the export is the variant the predictor was fitted on
    seed: int = 0
    force: bool = False


def session_options():
    """onnxruntime SessionOptions that keep fused 4-bit matmuls exact (no int8 activations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return options


class OrtAsTorch:
    """Lets `evaluate_nll` drive an ORTModelForCausalLM like a PyTorch model."""

    training = False

    def __init__(self, model):
        import torch

        self.model, self._param = model, torch.zeros(1)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def parameters(self):
        yield self._param

    def __call__(self, input_ids, use_cache=False):
        import torch

        return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))


def check_destination(out: Path, force: bool) -> None:
    """Refuse a non-empty destination unless `force`."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportInputError(f"{out} exists and is not empty: choose another --out or pass --force")


def supported_architecture(model_type: str) -> None:
    """Raise ExportError unless optimum can export `model_type` for text generation with past."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX export configs)
    from optimum.exporters.tasks import TasksManager

    supported = sorted(TasksManager.get_supported_model_type_for_task(TASK, exporter="onnx"))
    if model_type not in supported and model_type.replace("_", "-") not in supported:
        raise ExportInputError(f"optimum cannot export {model_type!r} for {TASK}; supported: {', '.join(supported)}")


def _quantize(model, fmt, method, tokenizer, corpus, seq_len, config):

    targets = find_weights(model)
    if method == "gptq":
        calibration = calibration_windows(tokenizer, corpus.train, seq_len, config.calibration_size,
                                          seed=config.seed)
        report, _ = apply_gptq(model, fmt, calibration, targets=targets, damp=config.damp,
                               hessians=config.hessians)
        return targets, report, report.scales
    scales = {} if fmt.is_mx else {t.name: int_scales(t.as_out_in(), fmt) for t in targets}
    return targets, apply_rtn(model, fmt, targets), scales


def _element_offset(fmt) -> int | None:
    if not fmt.is_mx:
        return None
    e = fmt.element
    return (e.emin - e.man_bits) if e.kind == "fp" else -(fmt.precision - 2)


def container_bytes(fmt, targets) -> dict:
    """The memory model of the quantized weights (`Format.storage_bytes`, which the advisor's
    memory model sums too): at P bits, and in the export's integer containers."""
    shapes = [tuple(t.as_out_in().shape) for t in targets]
    return {"format_bytes": sum(fmt.storage_bytes(o, i) for o, i in shapes),
            "container_bytes": sum(fmt.storage_bytes(o, i, container=True) for o, i in shapes)}


def export_quantized(config: ExportConfig, say=print) -> dict:
    """Run the whole export; returns the `quantization.json` record (also written in `out`)."""
    import onnx
    import torch
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTModelForCausalLM


    out = Path(config.out).resolve()
    check_destination(out, config.force)
    fmt = parse_format(config.format)
    if config.method not in ("rtn", "gptq"):
        raise ExportInputError(f"--method takes rtn or gptq, not {config.method!r}")
    corpus = load_corpus(config.dataset)
    model, tokenizer, source = load_model(config.model, dtype="float32", gguf_file=config.gguf_file)
    supported_architecture(model.config.model_type)
    seq_len = sequence_length(model, config.seq_len)
    windows = evaluation_windows(tokenizer, corpus.validation, seq_len, max_windows=config.max_windows)
    start = time.perf_counter()
    say("PyTorch NLL of the unquantized model")
    fp_nll = evaluate_nll(model, windows)
    say(f"quantizing to {fmt.name} with {config.method}")
    targets, report, scales = _quantize(model, fmt, config.method, tokenizer, corpus, seq_len, config)
    encoded = {t.name: encode(t.as_out_in(), fmt, scales.get(t.name)) for t in targets}
    say("PyTorch NLL of the quantized model")
    torch_nll = evaluate_nll(model, windows)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(work / "torch")
        tokenizer.save_pretrained(work / "torch")
        say("exporting with optimum")
        main_export(str(work / "torch"), output=str(work / "onnx"), task=TASK, device="cpu")
        path = work / "onnx" / "model.onnx"
        graph = onnx.load(str(path))
        replaced = quantize_initializers(graph, encoded, {n: _element_offset(fmt) for n in encoded})
        onnx.save(graph, str(path))
        onnx_bytes = quantized_bytes(graph, replaced)
        del graph
        say("verifying with onnxruntime")
        ort_model = ORTModelForCausalLM.from_pretrained(work / "onnx", session_options=session_options())
        with torch.no_grad():
            sample = windows.input_ids[: min(2, len(windows.input_ids))]
            diff = float((ort_model(input_ids=sample, attention_mask=torch.ones_like(sample)).logits
                          - model(input_ids=sample).logits).abs().max())
        ort_nll = evaluate_nll(OrtAsTorch(ort_model), windows)
        sizes = container_bytes(fmt, targets)
        record = {
            "model": config.model, "model_fingerprint": source.fingerprint, "format": fmt.name,
            "method": config.method, "bits_per_weight": fmt.bits_per_weight,
            "calibration": {"dataset": corpus.spec, "dataset_digest": corpus.digest,
                            "windows": config.calibration_size if config.method == "gptq" else 0,
                            "seq_len": seq_len, "seed": config.seed,
                            **({"hessians": config.hessians} if config.method == "gptq" else {})},
            "evaluation": {"windows": len(windows.input_ids), "seq_len": seq_len, "split": "validation"},
            "nll_fp": fp_nll.nll, "nll_torch": torch_nll.nll, "nll_onnx": ort_nll.nll,
            "bpb_onnx": ort_nll.bits_per_byte, "sqnr_db": report.sqnr_db,
            "logits_max_abs_diff": diff, "quantized_params": report.quantized_params,
            "onnx_quantized_bytes": onnx_bytes, **sizes,
            "container_bits": sorted({e.container_bits for e in encoded.values()}),
            "scale_storage": "uint8 E8M0 exponent per block" if fmt.is_mx else "float16 per group/channel/tensor",
            "onnx_file_bytes": path.stat().st_size,
            "session_config": {"session.qdq_matmulnbits_accuracy_level": "0"},
            "seconds": time.perf_counter() - start,
        }
        problems = []
        if diff > LOGITS_ATOL:
            problems.append(f"logits differ by {diff:.3g} > {LOGITS_ATOL}")
        if abs(ort_nll.nll - torch_nll.nll) > NLL_RTOL * torch_nll.nll:
            problems.append(f"NLL {ort_nll.nll:.5f} vs PyTorch {torch_nll.nll:.5f} (> 0.5 %)")
        if abs(onnx_bytes - sizes["container_bytes"]) > 0.01 * sizes["container_bytes"]:
            problems.append(f"quantized bytes {onnx_bytes} vs memory model {sizes['container_bytes']:.0f} (> 1 %)")
        if problems:
            raise ExportError("verification failed: " + "; ".join(problems))
        (work / "onnx" / "quantization.json").write_text(json.dumps(record, indent=2))
        if out.exists():
            shutil.rmtree(out)
        (work / "onnx").rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record
