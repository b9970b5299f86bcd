"""onnxruntime throughput of a low-bit export against the fp32 ONNX export of the same model.

  .venv/bin/python bench/bench_export.py --model DIR [--gguf-file F] --dataset TEXT --write bench/RESULTS.md

Exports the model twice into bench/.work/export (fp32 with optimum alone; `--format` with
`advisor export`'s pipeline, RTN), then times, on one thread and on all cores: a forward pass over
4 × 256 tokens (prefill tokens/s) and greedy generation of 32 tokens after a 64-token prompt
(decode tokens/s). The low-bit model runs exact (`qdq_matmulnbits_accuracy_level = 0`) and with
onnxruntime's default (int8 activations in the fused 4-bit matmul). Medians of 5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.results_file import machine, write_section  # noqa: E402

WORK = ROOT / "bench" / ".work" / "export"


def fp32_export(model: str, gguf_file: str | None, out: Path) -> None:
    from optimum.exporters.onnx import main_export

    from pipelines.sources.model_source import load_model

    if (out / "model.onnx").exists():
        return
    m, tok, _ = load_model(model, dtype="float32", gguf_file=gguf_file)
    m.save_pretrained(WORK / "fp32-torch")
    tok.save_pretrained(WORK / "fp32-torch")
    main_export(str(WORK / "fp32-torch"), output=str(out), task="text-generation-with-past", device="cpu")


def timings(folder: Path, exact: bool, threads: int, ids) -> dict:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if exact:
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    model = ORTModelForCausalLM.from_pretrained(folder, session_options=options)
    batch = ids[:4, :256]
    prefill, decode = [], []
    for _ in range(5):
        start = time.perf_counter()
        model(input_ids=batch, attention_mask=torch.ones_like(batch))
        prefill.append(batch.numel() / (time.perf_counter() - start))
        prompt = ids[:1, :64]
        start = time.perf_counter()
        model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32,
                       min_new_tokens=32, do_sample=False)
        decode.append(32 / (time.perf_counter() - start))
    return {"prefill": statistics.median(prefill), "decode": statistics.median(decode)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--gguf-file", default=None)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--format", default="mxint4_32")
    parser.add_argument("--write", help="RESULTS.md to update")
    args = parser.parse_args()
    import torch

    from pipelines.export.export_model import ExportConfig, export_quantized
    from pipelines.sources.corpus import load_corpus
    from pipelines.sources.model_source import load_model
    from pipelines.sources.token_windows import evaluation_windows

    WORK.mkdir(parents=True, exist_ok=True)
    fp32 = WORK / "fp32"
    fp32_export(args.model, args.gguf_file, fp32)
    low = WORK / args.format
    record = export_quantized(ExportConfig(model=args.model, format=args.format, method="rtn", out=str(low),
                                           dataset=args.dataset, gguf_file=args.gguf_file, seq_len=512,
                                           max_windows=4, force=True), say=lambda m: print(f"  {m}"))
    _, tokenizer, _ = load_model(args.model, dtype="float32", gguf_file=args.gguf_file)
    ids = evaluation_windows(tokenizer, load_corpus(args.dataset).validation, 256, max_windows=4).input_ids
    torch.set_num_threads(os.cpu_count())
    rows = []
    for threads in (1, os.cpu_count()):
        base = timings(fp32, True, threads, ids)
        exact = timings(low, True, threads, ids)
        fused = timings(low, False, threads, ids)
        rows.append((threads, base, exact, fused))
    size_fp32 = (fp32 / "model.onnx").stat().st_size
    lines = ["## Exported ONNX throughput (`bench/bench_export.py`)", "", f"Machine: {machine()}.", "",
             f"Command: `python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}`", "",
             f"Model: `{args.model}`{' / ' + args.gguf_file if args.gguf_file else ''}; {args.format} RTN export: "
             f"{record['onnx_file_bytes'] / 1e6:.1f} MB file vs {size_fp32 / 1e6:.1f} MB fp32 export; quantized "
             f"weights {record['onnx_quantized_bytes']:,} bytes = memory model {record['container_bytes']:,.0f}; "
             f"NLL onnxruntime {record['nll_onnx']:.4f} vs PyTorch {record['nll_torch']:.4f} nats/token "
             f"(4 × 512 validation tokens); logits max |Δ| {record['logits_max_abs_diff']:.2g}.", "",
             "| threads | fp32 prefill tok/s | low-bit exact | ratio | low-bit default (int8 act.) | ratio | "
             "fp32 decode tok/s | low-bit exact | ratio | low-bit default | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for threads, base, exact, fused in rows:
        lines.append(f"| {threads} | {base['prefill']:.0f} | {exact['prefill']:.0f} | {exact['prefill'] / base['prefill']:.2f}× | "
                     f"{fused['prefill']:.0f} | {fused['prefill'] / base['prefill']:.2f}× | {base['decode']:.1f} | "
                     f"{exact['decode']:.1f} | {exact['decode'] / base['decode']:.2f}× | {fused['decode']:.1f} | "
                     f"{fused['decode'] / base['decode']:.2f}× |")
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(args.write, "export", body)


if __name__ == "__main__":
    main()
