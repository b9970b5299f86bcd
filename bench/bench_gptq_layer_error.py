"""GPTQ vs RTN per layer on a real model: the layer-output error each leaves, with fp-network Hessians.

  .venv/bin/python bench/bench_gptq_layer_error.py --write bench/RESULTS.md

The real-model study found fp-Hessian GPTQ (Xu et al. §4.3) *raising* SmolLM2's loss at mxint4_32
while it should lower every layer's output error. This measures that per layer: Hessians of the
unquantized network from the sweep's calibration windows (32 × 512 tokens of shakespeare-milton's
training works, seed 0), then for each linear weight of the chosen blocks the output MSE
tr(ΔW H ΔWᵀ)/(2·out) after RTN and after GPTQ (damping 0.01). A ratio below 1 means GPTQ did its
job on that layer; a loss that rises anyway points at the Hessians (the inputs the quantized
network really feeds each layer), not at the solver.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from bench.results_file import machine, write_section  # noqa: E402
from pipelines.gptq.layer import gptq_layer, output_mse  # noqa: E402

# apply_gptq's own fp-Hessian pass, on a subset of targets; not made public because any edit to
# pipelines/quantize changes code_version() and so every measured variant's key
from pipelines.gptq.model import _HessianHooks, _run  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.quantize.rtn import find_weights, quantize_weight  # noqa: E402
from pipelines.sources.corpus import load_corpus  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.token_windows import calibration_windows  # noqa: E402

CACHE = Path(os.environ.get("PTQ_ADVISOR_CACHE", Path.home() / ".cache" / "ptq-advisor"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(CACHE / "models" / "smollm2-135m"))
    parser.add_argument("--gguf-file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--format", default="mxint4_32")
    parser.add_argument("--blocks", default="0,10,20,29", help="transformer block indices")
    parser.add_argument("--dataset", default="shakespeare-milton")
    parser.add_argument("--calibration-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--write", help="the RESULTS.md to update")
    args = parser.parse_args()

    start = time.perf_counter()
    model, tokenizer, source = load_model(args.model, gguf_file=args.gguf_file)
    corpus = load_corpus(args.dataset)
    calibration = calibration_windows(tokenizer, corpus.train, args.seq_len, n=args.calibration_size, seed=0)
    blocks = [int(b) for b in args.blocks.split(",")]
    targets = [t for t in find_weights(model) if any(f"layers.{b}." in t.name for b in blocks)]
    hooks = _HessianHooks(model, targets)
    _run(model, calibration, 8, hooks)
    hooks.remove()
    fmt = parse_format(args.format)
    rows = []
    for target in targets:
        weight = target.as_out_in().detach().float()
        H = hooks.by_target[target.name].H
        rtn = output_mse(quantize_weight(weight, fmt) - weight, H)
        gptq = gptq_layer(weight, H, fmt, damp=0.01).output_mse
        rows.append((target.name, rtn, gptq, gptq / rtn))
        print(f"{target.name:44s} RTN {rtn:.3e}  GPTQ {gptq:.3e}  ratio {gptq / rtn:.3f}", flush=True)
    ratios = [r[3] for r in rows]
    took = time.perf_counter() - start
    body = "\n".join([
        f"## GPTQ vs RTN per layer, fp-network Hessians: {Path(args.model).name}, {fmt.name} "
        "(`bench/bench_gptq_layer_error.py`)", "",
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads, {took:.0f} s. "
        f"Model `{args.gguf_file or args.model}` (sha256 {str(source.fingerprint)[:12]}); Hessians of the fp network "
        f"from {args.calibration_size} × {args.seq_len} calibration tokens of {args.dataset} (seed 0), "
        "damping 0.01. Output MSE = tr(ΔW H ΔWᵀ)/(2·out).", "",
        f"Command: `python bench/bench_gptq_layer_error.py --format {fmt.name} --blocks {args.blocks} "
        "--write bench/RESULTS.md`", "",
        f"GPTQ / RTN output MSE over {len(rows)} weights of blocks {args.blocks}: median {statistics.median(ratios):.3f}, "
        f"min {min(ratios):.3f}, max {max(ratios):.3f}.", "",
        "| weight | RTN output MSE | GPTQ output MSE | GPTQ / RTN |", "|---|---|---|---|",
        *(f"| {name} | {rtn:.3e} | {gptq:.3e} | {ratio:.3f} |" for name, rtn, gptq, ratio in rows)])
    if args.write:
        write_section(args.write, f"gptq-layer-error-{fmt.name}", body)


if __name__ == "__main__":
    main()
