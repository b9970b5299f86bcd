"""The MX quantizer on a shared machine: its time with a competing process on one core.

Issue 26's goal: under a competing load, no more than 1.3x the quantizer's own 1-thread time on an
idle machine, and still >= 5x faster than microxcaling (bench_quantizer.py measures that one). A
4096x4096 fp32 weight, mxint4_32 and mxfp4_e2m1_32, wall time (median of --repeats):
  idle, 1 thread               the reference point
  loaded, quantize_mx          what the sweep calls (one thread inside, pipelines/quantize/threads.py)
  loaded, 2 intra-op threads   the same chunks with torch's 2 threads: the behaviour before
The load is a second process spinning on the CPU (`--load-procs` of them).

    python bench/bench_contention.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results_file import machine, write_section  # noqa: E402
from pipelines.quantize import mx  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.quantize.threads import chunk_elements  # noqa: E402


def _spin(stop):
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def wall_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def chunks_with_threads(weight, fmt, threads: int):
    """quantize_mx's chunk loop run with `threads` intra-op threads (the code before one_thread)."""
    k, n = fmt.block_size, weight.shape[-1]
    rows = weight.reshape(-1, n)
    n_blocks = -(-n // k)
    out = torch.empty_like(rows)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        mx._quantize_chunks(rows, out, fmt, k, n, n_blocks, max(1, chunk_elements(rows) // (n_blocks * k)), True)
    finally:
        torch.set_num_threads(before)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--load-procs", type=int, default=1)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    weight = torch.randn(4096, 4096)
    rows = []
    for name in ("mxint4_32", "mxfp4_e2m1_32"):
        fmt = parse_format(name)
        idle = wall_ms(lambda: chunks_with_threads(weight, fmt, 1), args.repeats)
        stop = multiprocessing.Event()
        load = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load_procs)]
        for p in load:
            p.start()
        try:
            ours = wall_ms(lambda: mx.quantize_mx(weight, fmt), args.repeats)
            two = wall_ms(lambda: chunks_with_threads(weight, fmt, 2), args.repeats)
        finally:
            stop.set()
            for p in load:
                p.join()
        rows.append((name, idle, ours, two))
        print(name, f"idle 1 thread {idle:.0f} ms, loaded quantize_mx {ours:.0f} ms, loaded 2 threads {two:.0f} ms",
              flush=True)
    lines = ["## The MX quantizer under contention", "",
             f"Machine: {machine()}; torch {torch.__version__}. One 4096x4096 fp32 weight; wall ms, median of "
             f"{args.repeats}; load: {args.load_procs} spinning process(es). Goal: loaded ≤ 1.3x idle 1-thread.", "",
             "Command: `python bench/bench_contention.py --write bench/RESULTS.md`", "",
             "| format | idle, 1 thread | loaded, quantize_mx | ratio | loaded, 2 threads (before) | ratio |",
             "|---|---|---|---|---|---|"]
    for name, idle, ours, two in rows:
        lines.append(f"| {name} | {idle:.0f} | {ours:.0f} | {ours / idle:.2f}x | {two:.0f} | {two / idle:.2f}x |")
    if args.write:
        write_section(args.write, "mx-contention", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
