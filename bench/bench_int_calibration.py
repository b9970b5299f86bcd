"""Classic int scales on a real model: which objective loses least end to end (RTN ΔNLL).

Compares the scale search objectives of `pipelines/quantize/classic_int.py` on the study's setup
(shakespeare-milton, 16 windows x 512 tokens) for the classic int formats, RTN only:
    python bench/bench_int_calibration.py --model ~/.cache/ptq-advisor/models/smollm2-135m \
        --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.results_file import machine, write_section  # noqa: E402
from pipelines.measure.nll import evaluate_nll  # noqa: E402
from pipelines.quantize import classic_int  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.quantize.rtn import find_weights, rtn_quantized  # noqa: E402
from pipelines.sources.corpus import load_corpus  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.token_windows import evaluation_windows  # noqa: E402

FORMATS = ("int8_tens", "int8_chan", "int4_chan", "int4_g128", "int3_g128", "int4_g32")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--gguf-file", default=None)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--objectives", default=",".join(classic_int.OBJECTIVES))
    parser.add_argument("--max-windows", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    parser.add_argument("--write", default=None, help="Replace this section of a RESULTS.md file.")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    saved = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    rows = saved.get("rows", [])
    todo = [(f, o) for f in args.formats.split(",") for o in args.objectives.split(",")
            if not any(r["format"] == f and r["objective"] == o for r in rows)]
    name = saved.get("model")
    fp = saved.get("fp_nll")
    if todo:  # resumable: rows already in --json are kept
        model, tokenizer, source = load_model(args.model, dtype="float32", gguf_file=args.gguf_file)
        corpus = load_corpus("shakespeare-milton")
        windows = evaluation_windows(tokenizer, corpus.validation, args.seq_len, max_windows=args.max_windows)
        targets = find_weights(model)
        fp = evaluate_nll(model, windows, 8).nll
        name = Path(source.gguf_file or args.model).name
    for fmt_name, objective in todo:
        fmt = parse_format(fmt_name)
        classic_int.DEFAULT_OBJECTIVE = objective
        start = time.perf_counter()
        with rtn_quantized(model, fmt, targets) as report:
            nll = evaluate_nll(model, windows, 8).nll
        rows.append({"format": fmt_name, "objective": objective, "delta_nll": nll - fp, "sqnr_db": report.sqnr_db,
                     "seconds": time.perf_counter() - start})
        print(json.dumps(rows[-1]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"model": name, "fp_nll": fp, "rows": rows}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": name, "fp_nll": fp, "rows": rows}, indent=2))
    if args.write:
        objectives = args.objectives.split(",")
        lines = [f"Model {name}, RTN, shakespeare-milton {args.max_windows} x {args.seq_len} tokens, "
                 f"NLL_fp {fp:.4f} nats/token; {machine()}. ΔNLL in nats/token (SQNR dB):", "",
                 "| format | " + " | ".join(objectives) + " |", "|---|" + "---|" * len(objectives)]
        for fmt in args.formats.split(","):
            cells = [next(r for r in rows if r["format"] == fmt and r["objective"] == o) for o in objectives]
            lines.append(f"| {fmt} | " + " | ".join(f"{c['delta_nll']:.4f} ({c['sqnr_db']:.1f})" for c in cells) + " |")
        command = "python bench/bench_int_calibration.py " + " ".join(argv or sys.argv[1:])
        write_section(args.write, f"int-objectives-{name}", "\n".join(
            [f"### Classic int scale objectives, RTN end to end ({name})", "", f"`{command}`", ""] + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
