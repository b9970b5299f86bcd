"""GPTQ on one 4096x4096 layer: ours vs the reference IST-DASLab/gptq, side by side.

Same weight, same Hessian (H = 2/T Σ x xᵀ from T correlated random activations), damping 0.01,
lazy blocks of 128, no act-order. Formats: MXINT4 with K = 32 (the reference through its group
mechanism with a power-of-two scale, zero 7, maxq 14 — sign-magnitude int4 on the MX grid) and
int4 per channel (the reference's symmetric min-max quantizer, 16 levels; ours MSE-calibrated,
15 levels). Reported: wall time of the quantization call and the layer-output MSE
tr(ΔW H ΔWᵀ)/(2·out) — the mean squared output error on the calibration activations. Ours is
also run in the joint-block MX mode (d-Matrix / Sharify et al.) for the column-vs-block choice.

    python bench/bench_gptq.py --reference bench/.work/gptq --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results_file import machine, write_section  # noqa: E402
from pipelines.gptq.layer import HessianAccumulator, gptq_quantize, output_mse  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.quantize.rtn import quantize_weight  # noqa: E402


def reference_module(checkout: Path):
    if not (checkout / "gptq.py").exists():
        return None
    sys.path.insert(0, str(checkout))
    torch.cuda.synchronize = lambda *a, **k: None  # the reference calls it unconditionally
    import gptq as ref_gptq
    import quant as ref_quant

    class MXIntQuantizer(ref_quant.Quantizer):
        """MXINT-P in the reference's affine form: scale 2^(floor(log2 amax) - (P-2))."""

        def configure_mx(self, bits):
            self.bits = bits
            self.maxq = torch.tensor(2**bits - 2)

        def find_params(self, x, weight=False):
            amax = x.abs().amax(1, keepdim=True)
            exponent = torch.frexp(amax)[1] - 1  # exact floor(log2 amax)
            scale = torch.ldexp(torch.ones_like(amax), exponent - (self.bits - 2))
            self.scale = torch.where(amax > 0, scale, torch.ones_like(scale))
            self.zero = torch.full_like(amax, 2 ** (self.bits - 1) - 1)

    return ref_gptq, ref_quant, MXIntQuantizer


def run_reference(mod, W, H, kind):
    ref_gptq, ref_quant, MXIntQuantizer = mod
    layer = nn.Linear(W.shape[1], W.shape[0], bias=False)
    layer.weight.data = W.clone()
    g = ref_gptq.GPTQ(layer)
    g.H = H.clone()
    g.nsamples = 1
    if kind == "mx":
        g.quantizer = MXIntQuantizer()
        g.quantizer.configure_mx(4)
        groupsize = 32
    else:
        g.quantizer = ref_quant.Quantizer()
        g.quantizer.configure(4, perchannel=True, sym=True, mse=False)
        groupsize = -1
    start = time.perf_counter()
    g.fasterquant(blocksize=128, percdamp=0.01, groupsize=groupsize)
    return layer.weight.data.clone(), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=Path("bench/.work/gptq"))
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    n = args.size
    W = torch.randn(n, n) * 0.02
    mixing = torch.randn(n, n) / n**0.5
    acc = HessianAccumulator(n)
    for _ in range(args.tokens // 1024):
        acc.add_batch(torch.randn(1024, n) @ mixing + 0.1 * torch.randn(1024, n))
    H = acc.H
    ref = reference_module(args.reference)
    rows = []
    for kind, name in (("mx", "mxint4_32"), ("chan", "int4_chan")):
        fmt = parse_format(name)
        rtn = output_mse(quantize_weight(W, fmt) - W, H)
        start = time.perf_counter()
        ours = gptq_quantize(W, H, fmt, damp=0.01, blocksize=128)
        ours_s = time.perf_counter() - start
        row = {"format": name, "rtn": rtn, "ours": output_mse(ours - W, H), "ours_s": ours_s}
        if fmt.is_mx:
            start = time.perf_counter()
            joint = gptq_quantize(W, H, fmt, damp=0.01, blocksize=128, mx_mode="block")
            row.update(block=output_mse(joint - W, H), block_s=time.perf_counter() - start)
        if ref:
            q, seconds = run_reference(ref, W, H, kind)
            row.update(ref=output_mse(q - W, H), ref_s=seconds)
        rows.append(row)
        print(row, flush=True)
    lines = [f"## GPTQ, one {n}x{n} layer: ours vs IST-DASLab/gptq", "",
             f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads. "
             f"H from {args.tokens} correlated random activations; damping 0.01, blocks of 128. "
             "MSE = mean squared layer output error on those activations (lower is better); "
             "time = one wall-clock run of the quantization call.", "",
             "Command: `python bench/bench_gptq.py --reference bench/.work/gptq --write bench/RESULTS.md`",
             "", "| format | RTN MSE | reference MSE | reference s | ours MSE | ours s | time ratio "
             "| ours joint-block MSE | joint-block s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ours_s'] / r['ref_s']:.2f}x" if "ref_s" in r else "n/a"
        ref_mse = f"{r['ref']:.4e}" if "ref" in r else "n/a"
        ref_s = f"{r['ref_s']:.1f}" if "ref_s" in r else "n/a"
        block = f"{r['block']:.4e} | {r['block_s']:.1f}" if "block" in r else "– | –"
        lines.append(f"| {r['format']} | {r['rtn']:.4e} | {ref_mse} | {ref_s} | {r['ours']:.4e} | "
                     f"{r['ours_s']:.1f} | {ratio} | {block} |")
    lines += ["", "Goal (issue 3): same or lower MSE than the reference at <= 1.0x its time."]
    if args.write:
        write_section(args.write, "gptq-layer", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
