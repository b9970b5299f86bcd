"""Runtime memory of exported models: the runtime memory model's estimate against the measured peak.

  OMP_NUM_THREADS=1 nice .venv/bin/python bench/runtime_memory.py --write bench/RESULTS.md
      [--models smollm2-135m,gemma-3-270m] [--formats mxint4_32,int4_g128,mxfp4_e2m1_32,mxint8_32]
      [--contexts 512,2048] [--fit-contexts 1024,4096] [--repeats 3] [--report-only] [--fit]

Each model × format is exported once with `advisor export`'s pipeline (RTN; verified under
onnxruntime's default session: NLL within 1e-4 of PyTorch's, 20 greedy tokens identical) into
bench/.work/runtime-memory/, then run at each context in fresh processes (`runtime_peak`: peak RSS
minus the RSS before loading, the largest of `--repeats` runs; a row measured with fewer runs
gets more on the next invocation). Rows go to bench/runtime-memory.json
as they finish, so a killed run resumes where it stopped; `estimate_bytes` is recomputed from the
current memory model on every run (`--report-only` re-estimates and rewrites the table without
measuring).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.results_file import machine, write_section  # noqa: E402
from pipelines.export.runtime_memory import (  # noqa: E402
    ORT_CPU,
    ModelShape,
    OrtCpuConstants,
    estimate,
    parts,
    prepacked_bytes,
)
from pipelines.quantize.formats import parse_format  # noqa: E402
from store.paths import cache_root  # noqa: E402

WORK = ROOT / "bench" / ".work" / "runtime-memory"
JSON = ROOT / "bench" / "runtime-memory.json"
MODELS = {  # name → (folder or file under the cache's models/, GGUF file inside it)
    "smollm2-135m": ("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": ("gemma-3-270m-repaired", None),
    "qwen2.5-coder-0.5b": ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
}
FORMATS = "mxint4_32,int4_g128,mxfp4_e2m1_32,mxint8_32"
RUNTIME = "onnxruntime-cpu"


def exported(name: str, fmt: str, context: int) -> dict:
    """The export's quantization.json, exporting first when it is not there yet."""
    from pipelines.export.export_model import ExportConfig, export_quantized

    out = WORK / f"{name}-{fmt}"
    if (out / "quantization.json").exists():
        return json.loads((out / "quantization.json").read_text())
    folder, gguf = MODELS[name]
    config = ExportConfig(model=str(cache_root() / "models" / folder), format=fmt, method="rtn", out=str(out),
                          dataset="python-docs", gguf_file=gguf, seq_len=512, max_windows=8, context=context,
                          force=True)
    return export_quantized(config, say=lambda m: print(f"  {name} {fmt}: {m}", flush=True))


def shape_of(record: dict) -> ModelShape:
    data = dict(record["model_shape"])
    data["linear_shapes"] = tuple((tuple(s), n) for s, n in data["linear_shapes"])
    return ModelShape(**data)


def row(name: str, fmt: str, context: int, record: dict, runs: list[dict]) -> dict:
    best = max(runs, key=lambda r: r["measured_peak_bytes"])
    return {"model": name, "format": fmt, "runtime": RUNTIME, "context": context,
            "estimate_bytes": None, "measured_peak_bytes": best["measured_peak_bytes"],
            "measured_runs": [r["measured_peak_bytes"] for r in runs], "phases": best["phases"],
            "file_bytes": record["onnx_file_bytes"], "stored_bytes_estimate": record["stored_bytes_estimate"],
            "nll_fp": record["nll_fp"], "nll_torch": record["nll_torch"], "nll_onnx": record["nll_onnx"],
            "generation_identical_tokens": record["generation"]["identical_prefix"],
            "embeddings": record["embeddings"]["storage"], "kernel": record["kernel"],
            "model_shape": record["model_shape"], "onnxruntime": best["onnxruntime"]}


def estimated(rows: list[dict]) -> None:
    for r in rows:
        r["estimate_bytes"] = estimate(shape_of(r), parse_format(r["format"]), r["context"], 1, RUNTIME)["total"]


def fit(fit_rows: list[dict]) -> OrtCpuConstants:
    """Least-squares constants from the fit rows: the overhead (base + per layer) from the session's
    resident set minus the weights, then the activation multipliers from what the prefill added
    beyond KV cache, logits (unless they fit in `reused_buffers` freed score buffers, which is kept
    as set: it is where the measured peak stops growing by the logits) and unpacked-weight copies,
    rows weighted by 1 / measured peak."""
    import numpy as np

    zero = OrtCpuConstants(0.0, 0.0, 0.0, 0.0, ORT_CPU.reused_buffers)
    held, packed = {}, {}
    for r in fit_rows:  # per export: its largest session resident set minus the weights
        p = parts(shape_of(r), parse_format(r["format"]), r["context"], 1, zero)
        key = (r["model"], r["format"])
        held[key] = max(held.get(key, 0), r["phases"]["session_rss"] - p["weights"])
        packed[key] = prepacked_bytes(shape_of(r), parse_format(r["format"]))
    x = np.array([[1.0, packed[k]] for k in held])
    (base, residue), *_ = np.linalg.lstsq(x, np.array(list(held.values())), rcond=None)
    a, y = [], []
    for r in fit_rows:
        shape, c = shape_of(r), r["context"]
        p = parts(shape, parse_format(r["format"]), c, 1, zero)
        rest = r["measured_peak_bytes"] - p["weights"] - base - residue * packed[(r["model"], r["format"])] \
            - p["kv_cache"] \
            - p["logits"] + p["logits_reused"] - p["activations"]
        scale = 1 / r["measured_peak_bytes"]
        a.append([shape.heads * c * c * 4 * scale, c * (shape.hidden_size + shape.intermediate_size) * 4 * scale])
        y.append(rest * scale)
    (attention, token), *_ = np.linalg.lstsq(np.array(a), np.array(y), rcond=None)
    return OrtCpuConstants(round(float(base), -5), round(float(residue), 2), round(max(float(attention), 0), 2),
                           round(max(float(token), 0), 2), ORT_CPU.reused_buffers)


def table(rows: list[dict]) -> str:
    lines = ["| model | format | context | file MB | ÷ stored estimate | NLL PyTorch → ONNX (nats) | greedy | "
             "estimate MB | measured peak MB | error |", "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        error = r["estimate_bytes"] / r["measured_peak_bytes"] - 1
        lines.append(f"| {r['model']} | {r['format']} | {r['context']} | {r['file_bytes'] / 1e6:.1f} | "
                     f"{r['file_bytes'] / r['stored_bytes_estimate']:.3f} | {r['nll_torch']:.5f} → {r['nll_onnx']:.5f} | "
                     f"{r['generation_identical_tokens']}/20 | {r['estimate_bytes'] / 1e6:.1f} | "
                     f"{r['measured_peak_bytes'] / 1e6:.1f} | {error:+.1%} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    errors = [r["estimate_bytes"] / r["measured_peak_bytes"] - 1 for r in rows]
    files = [r["file_bytes"] / r["stored_bytes_estimate"] for r in rows]
    within = sum(abs(e) <= 0.05 for e in errors)
    return (f"{within} of {len(rows)} estimates within 5 % of the measured peak (largest error "
            f"{max(errors, key=abs):+.1%}); files {min(files):.3f}–{max(files):.3f}× their stored-bytes estimate; "
            f"NLL differences ≤ {max(abs(r['nll_onnx'] - r['nll_torch']) for r in rows):.1e} nats; greedy identical "
            f"in {sum(r['generation_identical_tokens'] == 20 for r in rows)} of {len(rows)}.")


def refit_note(rows: list[dict], fit_rows: list[dict]) -> str:
    """How much the judged rows depend on the constants: a refit on today's fit rows, side by side."""
    refit = fit(fit_rows)
    shifts, within = [], 0
    for r in rows:
        measured, shape, fmt = r["measured_peak_bytes"], shape_of(r), parse_format(r["format"])
        error = estimate(shape, fmt, r["context"], 1, RUNTIME, refit)["total"] / measured - 1
        shifts.append(abs(error - (r["estimate_bytes"] / measured - 1)))
        within += abs(error) <= 0.05
    return (f"Refitted on today's fit rows, the constants would be `{refit}`: {within} of {len(rows)} estimates within "
            f"5 %, no row's error moved by more than {max(shifts):.1%} points.")


def _smollm2_mxint4(rows: list[dict]) -> str:
    sizes = [r["file_bytes"] for r in rows if r["model"] == "smollm2-135m" and r["format"] == "mxint4_32"]
    return f"{sizes[0] / 1e6:.1f} MB = {sizes[0] / 171e6:.2f}×" if sizes else "not measured"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma-3-270m")
    parser.add_argument("--formats", default=FORMATS)
    parser.add_argument("--contexts", default="512,2048", help="the benchmark's contexts (its table)")
    parser.add_argument("--fit-contexts", default="1024,4096",
                        help="contexts measured only to fit the memory model's constants (fit_rows), never judged")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh-process runs per row; the peak is their largest (the allocator sometimes returns "
                             "~40 MB early; rows measured with fewer runs get more)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--fit", action="store_true", help="print the constants fitted on fit_rows and their errors")
    parser.add_argument("--write", default=None, help="bench/RESULTS.md")
    args = parser.parse_args()
    from pipelines.export.runtime_peak import measure_peak

    saved = json.loads(JSON.read_text()) if JSON.exists() else {}
    rows, fit_rows = saved.get("rows", []), saved.get("fit_rows", [])
    done = {(r["model"], r["format"], r["context"]) for r in rows} | \
        {(r["model"], r["format"], r["context"], "fit") for r in fit_rows}
    contexts = [(int(c), rows, ()) for c in args.contexts.split(",")]
    contexts += [(int(c), fit_rows, ("fit",)) for c in args.fit_contexts.split(",") if c]
    for name in [] if args.report_only else args.models.split(","):
        for fmt in args.formats.split(","):
            todo = [(c, into, tag) for c, into, tag in contexts if (name, fmt, c, *tag) not in done]
            if not todo:
                continue
            record = exported(name, fmt, contexts[0][0])
            for context, into, _ in todo:
                runs = [measure_peak(WORK / f"{name}-{fmt}", context) for _ in range(args.repeats)]
                into.append(row(name, fmt, context, record, runs))
                estimated(rows + fit_rows)
                JSON.write_text(json.dumps({"rows": rows, "fit_rows": fit_rows}, indent=1))
                print(table(into[-1:]).splitlines()[-1], flush=True)
    for r in [] if args.report_only else rows + fit_rows:  # rows measured with fewer runs get more
        if r["model"] in args.models.split(",") and len(r["measured_runs"]) < args.repeats:
            more = [measure_peak(WORK / f"{r['model']}-{r['format']}", r["context"])
                    for _ in range(args.repeats - len(r["measured_runs"]))]
            best = max(more, key=lambda m: m["measured_peak_bytes"])
            if best["measured_peak_bytes"] > r["measured_peak_bytes"]:
                r["measured_peak_bytes"], r["phases"] = best["measured_peak_bytes"], best["phases"]
            r["measured_runs"] += [m["measured_peak_bytes"] for m in more]
            JSON.write_text(json.dumps({"rows": rows, "fit_rows": fit_rows}, indent=1))
    estimated(rows + fit_rows)
    JSON.write_text(json.dumps({"rows": rows, "fit_rows": fit_rows}, indent=1))
    if args.fit:
        print(f"fitted on {len(fit_rows)} fit rows: {fit(fit_rows)}  (in use: {ORT_CPU})")
        print(table(fit_rows))
    body = "\n".join([
        "## Runtime memory of exports: estimate vs measured peak (`bench/runtime_memory.py`)", "",
        f"Machine: {machine()}; onnxruntime {rows[0]['onnxruntime']}, "
        "default session options. RTN exports (`advisor export` pipeline); embeddings stored once as float16 "
        "(their rounding is inside both NLLs); NLL on 8 validation windows of 512 tokens of python-docs under "
        "onnxruntime's default session; greedy = identical tokens of 20. Measured peak: RSS high-water mark "
        f"minus RSS before loading, in a fresh process (prefill of context − 1 tokens, one decode step), the "
        f"largest of {args.repeats} runs (spread: `measured_runs` in the JSON). Estimate: `pipelines/export/runtime_memory.py` (`advisor.memory."
        f"runtime_bytes`) with `{ORT_CPU}`, set from `--fit` on the fit rows (contexts {args.fit_contexts}, "
        "not judged here). Rows: `bench/runtime-memory.json`.", "", table(rows), "", summary(rows), "", refit_note(rows, fit_rows),
        "",
        "Goals (issue 28): every estimate within 5 % of the measured peak — missed on one row, as the summary says; "
        "every file ≤ 1.05× its stored-bytes estimate; SmolLM2 mxint4_32 ≤ 0.7× the 171 MB export before MatMulNBits "
        f"and float16 embeddings: {_smollm2_mxint4(rows)}."])
    print(body)
    if args.write:
        write_section(args.write, "runtime-memory", body)


if __name__ == "__main__":
    main()
