"""GPTQ end to end on a real model: fp-network vs sequential Hessians vs the reference, against RTN.

The loss that matters is the model's, not one layer's: every arm quantizes all Linear weights of
the decoder blocks and measures the NLL on the evaluation windows (ΔNLL over the fp model, nats
per token). Arms:
  rtn          round to nearest (the format's own scale rule)
  gptq-fp      this project's GPTQ, Hessians from the unquantized network (Xu et al. §4.3), damp 0.01
  gptq-seq     this project's GPTQ, sequential Hessians (block by block), damp 0.01
  gptq-seq-search  the same with the per-layer damping grid (damp chosen by layer-output MSE)
  reference    IST-DASLab/gptq's GPTQ class on the same sequential Hessians, layer by layer (int and
               MX int formats only: it has no float-element quantizer; its int grid is min-max
               with 2^P levels, ours symmetric with 2^P - 1), from its own checkout
  gptq-seq-128 sequential with 128 calibration windows instead of 32 (--large-calibration formats)
  gptq-seq-wmse, gptq-seq-mse, gptq-seq-absmax, rtn-mse, rtn-absmax, rtn-wmse
               classic ints only: the int scales chosen by another objective than the method's
               default — GPTQ's is "hessian" (Σ_j H_jj (w_ij − q_ij)², gptq/layer.py), RTN's "wmse"
               (classic_int.py) — to see which scales each method wants

    python bench/bench_gptq_model.py --model ~/.cache/ptq-advisor/models/smollm2-135m \\
        --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf --reference bench/.work/gptq --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_gptq import reference_module  # noqa: E402
from bench.results_file import machine, write_section  # noqa: E402
from pipelines.gptq import layer as gptq_layer_module  # noqa: E402
from pipelines.gptq import model as gptq_model  # noqa: E402
from pipelines.gptq.layer import GPTQResult, output_mse  # noqa: E402
from pipelines.measure.nll import evaluate_nll  # noqa: E402
from pipelines.quantize import classic_int  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.quantize.rtn import WeightBackup, find_weights, rtn_quantized  # noqa: E402
from pipelines.sources.corpus import load_corpus  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.token_windows import calibration_windows, evaluation_windows  # noqa: E402

FORMATS = ("mxint4_32", "int4_g128", "mxint3_32", "mxfp4_e2m1_32", "int8_tens")
ARMS = ("rtn", "gptq-seq", "gptq-fp", "reference", "gptq-seq-search")
ARM_NOTES = {  # the legend under the table; int scales: classic ints only
    "rtn": "round to nearest (int scales by RTN's objective, wmse)",
    "gptq-seq": "GPTQ, sequential Hessians, damp 0.01 (int scales weighed by H_jj since 2026-12-05; "
                "rows measured before that used wmse)",
    "gptq-fp": "the same with fp-network Hessians",
    "reference": "IST-DASLab/gptq on our sequential Hessians",
    "gptq-seq-search": "gptq-seq with the per-layer damping search",
    "gptq-seq-128": "gptq-seq with 128 calibration windows",
    "gptq-seq-wmse": "gptq-seq with int scales by RTN's |w|²-weighted error (GPTQ's default before 2026-12-05)",
    "gptq-seq-mse": "gptq-seq with int scales by plain squared error",
    "gptq-seq-absmax": "gptq-seq with absmax int scales",
    "gptq-seq-choose": "gptq-seq run per layer with H_jj-weighted and with plain-MSE int scales, the lower "
                       "layer-output error kept (as the damping search does)",
}


def choosing_layer(original):
    """gptq-seq-choose: a drop-in for `gptq_layer` that runs it with each int scale objective and keeps
    the result of least layer-output error (computed from H, no forward pass)."""

    def run(weight, H, fmt, **options):
        if fmt.family != "int":
            return original(weight, H, fmt, **options)
        default, results = gptq_layer_module.INT_SCALE_OBJECTIVE, []
        try:
            for objective in ("hessian", "mse"):
                gptq_layer_module.INT_SCALE_OBJECTIVE = objective
                results.append(original(weight, H, fmt, **options))
        finally:
            gptq_layer_module.INT_SCALE_OBJECTIVE = default
        return min(results, key=lambda r: float(r.output_mse))

    return run


def reference_layer(ref):
    """A drop-in for `gptq_layer` that runs the reference's GPTQ on our Hessian."""
    ref_gptq, ref_quant, MXIntQuantizer = ref

    def run(weight, H, fmt, *, damp=0.01, damp_grid=(), blocksize=128, mx_mode="column"):
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        layer.weight.data = weight.detach().float().clone()
        g = ref_gptq.GPTQ(layer)
        g.H, g.nsamples = H.clone(), 1
        if fmt.is_mx:
            g.quantizer = MXIntQuantizer()
            g.quantizer.configure_mx(fmt.precision)
            groupsize = fmt.block_size
        else:
            g.quantizer = ref_quant.Quantizer()
            g.quantizer.configure(fmt.precision, perchannel=fmt.granularity != "tensor", sym=True, mse=False)
            groupsize = fmt.block_size if fmt.granularity == "group" else -1
        g.fasterquant(blocksize=blocksize, percdamp=damp or 0.01, groupsize=groupsize)
        q = layer.weight.data
        return GPTQResult(q, damp or 0.01, output_mse(q - weight.float(), H), None)

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--gguf-file", default=None)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--large-calibration", default="mxint4_32,int4_g128",
                        help="Formats also run with 128 calibration windows (sequential Hessians).")
    parser.add_argument("--reference", type=Path, default=Path("bench/.work/gptq"))
    parser.add_argument("--dataset", default="shakespeare-milton")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--max-windows", type=int, default=16)
    parser.add_argument("--calibration-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="Rows so far (resumable: done rows are kept).")
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="Measure nothing: the table from --json's rows.")
    parser.add_argument("--note", default="", help="A sentence printed under the table's legend.")
    parser.add_argument("--title", default="GPTQ end to end",
                        help="The RESULTS.md section's heading (one section per title and model).")
    args = parser.parse_args(argv)
    saved = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    rows, fp, name = saved.get("rows", []), saved.get("fp_nll"), saved.get("model")
    ref = reference_module(args.reference) if "reference" in args.arms else None
    # arm by arm over all formats, the cheap and decisive arms first: a partial run already answers
    arms = args.arms.split(",")
    plan = [(f, a) for a in arms if a != "gptq-seq-search" for f in args.formats.split(",")]
    plan += [(f, "gptq-seq-128") for f in args.large_calibration.split(",") if f]
    plan += [(f, "gptq-seq-search") for f in args.formats.split(",") if "gptq-seq-search" in arms]
    plan = [] if args.report_only else plan
    loaded = None
    for fmt_name, arm in plan:
        if any(r["format"] == fmt_name and r["arm"] == arm for r in rows):
            continue
        fmt = parse_format(fmt_name)
        if arm == "reference" and (ref is None or fmt.family not in ("int", "mxint")):
            continue
        suffix = arm.rsplit("-", 1)[-1]
        objective = suffix if suffix in classic_int.OBJECTIVES else None
        if (objective or arm == "gptq-seq-choose") and fmt.family != "int":
            continue  # MX scales are shared exponents: no objective to choose
        if loaded is None:  # only when something is left to measure (resumable from --json)
            model, tokenizer, source = load_model(args.model, dtype="float32", gguf_file=args.gguf_file)
            corpus = load_corpus(args.dataset)
            windows = evaluation_windows(tokenizer, corpus.validation, args.seq_len, max_windows=args.max_windows)
            calibration = {n: calibration_windows(tokenizer, corpus.train, args.seq_len, n, seed=0)
                           for n in (args.calibration_size, 128)}
            targets = find_weights(model)
            fp = evaluate_nll(model, windows, 8).nll
            name = Path(source.gguf_file or args.model).name
            loaded = True
        start = time.perf_counter()
        defaults = classic_int.DEFAULT_OBJECTIVE, gptq_layer_module.INT_SCALE_OBJECTIVE
        if objective and arm.startswith("rtn"):
            classic_int.DEFAULT_OBJECTIVE = objective  # both read at each scale fit
        elif objective:
            gptq_layer_module.INT_SCALE_OBJECTIVE = objective
        if arm.startswith("rtn"):
            with rtn_quantized(model, fmt, targets):
                nll = evaluate_nll(model, windows, 8).nll
        else:
            hessians = "fp" if arm == "gptq-fp" else "sequential"
            damp = None if arm == "gptq-seq-search" else 0.01
            cal = calibration[128 if arm == "gptq-seq-128" else args.calibration_size]
            original = gptq_model.gptq_layer
            if arm == "reference":
                gptq_model.gptq_layer = reference_layer(ref)
            elif arm == "gptq-seq-choose":
                gptq_model.gptq_layer = choosing_layer(original)
            backup = WeightBackup(targets)
            try:
                gptq_model.apply_gptq(model, fmt, cal, targets=targets, hessians=hessians, damp=damp)
                nll = evaluate_nll(model, windows, 8).nll
            finally:
                backup.restore()
                gptq_model.gptq_layer = original
        classic_int.DEFAULT_OBJECTIVE, gptq_layer_module.INT_SCALE_OBJECTIVE = defaults
        rows.append({"format": fmt_name, "arm": arm, "delta_nll": nll - fp, "seconds": time.perf_counter() - start})
        print(json.dumps(rows[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"model": name, "fp_nll": fp, "rows": rows}, indent=1))
    arms = [a for a in args.arms.split(",")] + (["gptq-seq-128"] if args.large_calibration else [])
    chosen = "".join(f" --{flag} " + (value if value and " " not in value else f'"{value}"') for flag, value in (
        ("formats", args.formats), ("arms", args.arms), ("large-calibration", args.large_calibration),
        ("title", args.title), ("note", args.note)) if value != parser.get_default(flag.replace("-", "_")))
    lines = [f"### {args.title}: {name}", "",
             f"Machine: {machine()}. {args.dataset}: calibration {args.calibration_size} x {args.seq_len} tokens "
             f"(train split, seed 0), evaluation {args.max_windows} x {args.seq_len} (validation); NLL_fp "
             f"{fp:.4f} nats/token. ΔNLL in nats/token (lower is better); '–' = not run for that format.", "",
             f"Command: `python bench/bench_gptq_model.py --model {args.model} "
             f"{'--gguf-file ' + args.gguf_file if args.gguf_file else ''}{chosen} --json FILE --write bench/RESULTS.md`",
             "",
             "| format | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for fmt_name in args.formats.split(","):
        cells = []
        for arm in arms:
            hit = [r for r in rows if r["format"] == fmt_name and r["arm"] == arm]
            cells.append(f"{hit[0]['delta_nll']:.4f}" if hit else "–")
        lines.append(f"| {fmt_name} | " + " | ".join(cells) + " |")
    lines += ["", "Arms: " + "; ".join(f"{a} = {ARM_NOTES[a]}" for a in arms if a in ARM_NOTES) + "."]
    lines += ["", args.note] if args.note else []
    print("\n".join(lines))
    if args.write:
        key = "gptq-model" if args.title == parser.get_default("title") else "-".join(args.title.lower().split())
        write_section(args.write, f"{key}-{name}", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
