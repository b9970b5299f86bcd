"""Where a real model's GPTQ variant spends its time: fp-network Hessians, per-layer solves, evaluation.

  .venv/bin/python bench/bench_gptq_time.py --write bench/RESULTS.md

The real-model study's sweep (`--hessians fp`) measures a GPTQ variant as: one pass of the 32 × 512
calibration tokens through the unquantized network collecting every layer's Hessian, GPTQ on each
linear weight with those Hessians (damping 0.01, column-wise MX), then the NLL on the 16 × 512
evaluation tokens. The Hessians do not depend on the format, so this says how much a per-model
cache of them would save per format — the largest part of the study's hours on a 2-core CPU.
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

# apply_gptq's own two stages, timed apart; not made public because any edit to pipelines/quantize
# changes code_version() and so every measured variant's key
from pipelines.gptq.layer import DAMP_GRID  # noqa: E402
from pipelines.gptq.model import _HessianHooks, _quantize_targets, _run  # noqa: E402
from pipelines.measure.nll import evaluate_nll  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.quantize.rtn import (  # noqa: E402
    QuantizationReport,
    WeightBackup,
    count_params,
    find_weights,
)
from pipelines.sources.corpus import load_corpus  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.token_windows import calibration_windows, evaluation_windows  # noqa: E402

CACHE = Path(os.environ.get("PTQ_ADVISOR_CACHE", Path.home() / ".cache" / "ptq-advisor"))


def timed(work) -> float:
    """Seconds `work()` takes."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(CACHE / "models" / "smollm2-135m"))
    parser.add_argument("--gguf-file", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--format", default="mxint4_32")
    parser.add_argument("--dataset", default="shakespeare-milton")
    parser.add_argument("--calibration-size", type=int, default=32)
    parser.add_argument("--max-windows", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="each stage takes minutes on a CPU")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the results")
    parser.add_argument("--write", help="the RESULTS.md to update")
    args = parser.parse_args()

    model, tokenizer, source = load_model(args.model, gguf_file=args.gguf_file)
    corpus = load_corpus(args.dataset)
    calibration = calibration_windows(tokenizer, corpus.train, args.seq_len, n=args.calibration_size, seed=0)
    windows = evaluation_windows(tokenizer, corpus.validation, args.seq_len, max_windows=args.max_windows)
    targets, fmt = find_weights(model), parse_format(args.format)
    stages = {"fp Hessians": [], "GPTQ solves": [], "evaluation": []}
    for _ in range(args.repeats):
        hooks = _HessianHooks(model, targets)
        stages["fp Hessians"].append(timed(lambda: _run(model, calibration, 8, hooks)))
        hooks.remove()
        backup = WeightBackup(targets)
        report = QuantizationReport(fmt, total_params=count_params(model), rest_bits=16)
        stages["GPTQ solves"].append(timed(lambda: _quantize_targets(
            targets, hooks.by_target, fmt, report, damp=0.01, damp_grid=DAMP_GRID, blocksize=128, mx_mode="column")))
        stages["evaluation"].append(timed(lambda: evaluate_nll(model, windows, 8)))
        backup.restore()
        print({k: round(v[-1], 1) for k, v in stages.items()}, flush=True)
    medians = {k: statistics.median(v) for k, v in stages.items()}
    total = sum(medians.values())
    body = "\n".join([
        f"## Where a GPTQ variant's time goes: {Path(args.model).name}, {fmt.name} (`bench/bench_gptq_time.py`)", "",
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; medians of "
        f"{args.repeats} run(s). Model `{args.gguf_file or args.model}` (sha256 {str(source.fingerprint)[:12]}), fp32; "
        f"calibration {args.calibration_size} × {args.seq_len} tokens, evaluation {len(windows.input_ids)} × "
        f"{args.seq_len} tokens of {args.dataset}; damping 0.01, column-wise MX. {args.note}".rstrip(), "",
        f"Command: `python bench/bench_gptq_time.py --format {fmt.name} --repeats {args.repeats} "
        + (f'--note "{args.note}" ' if args.note else "") + "--write bench/RESULTS.md`", "",
        "| stage | seconds | share |", "|---|---|---|",
        *(f"| {name} | {s:.1f} | {s / total:.0%} |" for name, s in medians.items()),
        f"| total | {total:.1f} | 100% |", "",
        "The fp Hessians are the same for every format of a model: cached per model, a sweep would "
        "pay them once instead of once per format."])
    print(body)
    if args.write:
        write_section(args.write, f"gptq-time-{fmt.name}", body)


if __name__ == "__main__":
    main()
