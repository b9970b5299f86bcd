"""NLL harness overhead: `evaluate_nll` against bare forward passes over the same windows.

Both sides run the same model on the same batches; the harness adds the float32 cross-entropy,
label shifting and accumulation. Reported: median wall time of --repeats runs each, and the ratio
(target: harness <= 1.05x raw forward). Default model: the demo's tiny Llama (the worst case:
little compute per logit); pass --model for a real one.

    python bench/bench_nll.py --write bench/RESULTS.md [--model DIR --gguf-file F --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results_file import machine, write_section  # noqa: E402
from pipelines.measure.nll import evaluate_nll  # noqa: E402
from pipelines.sources.corpus import load_corpus  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.tiny_model import ensure_tiny_model, python_docs_text  # noqa: E402
from pipelines.sources.token_windows import evaluation_windows  # noqa: E402


def wall(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def raw_forward(model, ids, batch_size):
    for start in range(0, ids.shape[0], batch_size):
        model(input_ids=ids[start:start + batch_size], use_cache=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Model folder / GGUF / hub id [default: the demo's tiny Llama].")
    parser.add_argument("--gguf-file")
    parser.add_argument("--dataset", help="Text file [default: CPython docs].")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    cache = Path(os.environ.get("PTQ_ADVISOR_CACHE", Path.home() / ".cache" / "ptq-advisor"))
    if args.dataset:
        text = load_corpus(args.dataset).validation
    else:
        cache.mkdir(parents=True, exist_ok=True)
        docs = cache / "python-docs.txt"
        if not docs.exists():
            docs.write_text(python_docs_text(), encoding="utf-8")
        corpus = load_corpus(str(docs))
        text = corpus.validation
    spec = args.model or str(ensure_tiny_model(cache, text=None if args.dataset else corpus.train))
    model, tokenizer, _ = load_model(spec, dtype=args.dtype, gguf_file=args.gguf_file)
    windows = evaluation_windows(tokenizer, text, args.seq_len, max_windows=args.windows)
    raw = wall(lambda: raw_forward(model, windows.input_ids, args.batch_size), args.repeats)
    harness = wall(lambda: evaluate_nll(model, windows, args.batch_size), args.repeats)
    name = Path(spec).name
    body = "\n".join([
        f"## NLL harness overhead: {name}, {args.dtype}", "",
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"{windows.input_ids.shape[0]} windows x {args.seq_len} tokens, batch {args.batch_size}, "
        f"vocab {model.config.vocab_size}; median wall time of {args.repeats} runs.", "",
        f"Command: `python bench/bench_nll.py {' '.join(sys.argv[1:])}`", "",
        "| raw forward s | evaluate_nll s | ratio | target |", "|---|---|---|---|",
        f"| {raw:.3f} | {harness:.3f} | {harness / raw:.3f} | <= 1.05 |"])
    if args.write:
        section = f"nll-{'tiny' if args.model is None else Path(args.model).name}-{args.dtype}"
        write_section(args.write, section, body)
    print(body)


if __name__ == "__main__":
    main()
