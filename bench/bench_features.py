"""Cost of the predictor's feature vector vs GPTQ + evaluation, for one variant of a real model.

Features (what the predictor needs): RTN quantization with its SQNR, NLL after RTN on the
evaluation windows, and the landscape slope (3 seeded directions x 2 points on --slope-windows
windows). Target path (what the predictor saves): GPTQ (Hessians from --calibration-size
windows, per-layer damping search, the solve) and NLL after GPTQ on the same evaluation windows.
NLL_fp is shared by every format of a model and reported apart. Goal (issue 3): features <= 10 %.

    python bench/bench_features.py --model SmolLM2-135M-Instruct.Q4_1.gguf --dataset docs.txt \\
        --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results_file import machine, write_section  # noqa: E402
from pipelines.measure.evaluate_formats import measure_variant
from pipelines.measure.features import FeatureSettings  # noqa: E402
from pipelines.measure.nll import evaluate_nll  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.sources.corpus import load_corpus  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.token_windows import calibration_windows, evaluation_windows  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--gguf-file")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--format", default="mxint4_32")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--slope-windows", type=int, default=2)
    parser.add_argument("--calibration-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    model, tok, _ = load_model(args.model, dtype=args.dtype, gguf_file=args.gguf_file)
    corpus = load_corpus(args.dataset)
    windows = evaluation_windows(tok, corpus.validation, args.seq_len, max_windows=args.windows)
    slope_windows = evaluation_windows(tok, corpus.validation, args.seq_len, max_windows=args.slope_windows)
    calibration = calibration_windows(tok, corpus.train, args.seq_len, args.calibration_size)
    fmt = parse_format(args.format)
    settings = FeatureSettings(batch_size=args.batch_size)
    start = time.perf_counter()
    fp = evaluate_nll(model, windows, args.batch_size)
    fp_s = time.perf_counter() - start
    record = measure_variant(model, fmt, windows, slope_windows, fp=fp, calibration=calibration,
                             settings=settings)
    features_s = record["seconds_rtn"] + record["seconds_slope"]
    # seconds_gptq covers Hessians + solve + the GPTQ evaluation
    ratio = features_s / record["seconds_gptq"]
    print(record)
    body = "\n".join([
        f"## Feature cost vs GPTQ + evaluation: {Path(args.model).name}, {fmt.name}, {args.dtype}", "",
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"Evaluation {windows.input_ids.shape[0]} x {args.seq_len} tokens of `{Path(args.dataset).name}` "
        f"(validation split); slope on {args.slope_windows} windows x 3 directions x 2 points; "
        f"GPTQ calibration {args.calibration_size} x {args.seq_len} tokens (train split), Hessians "
        "from the fp network, per-layer damping search over 8 values. One run each (wall clock).", "",
        f"Command: `python bench/bench_features.py {' '.join(sys.argv[1:])}`", "",
        "| NLL_fp (shared) s | RTN + NLL_rtn s | slope s | features s | GPTQ + NLL_gptq s | ratio | goal |",
        "|---|---|---|---|---|---|---|",
        f"| {fp_s:.1f} | {record['seconds_rtn']:.1f} | {record['seconds_slope']:.1f} | {features_s:.1f} "
        f"| {record['seconds_gptq']:.1f} | {ratio:.1%} | <= 10 % |", "",
        f"Values: NLL fp {record['nll_fp']:.4f}, RTN {record['nll_rtn']:.4f}, GPTQ "
        f"{record['nll_gptq']:.4f} nats/token; SQNR RTN {record['sqnr_rtn_db']:.2f} dB, GPTQ "
        f"{record['sqnr_gptq_db']:.2f} dB; slope {record['slope_rtn']:.3e} nats/dB."])
    if args.write:
        write_section(args.write, f"features-{Path(args.model).name}-{fmt.name}", body)
    print(body)


if __name__ == "__main__":
    main()
