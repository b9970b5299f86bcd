"""bf16 vs fp32 evaluation of a real model: does NLL agree within 0.002 nats, and is bf16 faster here?

The real-model study may evaluate in bf16 only where both hold (issue 11). Same windows, same
model file, loaded once per dtype; NLL of every window in both, and wall time per token.

    python bench/bench_bf16.py --model DIR --gguf-file F [--dataset shakespeare-milton] --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results_file import machine, write_section  # noqa: E402
from pipelines.measure.nll import summed_nll  # noqa: E402
from pipelines.sources.corpus import load_corpus  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.token_windows import evaluation_windows  # noqa: E402

TOLERANCE = 0.002  # nats/token, issue 11


def per_window(model, windows):
    """NLL (nats/token) of each window, and the wall seconds for all of them."""
    ids = windows.input_ids
    per_token = windows.predicted_tokens / ids.shape[0]  # windows are equal length
    start = time.perf_counter()
    with torch.inference_mode():
        values = [summed_nll(model, ids[i:i + 1], 1) / per_token for i in range(ids.shape[0])]
    return values, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--gguf-file")
    parser.add_argument("--dataset", default="shakespeare-milton")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    text = load_corpus(args.dataset).validation
    results = {}
    for dtype in ("float32", "bfloat16"):
        model, tokenizer, _ = load_model(args.model, dtype=dtype, gguf_file=args.gguf_file)
        windows = evaluation_windows(tokenizer, text, args.seq_len, max_windows=args.windows)
        with torch.inference_mode():
            summed_nll(model, windows.input_ids[:1], 1)  # warm-up
        values, seconds = per_window(model, windows)
        results[dtype] = (values, seconds, windows.predicted_tokens)
        del model
    (fp, fp_s, tokens), (bf, bf_s, _) = results["float32"], results["bfloat16"]
    mean_fp, mean_bf = statistics.fmean(fp), statistics.fmean(bf)
    worst = max(abs(a - b) for a, b in zip(fp, bf))
    agree = abs(mean_bf - mean_fp) <= TOLERANCE
    faster = bf_s < fp_s
    verdict = ("bf16 qualifies" if agree and faster else
               f"fp32 it is: bf16 {'agrees' if agree else 'disagrees'} and is {'faster' if faster else 'slower'}")
    name = Path(args.gguf_file or args.model).name
    body = "\n".join([
        f"## bf16 vs fp32 evaluation: {name}", "",
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"{len(fp)} windows x {args.seq_len} tokens of `{args.dataset}` (validation), one window per forward.", "",
        f"Command: `python bench/bench_bf16.py {' '.join(sys.argv[1:])}`", "",
        "| dtype | NLL (nats/token) | tokens/s |", "|---|---|---|",
        f"| float32 | {mean_fp:.4f} | {tokens / fp_s:.0f} |",
        f"| bfloat16 | {mean_bf:.4f} | {tokens / bf_s:.0f} |", "",
        f"Mean difference {mean_bf - mean_fp:+.4f} nats/token (tolerance ±{TOLERANCE}); largest single-window "
        f"difference {worst:.4f}. bf16 is {fp_s / bf_s:.2f}× the speed of fp32 here. Verdict: {verdict}."])
    if args.write:
        write_section(args.write, f"bf16-{name}", body)
    print(body)


if __name__ == "__main__":
    main()
