"""Sweep throughput: Ray (one task per variant) against the local executor, on the same sweep.

  .venv/bin/python bench/bench_ray.py --write bench/RESULTS.md

Two tiny Llama models (bench/.work/ray/models, trained here once) × 6 formats × {RTN, GPTQ} = 24
variants, swept into a fresh sqlite store per repeat (so nothing is reused) by
`advisor sweep --executor local` and by `advisor sweep --executor ray` (a local Ray cluster started
by the command itself, as a user would run it), each as its own process, interleaved. Per-task
overhead: 200 empty Ray tasks on a running cluster, and the Ray sweep's extra wall time per variant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results_file import machine, write_section  # noqa: E402

WORK = ROOT / "bench" / ".work" / "ray"
FORMATS = "mxint3_32,mxint4_32,mxfp4_e2m1_32,int4_chan,int3_g128,mxint6_32"
SETTINGS = ["--seq-len", "128", "--max-windows", "8", "--calibration-size", "8", "--damp", "0.01",
            "--landscape-step", "0"]


def models() -> tuple[list[str], Path]:
    from pipelines.sources.tiny_model import (
        TinySpec,
        ensure_tiny_model,
        python_docs_text,
    )

    text = python_docs_text()
    folders = []
    for hidden, layers in ((64, 2), (96, 3)):
        spec = TinySpec(hidden=hidden, layers=layers, heads=4, intermediate=hidden * 3, steps=150, batch=8)
        folders.append(str(ensure_tiny_model(WORK / "models", spec, text=text[:400_000])))
    corpus = WORK / "docs.txt"
    corpus.write_text(text, encoding="utf-8")
    return folders, corpus


def sweep_seconds(executor: str, folders, corpus) -> float:
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cmd = [str(ROOT / ".venv" / "bin" / "advisor"), "sweep", "--models", ",".join(folders), "--formats",
               FORMATS, "--dataset", str(corpus), "--tracking-uri", uri, "--executor", executor,
               "--no-catalog", "--json", *SETTINGS]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_AUTH_MODE": "disabled"}
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=tmp, check=True, capture_output=True, text=True)
        return time.perf_counter() - start


def empty_task_ms(n: int = 200) -> tuple[float, float]:
    """(ray.init seconds, ms per empty task round trip on the running cluster)."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - start

    @ray.remote(num_cpus=1)
    def nothing(i):
        return i

    ray.get([nothing.remote(i) for i in range(20)])  # warm the workers
    start = time.perf_counter()
    ray.get([nothing.remote(i) for i in range(n)])
    per_task = (time.perf_counter() - start) / n * 1000
    ray.shutdown()
    return init_s, per_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", help="RESULTS.md to update")
    parser.add_argument("--note", default="", help="conditions worth recording (e.g. other load on the machine)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    folders, corpus = models()
    times = {"local": [], "ray": []}
    for i in range(args.repeats):
        for executor in ("local", "ray"):
            times[executor].append(sweep_seconds(executor, folders, corpus))
            print(f"repeat {i}: {executor} {times[executor][-1]:.1f} s", file=sys.stderr)
    init_s, task_ms = empty_task_ms()
    variants = 2 * len(FORMATS.split(",")) * 2
    local, ray_s = statistics.median(times["local"]), statistics.median(times["ray"])
    body = "\n".join([
        "## Sweep executors: Ray (a task per variant) vs local, same sweep", "",
        f"Machine: {machine()}. Command: `python bench/bench_ray.py --repeats {args.repeats} --write "
        "bench/RESULTS.md`. Each sweep a fresh process and a fresh sqlite store (nothing reused): 2 tiny "
        f"Llama models × 6 formats × RTN/GPTQ = {variants} variants; the Ray sweep starts its own local "
        "cluster, as `advisor sweep --executor ray` does for a user." + (f" {args.note}" if args.note else ""), "",
        "| executor | median wall s | runs (s) | variants/min | ratio to local |",
        "|---|---|---|---|---|",
        *(f"| {name} | {statistics.median(ts):.1f} | {', '.join(f'{t:.1f}' for t in ts)} | "
          f"{variants / statistics.median(ts) * 60:.1f} | {statistics.median(ts) / local:.2f}× |"
          for name, ts in times.items()), "",
        f"Ray overhead: `ray.init` of a local cluster {init_s:.1f} s; an empty task round trip "
        f"{task_ms:.2f} ms on a warm cluster; the Ray sweep's extra wall time over the local one, per "
        f"variant: {(ray_s - local) / variants:.2f} s (cluster start, a model load per worker, a "
        "parent-run task per model, and each worker importing torch/transformers/MLflow once).",
        *(["On this machine the local executor already uses every core, so Ray only adds overhead; "
           "its use is spreading a sweep over machines that share a tracking server."]
          if ray_s > local else []),
    ])
    print(body)
    if args.write:
        write_section(args.write, "ray-executor", body)


if __name__ == "__main__":
    main()
