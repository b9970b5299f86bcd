"""MX RTN speed and agreement: ours vs Microsoft's microxcaling (Python path) and torchao `to_mx`.

Per format, on one 4096x4096 fp32 tensor, K = 32, one thread: CPU time per call (median of
--repeats), and the fraction of elements bit-identical to each reference (microxcaling with
round='even', the spec's ties-to-even; torchao FLOOR scaling). microxcaling runs from its own
source checkout (--microxcaling, `custom_cuda=False`); it is never installed or vendored.

    python bench/bench_quantizer.py --microxcaling bench/.work/microxcaling --write bench/RESULTS.md
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
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.quantize.mx import quantize_mx  # noqa: E402

# ours -> (microxcaling ElemFormat name, torchao element dtype or None)
FORMATS = {
    "mxint8_32": ("int8", None),
    "mxint4_32": ("int4", None),
    "mxint2_32": ("int2", None),
    "mxfp8_e5m2_32": ("fp8_e5m2", "float8_e5m2"),
    "mxfp8_e4m3_32": ("fp8_e4m3", "float8_e4m3fn"),
    "mxfp6_e3m2_32": ("fp6_e3m2", "fp6_e3m2"),
    "mxfp6_e2m3_32": ("fp6_e2m3", "fp6_e2m3"),
    "mxfp4_e2m1_32": ("fp4_e2m1", "float4_e2m1fn_x2"),
}


def cpu_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, lazy imports
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def microxcaling_quantizer(checkout: Path | None):
    if checkout is None or not (checkout / "mx" / "mx_ops.py").exists():
        return None
    sys.path.insert(0, str(checkout))
    from mx.formats import ElemFormat
    from mx.mx_ops import _quantize_mx

    def run(x, elem):
        return _quantize_mx(x, 8, ElemFormat.from_str(elem), axes=[-1], block_size=32,
                            round="even", custom_cuda=False)
    return run


def torchao_quantizer(site: Path):
    # torchao lives in its own folder: installed into the project's venv, transformers would
    # import it on every model load.
    sys.path.insert(0, str(site))
    try:
        from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx
    except Exception:
        return None

    def run(x, elem):
        dtype = getattr(torch, elem, elem)
        scale, data = to_mx(x, dtype, 32)
        return to_dtype(data, scale, dtype, 32, torch.float32)
    return run


def differing(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of elements whose float32 bits differ."""
    return int((a.view(torch.int32) != b.view(torch.int32)).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--microxcaling", type=Path, default=Path("bench/.work/microxcaling"))
    parser.add_argument("--torchao-site", type=Path, default=Path("bench/.work/site"),
                        help="Folder holding torchao (pip install --target).")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, help="Write the table into this RESULTS.md.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.size, args.size)
    mxc, tao = microxcaling_quantizer(args.microxcaling), torchao_quantizer(args.torchao_site)
    rows, mismatches = [], []
    for name, (mx_elem, tao_elem) in FORMATS.items():
        fmt = parse_format(name)
        ours = quantize_mx(x, fmt)
        row = {"format": name, "ours": cpu_ms(lambda: quantize_mx(x, fmt), args.repeats)}
        if mxc:
            ref = mxc(x, mx_elem)
            row["mxc"] = cpu_ms(lambda: mxc(x, mx_elem), args.repeats)
            row["mxc_diff"] = differing(ours, ref)
            for r, c in (ours != ref).nonzero().tolist()[:5]:
                block = x[r, c // 32 * 32:(c // 32 + 1) * 32]
                mismatches.append(f"| {name} | microxcaling | {x[r, c].item()!r} | "
                                  f"{block.abs().max().item()!r} | {ours[r, c].item()!r} | "
                                  f"{ref[r, c].item()!r} |")
        if tao and tao_elem:
            ref = tao(x, tao_elem)
            row["tao"] = cpu_ms(lambda: tao(x, tao_elem), args.repeats)
            row["tao_diff"] = differing(ours, ref)
        rows.append(row)
        print(row, flush=True)

    def cell(row, key, fmt="{:.0f}"):
        return fmt.format(row[key]) if key in row else "n/a"

    lines = [f"## MX quantizer: CPU time per call, {args.size}x{args.size} fp32, K = 32, "
             f"{args.threads} thread(s)", "",
             f"Machine: {machine()}; torch {torch.__version__}. Median of {args.repeats} calls "
             "(`time.process_time`). References: microxcaling "
             "`_quantize_mx(..., round='even', custom_cuda=False)` from its source checkout; "
             "torchao 0.18 `to_mx` + `to_dtype` (emulated CPU path). *Differ* = elements (of "
             f"{args.size * args.size:,}) whose bits differ from ours.", "",
             "Command: `python bench/bench_quantizer.py --microxcaling bench/.work/microxcaling "
             "--write bench/RESULTS.md`", "",
             "| format | ours ms | microxcaling ms | speed-up | differ | torchao ms | speed-up | differ |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speed_m = f"{r['mxc'] / r['ours']:.1f}x" if "mxc" in r else "n/a"
        speed_t = f"{r['tao'] / r['ours']:.1f}x" if "tao" in r else "n/a"
        lines.append(f"| {r['format']} | {r['ours']:.0f} | {cell(r, 'mxc')} | {speed_m} | "
                     f"{cell(r, 'mxc_diff', '{:d}')} | {cell(r, 'tao')} | {speed_t} | "
                     f"{cell(r, 'tao_diff', '{:d}')} |")
    lines += ["", "Target (issue 2): at least 5x less CPU time than microxcaling's Python path "
              "for every format it supports."]
    if mismatches:
        lines += ["", "Elements where a reference differs from ours (at most 5 per format):", "",
                  "| format | reference | x | block max | ours | reference's |", "|---|---|---|---|---|---|",
                  *mismatches, "",
                  "Each of these is a value just below a rounding tie: x / step = 0.49999997 "
                  "(mxint2, step 2) and 0.49999997 (fp6 e2m3 subnormal, step 1/16), so the nearest "
                  "grid point is 0. microxcaling's `round='even'` computes floor(|v| + 0.5) in "
                  "float32, and that addition rounds 0.99999997 up to 1.0: an error of one step in "
                  "the reference, not here (`torch.round` is exact)."]
    if args.write:
        write_section(args.write, "quantizer", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
