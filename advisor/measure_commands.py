"""`advisor measure` and `advisor demo`: quantize one model to several formats and measure each."""

from __future__ import annotations

import click

from advisor.errors import friendly_errors
from advisor.json_output import echo_json
from advisor.options import damping, dataset_option, device_option, eval_dtype_option
from pipelines.quantize.formats import parse_formats
from registry.exports.exported_models import register_export
from store.paths import cache_root


def _measure_options(gptq_default: bool):
    options = [
        click.option("--formats", "formats_spec", default="demo", show_default=True,
                     help="Comma-separated formats and/or preset names."),
        click.option("--gptq/--no-gptq", default=gptq_default, show_default=True,
                     help="Also run GPTQ (calibrated on the train split) and measure it."),
        click.option("--seq-len", type=click.IntRange(0, 1 << 20), default=None,
                     help="Tokens per window; 0 = model context, capped at 2048 [default: 0]."),
        click.option("--max-windows", type=click.IntRange(1), default=None,
                     help="Evaluate this many windows spread evenly over the validation text."),
        click.option("--slope-windows", type=click.IntRange(1), default=2, show_default=True,
                     help="Windows of the cheaper subset that measures the landscape slope."),
        click.option("--calibration-size", type=click.IntRange(1), default=128, show_default=True,
                     help="GPTQ calibration windows drawn from the train split."),
        click.option("--hessians", type=click.Choice(["sequential", "fp"]), default="sequential",
                     show_default=True, help="GPTQ Hessians from the unquantized network (Xu et "
                     "al.) or block by block from the quantized one (reference GPTQ)."),
        click.option("--damp", default="search", show_default=True, metavar="search|FLOAT",
                     help="GPTQ damping: per-layer grid search by output MSE, or a fixed value."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the calibration sample and the landscape directions."),
        click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True,
                     help="Windows per forward pass (memory vs speed; the result is the same)."),
        click.option("--include-embeddings", is_flag=True, help="Also quantize input embeddings."),
        click.option("--include-lm-head", is_flag=True, help="Also quantize the output layer."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
        device_option,
        eval_dtype_option,
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def _plan(options: dict):
    from pipelines.measure.device import resolve_eval_dtype
    from pipelines.measure.evaluate_formats import EvaluationPlan
    from pipelines.measure.features import FeatureSettings

    seeds = tuple(options["seed"] + i for i in range(3))
    features = FeatureSettings(slope_seeds=seeds, hessians=options["hessians"],
                               damp=damping(options["damp"]), batch_size=options["batch_size"],
                               eval_dtype=resolve_eval_dtype(options["eval_dtype"], options["device"]))
    return EvaluationPlan(
        seq_len=options["seq_len"], max_windows=options["max_windows"],
        slope_windows=options["slope_windows"], gptq=options["gptq"],
        calibration_size=options["calibration_size"], seed=options["seed"],
        include_embeddings=options["include_embeddings"],
        include_lm_head=options["include_lm_head"], features=features)


def _run_measure(model, tokenizer, corpus, model_name, options):
    from pipelines.measure.evaluate_formats import (
        evaluate_formats,
        fp_bytes,
        sequence_length,
    )

    formats = parse_formats(options["formats_spec"])
    plan = _plan(options)
    seq_len = sequence_length(model, plan.seq_len)
    progress = None if options["as_json"] else (lambda m: click.echo(f"  measuring {m}", err=True))
    fp, windows, records = evaluate_formats(model, tokenizer, corpus, formats, plan, progress)
    summary = {
        "model": model_name, "dataset": corpus.spec, "dataset_digest": corpus.digest,
        "seq_len": seq_len, "windows": int(windows.input_ids.shape[0]),
        "tokens": windows.predicted_tokens, "bytes": windows.predicted_bytes, "bos": windows.bos,
        "device": options["device"], "eval_dtype": plan.features.eval_dtype,
        "fp": {"nll_fp": fp.nll, "bpb_fp": fp.bits_per_byte, "bytes": fp_bytes(model), "eval_dtype": fp.dtype,
               "eval_gap_nats": fp.gap_nats},
        "variants": [{k: v for k, v in r.items() if not k.endswith("layers")} for r in records],
    }
    if options["as_json"]:
        echo_json(summary)
        return
    _print_table(summary, plan.gptq, corpus.spec, seq_len)


def _print_table(summary, gptq, dataset, seq_len):
    from rich.console import Console
    from rich.table import Table

    columns = ["format", "bits/w", "MB", "SQNR rtn", "NLL rtn", "ΔNLL rtn", "slope"]
    if gptq:
        columns += ["SQNR gptq", "NLL gptq", "ΔNLL gptq"]
    columns += ["bits/byte"]
    fp = summary["fp"]
    table = Table(*columns, title=f"{summary['model']} on {dataset}: {summary['windows']} windows x "
                  f"{seq_len} tokens ({summary['tokens']} predicted); NLL in nats/token, SQNR in dB")
    table.add_row("fp (16-bit)", "16", f"{fp['bytes'] / 1e6:.3f}", "", f"{fp['nll_fp']:.4f}", "", "",
                  *([""] * 3 if gptq else []), f"{fp['bpb_fp']:.4f}")
    for r in summary["variants"]:
        row = [r["format"], f"{r['bits_per_weight']:.4g}", f"{r['bytes'] / 1e6:.3f}",
               f"{r['sqnr_rtn_db']:.2f}", f"{r['nll_rtn']:.4f}", f"{r['nll_rtn'] - r['nll_fp']:+.4f}",
               f"{r['slope_rtn']:.2e}"]
        if gptq:
            row += [f"{r['sqnr_gptq_db']:.2f}", f"{r['nll_gptq']:.4f}",
                    f"{r['nll_gptq'] - r['nll_fp']:+.4f}"]
        row += [f"{r['bpb_gptq' if gptq else 'bpb_rtn']:.4f}"]
        table.add_row(*row)
    Console(width=140).print(table)
    click.echo(f"D = {summary['variants'][0]['quantized_params']:,} quantized weights; unquantized "
               "tensors counted at 16 bits; slope = -dNLL/dSNR at SQNR_rtn (nats/dB); bits/byte "
               f"of {'GPTQ' if gptq else 'RTN'}.")


@click.command()
@click.argument("model")
@dataset_option()
@click.option("--gguf-file", default=None, help="GGUF file name inside MODEL's folder.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32",
              show_default=True, help="Evaluation dtype. Quantization computes in float32; in bfloat16, classic-int values are then rounded to bfloat16 (MX values up to 8 bits are exact).")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code to run.")
@_measure_options(gptq_default=False)
@friendly_errors
def measure(model, dataset, gguf_file, dtype, trust_remote_code, **options):
    """Quantize MODEL (hub id, folder or .gguf) to each format and measure it.

    Per format: weight bytes, SQNR (dB), NLL (nats/token) and bits/byte after RTN, the
    loss-landscape slope at the RTN point, and with --gptq the same after GPTQ.
    """
    from pipelines.sources.corpus import DEFAULT_DATASET, load_corpus
    from pipelines.sources.model_source import load_model
    from pipelines.tokenizer_check import refuse_broken_tokenizer

    parse_formats(options["formats_spec"])  # fail on a typo before any slow load
    damping(options["damp"])
    corpus = load_corpus(dataset or DEFAULT_DATASET)
    net, tokenizer, source = load_model(model, dtype=dtype, gguf_file=gguf_file,
                                        trust_remote_code=trust_remote_code, device=options["device"])
    refuse_broken_tokenizer(net, tokenizer, source, corpus.validation)
    _run_measure(net, tokenizer, corpus, model, options)


DEMO_MODEL = "demo-tiny-llama"


@click.command()
@_measure_options(gptq_default=True)
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help=f"Also export the model in mxint4_32 (GPTQ) to this folder, registered as {DEMO_MODEL}.")
@friendly_errors
def demo(export_dir, **options):
    """Run the main job on embedded defaults: a small model built here, measured per format.

    Trains a tiny Llama on CPython's documentation (cached after the first run), then quantizes
    it to the `demo` preset of formats with RTN and GPTQ and prints the feature record of each.
    """
    from pipelines.sources.corpus import load_corpus
    from pipelines.sources.model_source import load_model
    from pipelines.sources.tiny_model import ensure_tiny_model, python_docs_text

    parse_formats(options["formats_spec"])
    damping(options["damp"])
    root = cache_root()
    corpus_file = root / "python-docs.txt"
    if not corpus_file.exists():
        root.mkdir(parents=True, exist_ok=True)
        corpus_file.write_text(python_docs_text(), encoding="utf-8")
    click.echo(f"building the tiny model under {root} (first run trains it for ~1 min)", err=True)
    corpus = load_corpus(str(corpus_file))
    folder = ensure_tiny_model(root, text=corpus.train)
    net, tokenizer, _ = load_model(str(folder), device=options["device"])
    _run_measure(net, tokenizer, corpus, folder.name, options)
    if export_dir:
        _export_demo(folder, corpus_file, export_dir)


def _export_demo(folder, corpus_file, out) -> None:
    import mlflow

    from pipelines.export.export_model import ExportConfig, export_quantized


    click.echo(f"exporting {folder.name} in mxint4_32 (GPTQ) to {out}", err=True)
    record = export_quantized(ExportConfig(model=str(folder), format="mxint4_32", method="gptq", out=out,
                                           dataset=str(corpus_file), force=True),
                              say=lambda m: click.echo(f"  {m}", err=True))
    version = register_export(record, out, name=DEMO_MODEL, client=mlflow.MlflowClient())
    click.echo(f"{out}: NLL {record['nll_onnx']:.4f} nats/token with onnxruntime (PyTorch "
               f"{record['nll_torch']:.4f}, fp {record['nll_fp']:.4f}); "
               f"{record['onnx_file_bytes']:,} bytes; peak {record['measured_peak_bytes']:,} bytes at "
               f"{record['runtime']['context']} tokens on onnxruntime (estimated {record['estimated_runtime_bytes']:,}); "
               f"registered as {version.name}/{version.version}")
