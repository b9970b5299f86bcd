"""CPU vs CUDA: NLL agreement and the speed-up of a sweep's measuring and of GPTQ on a 4096² layer.

The one prepared script for a session lent an accelerator (issue 26). It needs no MLflow and no
network, only torch and transformers, so it runs on the device machine's own image:

  python bench/device_check.py --out bench/.work/device-check.json            # on the GPU machine
  python bench/device_check.py --report bench/.work/device-check.json --write bench/RESULTS.md

Prepared here, once: `python bench/device_check.py --devices cpu --random-llama 128x2 --windows 2
--calibration 2` builds the demo's tiny model under bench/.work/device (delete the random-llama
folder it leaves), and the device image's transformers 5.x is replaced by this project's pins,
downloaded as wheels into an ignored `.whl/` (`echo /.whl/ >> .git/info/exclude; python3 -m pip
download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform
manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl
transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2`, 16 MB). Then one device call,
carry [".whl", "bench/.work/device"], timeout_s 540:

  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && python3 bench/device_check.py --out $OUT/device-check.json

It imports no MLflow, optimum, gguf, xgboost or Ray (checked by running it with them hidden).

Per device (cpu, and cuda when present), on the demo's tiny model (built here if missing) and on a
randomly initialised mid-size Llama (its NLL means nothing; its timings are what a model with
realistic layer widths costs): the fp NLL in float32 and, on CUDA, the checked bfloat16 evaluation;
then each format's RTN + landscape slope + GPTQ variant exactly as a sweep measures it
(`measure_variant`, sequential Hessians), timed. Last, GPTQ alone on one 4096×4096 weight.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from bench.results_file import machine, write_section  # noqa: E402
from pipelines.gptq.layer import HessianAccumulator, gptq_quantize  # noqa: E402
from pipelines.measure.evaluate_formats import measure_variant  # noqa: E402
from pipelines.measure.features import FeatureSettings  # noqa: E402
from pipelines.measure.nll import evaluate_nll  # noqa: E402
from pipelines.quantize.formats import parse_format  # noqa: E402
from pipelines.sources.model_source import load_model  # noqa: E402
from pipelines.sources.tiny_model import TinySpec, ensure_tiny_model, python_docs_text  # noqa: E402
from pipelines.sources.token_windows import (  # noqa: E402
    calibration_windows,
    evaluation_and_subset_windows,
)

WORK = ROOT / "bench" / ".work" / "device"
FORMATS = ("mxint4_32", "int4_g128")
AGREEMENT_NATS = 0.002  # issue 26's bound for CPU vs CUDA and 16-bit vs float32


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, work):
    sync(device)
    start = time.perf_counter()
    out = work()
    sync(device)
    return out, time.perf_counter() - start


def tiny_model() -> tuple[Path, str]:
    """The demo's tiny Llama and its corpus (trained on the CPU once, ~1 min; carried to the device)."""
    text = python_docs_text()
    cut = int(len(text) * 0.9)
    folder = ensure_tiny_model(WORK, TinySpec(), text=text[:cut])
    return folder, text[cut:]


def random_llama(tokenizer_folder: Path, hidden: int, layers: int) -> Path:
    """A randomly initialised Llama of realistic widths (seeded), saved once beside the tiny one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = WORK / f"random-llama-{hidden}x{layers}"
    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    vocab = json.loads((tokenizer_folder / "config.json").read_text())["vocab_size"]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.6875) // 32 * 32,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                         max_position_embeddings=2048, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_folder / name).exists():
            (folder / name).write_bytes((tokenizer_folder / name).read_bytes())
    return folder


def measure_model(folder: Path, text: str, device: str, formats, seq_len: int, windows: int, calibration: int) -> dict:
    """fp NLL (float32 and, on CUDA, checked bfloat16) and each format's sweep variant, timed."""
    model, tokenizer, _ = load_model(str(folder), device=device)
    evaluation, subset = evaluation_and_subset_windows(tokenizer, text, seq_len, windows, 2)
    calib = calibration_windows(tokenizer, text, seq_len, calibration, seed=0)
    fp, fp_seconds = timed(device, lambda: evaluate_nll(model, evaluation))
    row = {"device": device, "nll_fp": fp.nll, "seconds_fp": fp_seconds}
    if device.startswith("cuda"):
        low, low_seconds = timed(device, lambda: evaluate_nll(model, evaluation, dtype="bfloat16"))
        row.update(nll_fp_bf16=low.nll, bf16_dtype=low.dtype, bf16_gap_nats=low.gap_nats, seconds_fp_bf16=low_seconds)
    settings = FeatureSettings(damp=0.01)
    for name in formats:
        fmt = parse_format(name)
        record, seconds = timed(device, lambda fmt=fmt: measure_variant(model, fmt, evaluation, subset, fp=fp,
                                                                         calibration=calib, settings=settings))
        row[name] = {"nll_rtn": record["nll_rtn"], "nll_gptq": record["nll_gptq"], "slope_rtn": record["slope_rtn"],
                     "seconds": seconds, "seconds_gptq": record["seconds_gptq"]}
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def gptq_layer_seconds(device: str, size: int = 4096, tokens: int = 8192, repeats: int = 3) -> dict:
    """GPTQ (mxint4_32, column-wise, damping 0.01) of one size×size weight with a Hessian of `tokens` inputs."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(size, size, generator=gen).to(device)
    inputs = torch.randn(tokens, size, generator=gen).to(device)
    acc = HessianAccumulator(size, device)
    acc.add_batch(inputs)
    fmt = parse_format("mxint4_32")
    gptq_quantize(weight, acc.H, fmt, damp=0.01)  # warm-up (kernels, allocator)
    times = [timed(device, lambda: gptq_quantize(weight, acc.H, fmt, damp=0.01))[1] for _ in range(repeats)]
    return {"device": device, "size": size, "tokens": tokens, "median_seconds": statistics.median(times)}


def run(args) -> dict:
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    tiny, text = tiny_model()
    hidden, layers = (int(v) for v in args.random_llama.split("x"))
    big = random_llama(tiny, hidden, layers)
    result = {"machine": machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "formats": list(args.formats.split(",")), "models": {}, "gptq_layer": []}
    for label, folder, seq_len in (("tiny-llama", tiny, 128), (big.name, big, 512)):
        result["models"][label] = [measure_model(folder, text, d, result["formats"], seq_len, args.windows,
                                                 args.calibration) for d in devices]
        print(json.dumps(result["models"][label]), flush=True)
    for d in devices:
        result["gptq_layer"].append(gptq_layer_seconds(d))
        print(json.dumps(result["gptq_layer"][-1]), flush=True)
    return result


def report(result: dict) -> str:
    lines = ["## GPU: CPU vs CUDA", "",
             f"Machine: {result['machine']}; GPU: {result['gpu'] or 'none'}; torch {result['torch']}, "
             f"{result['threads']} CPU threads.", "",
             "Command: `python bench/device_check.py --out bench/.work/device-check.json` on the lent machine, then "
             "`python bench/device_check.py --report bench/.work/device-check.json --write bench/RESULTS.md`.", "",
             "| model | format | NLL cpu (rtn / gptq) | NLL cuda (rtn / gptq) | max abs diff | variant s cpu | cuda | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for label, rows in result["models"].items():
        by = {r["device"].split(":")[0]: r for r in rows}
        if "cuda" not in by:
            continue
        cpu, gpu = by["cpu"], by["cuda"]
        worst = max(worst, abs(cpu["nll_fp"] - gpu["nll_fp"]))
        for name in result["formats"]:
            c, g = cpu[name], gpu[name]
            diff = max(abs(c["nll_rtn"] - g["nll_rtn"]), abs(c["nll_gptq"] - g["nll_gptq"]))
            worst = max(worst, diff)
            lines.append(f"| {label} | {name} | {c['nll_rtn']:.5f} / {c['nll_gptq']:.5f} | {g['nll_rtn']:.5f} / "
                         f"{g['nll_gptq']:.5f} | {diff:.1e} | {c['seconds']:.1f} | {g['seconds']:.1f} | "
                         f"{c['seconds'] / g['seconds']:.1f}× |")
        if "nll_fp_bf16" in gpu:
            lines.append(f"| {label} | fp, bfloat16 eval | {cpu['nll_fp']:.5f} | {gpu['nll_fp_bf16']:.5f} "
                         f"(kept as {gpu['bf16_dtype']}, gap {gpu['bf16_gap_nats']:.1e}) | | {cpu['seconds_fp']:.2f} | "
                         f"{gpu['seconds_fp_bf16']:.2f} | {cpu['seconds_fp'] / gpu['seconds_fp_bf16']:.1f}× |")
    layer = {r["device"].split(":")[0]: r["median_seconds"] for r in result["gptq_layer"]}
    lines += ["", f"GPTQ on one 4096×4096 weight (mxint4_32, 8192 calibration tokens), median of 3: "
              f"cpu {layer.get('cpu', float('nan')):.2f} s, cuda {layer.get('cuda', float('nan')):.3f} s"
              + (f" ({layer['cpu'] / layer['cuda']:.0f}×)." if "cuda" in layer else "."),
              ""]
    if "cuda" not in layer:
        lines.append("No CUDA device in this run: the agreement goal is not measured.")
    else:
        lines.append(f"Goal (issue 26): CPU and CUDA agree within {AGREEMENT_NATS} nats/token — largest "
                     f"difference {worst:.1e}: {'met' if worst <= AGREEMENT_NATS else 'missed'}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--random-llama", default="1024x8", help="HIDDENxLAYERS of the timing model.")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--out", default=None, help="Write the measured JSON here.")
    parser.add_argument("--report", default=None, help="Read a measured JSON instead of measuring.")
    parser.add_argument("--write", default=None, help="Write the report into this RESULTS.md.")
    args = parser.parse_args()
    result = json.loads(Path(args.report).read_text()) if args.report else run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    text = report(result)
    print(text)
    if args.write:
        write_section(args.write, "gpu", text)


if __name__ == "__main__":
    main()
