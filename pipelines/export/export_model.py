"""Quantize a model for real, export it to ONNX with low-bit weights, verify it, then publish it.

The steps, in a temporary folder next to the destination (renamed into place only once verified,
so a failed export never leaves a folder that looks complete):
1. load the model; RTN or GPTQ (calibration windows from the dataset's train split) in PyTorch;
   round the token embedding (and an output layer) to float16, as the export stores them;
2. encode every quantized weight as integer codes + scales (`pipelines.quantize.encoding`);
3. `optimum.exporters.onnx.main_export` (task text-generation-with-past), then replace each
   quantized weight by MatMulNBits or DequantizeLinear (`onnx_weights`, `ort_layout`) and store
   the embedding once at 16 bits (`embeddings`);
4. verify under onnxruntime's default session (`verify`) against the PyTorch-quantized model:
   logits within `LOGITS_ATOL`, NLL within `NLL_ATOL` nats/token, greedy generation identical,
   the weights' bytes equal to the layout's; then measure the runtime peak at `context` tokens in
   a fresh process (`runtime_peak`) beside the runtime memory model's estimate (`runtime_memory`);
5. write `quantization.json` and rename the folder into place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.export.embeddings import round_embeddings, store_embeddings_once
from pipelines.export.onnx_weights import quantize_initializers, quantized_bytes
from pipelines.export.ort_layout import linear_layout
from pipelines.export.runtime_memory import ModelShape, estimate
from pipelines.export.runtime_peak import PeakMeasurementError, measure_peak
from pipelines.export.verify import OrtAsTorch, compare_default_session, session_options  # noqa: F401 (API)
from pipelines.gptq.model import apply_gptq
from pipelines.measure.evaluate_formats import model_context, sequence_length
from pipelines.measure.nll import evaluate_nll
from pipelines.quantize.classic_int import int_scales
from pipelines.quantize.encoding import encode
from pipelines.quantize.formats import parse_format
from pipelines.quantize.rtn import apply_rtn, count_params, find_weights
from pipelines.sources.architecture import architecture
from pipelines.sources.corpus import load_corpus
from pipelines.sources.model_source import load_model
from pipelines.sources.token_windows import calibration_windows, evaluation_windows
from pipelines.tokenizer_check import refuse_broken_tokenizer
from store.errors import InputError

# onnxruntime's fp32 graph of SmolLM2-135M alone differs from PyTorch by 1.1e-4 (summation order
# over 30 layers); 1e-3 leaves room for that and still catches any wrong code or scale (≥ 1e-2).
LOGITS_ATOL = 1e-3
NLL_ATOL = 1e-4  # nats/token: the default session computes what PyTorch computes
PEAK_RUNS = 2
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
    context: int = 4096  # tokens the runtime peak is measured at (capped at the model's context)
    batch: int = 1
    device: str = "cpu"  # where GPTQ's Hessians and solves run; verification runs on the CPU beside onnxruntime


def check_destination(out: Path, force: bool) -> None:
    """Refuse, before any work, a destination that is a file, non-empty (unless `force`), or that
    cannot be created: its nearest existing ancestor must be a folder this process may write."""
    if out.exists() and not out.is_dir():
        raise ExportInputError(f"{out} is a file: the export needs a folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportInputError(f"{out} exists and is not empty: choose another --out or pass --force")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ExportInputError(f"cannot create {out}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportInputError(f"cannot create {out}: {ancestor} is not writable")


def check_exportable(fmt):
    """`fmt` if its codes fit an ONNX integer container, else ExportInputError (before any work)."""
    try:
        fmt.container_bits  # noqa: B018  (raises for codes wider than 32 bits)
    except ValueError:
        raise ExportInputError(f"{fmt.name} cannot be exported: its codes (up to {fmt.max_code:,} steps of the "
                               "smallest value) need more than 32 bits, the widest ONNX integer container; "
                               "choose a format with fewer exponent bits (e.g. mxfp8_e4m3_32)") from None
    return fmt


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
    """The quantized weights' bytes: at P bits and in integer containers (`Format.storage_bytes`, what
    the advisor's weights-only memory model sums), and as this export stores them (`ort_layout`)."""
    shapes = [tuple(t.as_out_in().shape) for t in targets]
    layout = linear_layout(fmt)
    return {"format_bytes": sum(fmt.storage_bytes(o, i) for o, i in shapes),
            "container_bytes": sum(fmt.storage_bytes(o, i, container=True) for o, i in shapes),
            "stored_bytes": sum(layout.file_bytes(o, i, fmt) for o, i in shapes)}


def model_shape(model, targets) -> ModelShape:
    """The runtime memory model's view of a loaded model and its quantized Linears."""
    facts = architecture(model)
    shapes = Counter(tuple(t.as_out_in().shape) for t in targets)
    tables = facts["vocab_size"] * facts["hidden_size"] * (1 if facts["tied_embeddings"] else 2)
    return ModelShape(layers=facts["layers"], hidden_size=facts["hidden_size"],
                      intermediate_size=facts["intermediate_size"], heads=facts["heads"], kv_heads=facts["kv_heads"],
                      head_dim=facts["head_dim"], vocab_size=facts["vocab_size"], tied=facts["tied_embeddings"],
                      linear_shapes=tuple(sorted(shapes.items())),
                      rest_params=count_params(model) - sum(o * i * n for (o, i), n in shapes.items()) - tables)


def _problems(diff: float, ort_nll, torch_nll, generation: dict, onnx_bytes: int, expected: int) -> list[str]:
    problems = []
    if diff > LOGITS_ATOL:
        problems.append(f"logits differ by {diff:.3g} > {LOGITS_ATOL}")
    if abs(ort_nll.nll - torch_nll.nll) > NLL_ATOL:
        problems.append(f"NLL {ort_nll.nll:.6f} vs PyTorch {torch_nll.nll:.6f} (> {NLL_ATOL} nats/token)")
    if not generation["identical"]:
        problems.append(f"greedy generation diverges from PyTorch after {generation['identical_prefix']} "
                        f"of {generation['tokens']} tokens")
    if onnx_bytes != expected:
        problems.append(f"quantized bytes {onnx_bytes} vs layout {expected}")
    return problems


def export_quantized(config: ExportConfig, say=print) -> dict:
    """Run the whole export; returns the `quantization.json` record (also written in `out`)."""
    import onnx
    from optimum.exporters.onnx import main_export

    out = Path(config.out).resolve()
    check_destination(out, config.force)
    fmt = check_exportable(parse_format(config.format))
    if config.method not in ("rtn", "gptq"):
        raise ExportInputError(f"--method takes rtn or gptq, not {config.method!r}")
    corpus = load_corpus(config.dataset)
    model, tokenizer, source = load_model(config.model, dtype="float32", gguf_file=config.gguf_file,
                                          device=config.device)
    refuse_broken_tokenizer(model, tokenizer, source, corpus.validation)
    supported_architecture(model.config.model_type)
    seq_len = sequence_length(model, config.seq_len)
    context = min(config.context, model_context(model) or config.context)
    windows = evaluation_windows(tokenizer, corpus.validation, seq_len, max_windows=config.max_windows)
    start = time.perf_counter()
    say("PyTorch NLL of the unquantized model")
    fp_nll = evaluate_nll(model, windows)
    say(f"quantizing to {fmt.name} with {config.method}")
    targets, report, scales = _quantize(model, fmt, config.method, tokenizer, corpus, seq_len, config)
    # onnxruntime runs on the CPU: the quantized model is verified against it there
    model.to("cpu")
    scales = {name: scale.cpu() for name, scale in scales.items()}
    encoded = {t.name: encode(t.as_out_in(), fmt, scales.get(t.name)) for t in targets}
    rounded = round_embeddings(model)
    say("PyTorch NLL of the quantized model (embeddings at float16, as exported)")
    torch_nll = evaluate_nll(model, windows)
    shape = model_shape(model, targets)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(work / "torch")
        tokenizer.save_pretrained(work / "torch")
        say("exporting with optimum")
        main_export(str(work / "torch"), output=str(work / "onnx"), task=TASK, device="cpu")
        path = work / "onnx" / "model.onnx"
        graph = onnx.load(str(path))
        layout = linear_layout(fmt)
        replaced = quantize_initializers(graph, encoded, {n: _element_offset(fmt) for n in encoded}, layout)
        embedding = store_embeddings_once(graph, shape.vocab_size)
        onnx.save(graph, str(path))
        onnx_bytes = quantized_bytes(graph, replaced)
        del graph
        say("verifying under onnxruntime's default session")
        checked = compare_default_session(work / "onnx", model, windows)
        sizes = container_bytes(fmt, targets)
        problems = _problems(checked["logits_max_abs_diff"], checked["nll"], torch_nll, checked["generation"],
                             onnx_bytes, sizes["stored_bytes"])
        if problems:
            raise ExportError("verification failed: " + "; ".join(problems))
        say(f"measuring the runtime peak at {context} tokens in a fresh process")
        try:  # the larger of two runs: an allocator sometimes returns a freed buffer early
            runs = [measure_peak(work / "onnx", context, config.batch) for _ in range(PEAK_RUNS)]
        except PeakMeasurementError as err:
            raise ExportError(str(err)) from None
        peak = max(runs, key=lambda r: r["measured_peak_bytes"])
        peak["runs"] = [r["measured_peak_bytes"] for r in runs]
        planned = estimate(shape, fmt, context, config.batch)
        record = {
            "model": config.model, "model_fingerprint": source.fingerprint, "format": fmt.name,
            "method": config.method, "bits_per_weight": fmt.bits_per_weight,
            "calibration": {"dataset": corpus.spec, "dataset_digest": corpus.digest,
                            "windows": config.calibration_size if config.method == "gptq" else 0,
                            "seq_len": seq_len, "seed": config.seed,
                            **({"hessians": config.hessians} if config.method == "gptq" else {})},
            "evaluation": {"windows": len(windows.input_ids), "seq_len": seq_len, "split": "validation",
                           "session": "onnxruntime default (ORTModelForCausalLM.from_pretrained, no options)"},
            "nll_fp": fp_nll.nll, "nll_torch": torch_nll.nll, "nll_onnx": checked["nll"].nll,
            "bpb_onnx": checked["nll"].bits_per_byte, "sqnr_db": report.sqnr_db,
            "logits_max_abs_diff": checked["logits_max_abs_diff"], "generation": checked["generation"],
            "quantized_params": report.quantized_params,
            "onnx_quantized_bytes": onnx_bytes, **sizes,
            "container_bits": sorted({e.container_bits for e in encoded.values()}),
            "kernel": {"op": layout.op, "bits": layout.bits, "block": layout.block, "accuracy_level": 0}
            if layout.op == "MatMulNBits" else {"op": layout.op, "bits": layout.bits},
            "scale_storage": "int8 step exponent (E8M0 + element offset) per block" if fmt.is_mx
            else "float16 per group/channel/tensor",
            "embeddings": {"storage": "float16, stored once", "output_layer": embedding["output_layer"],
                           "bytes": embedding["bytes"], "rounded_params": rounded,
                           "quantized": False, "in_measured_loss": True},
            "onnx_file_bytes": path.stat().st_size,
            "stored_bytes_estimate": planned["stored_bytes"],
            "runtime": {"name": planned["runtime"], "context": context, "batch": config.batch},
            "estimated_runtime_bytes": planned["total"], "runtime_estimate": planned,
            "measured_peak_bytes": peak["measured_peak_bytes"], "runtime_measurement": peak,
            "model_shape": asdict(shape),
            "seconds": time.perf_counter() - start,
        }
        (work / "onnx" / "quantization.json").write_text(json.dumps(record, indent=2))
        if out.exists():
            shutil.rmtree(out)
        (work / "onnx").rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record
