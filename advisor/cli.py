"""The `advisor` command line.

Heavy libraries (torch, transformers) are imported inside the commands that need them, so that
`advisor --help` and `advisor formats` start in well under a second.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from advisor.errors import AdvisorError, SweepFailed, friendly_errors
from pipelines.quantize.formats import GRAMMAR, PRESETS, parse_formats

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def cache_dir() -> Path:
    """Where built models and corpora are kept: $PTQ_ADVISOR_CACHE or ~/.cache/ptq-advisor."""
    return Path(os.environ.get("PTQ_ADVISOR_CACHE", Path.home() / ".cache" / "ptq-advisor"))


@click.group()
@click.version_option(package_name="ptq-advisor")
def cli():
    """Predict, measure and recommend post-training-quantized LLM formats.

    Formats follow Xu et al. 2024: mxint4_32, mxfp4_e2m1_32, int4_g128, ... (see `advisor formats`).
    """


@cli.command()
@click.argument("specs", nargs=-1)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="List a named preset.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def formats(specs, preset, as_json):
    """Parse format strings (or a preset) and show what they mean.

    \b
    Grammar: mxint{P}_{K} | mxfp{P}_e{E}m{M}_{K} | int{P}_tens | int{P}_chan | int{P}_g{K}
    Examples: advisor formats mxint4_32 mxfp6_e3m2_64
              advisor formats --preset xu-mx36 --json
    """
    items = list(specs) + ([preset] if preset else [])
    if not items:
        raise AdvisorError(f"give format strings or --preset. Grammar: {GRAMMAR}; "
                           f"presets: {', '.join(sorted(PRESETS))}")
    parsed = parse_formats(items)
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in parsed], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("format", "family", "P", "E", "M", "K", "scale", "bits/weight")
    for f in parsed:
        scale = "E8M0 / block" if f.is_mx else f"fp16 / {f.granularity}"
        table.add_row(f.name, f.family, str(f.precision), str(f.exp_bits), str(f.man_bits),
                      str(f.block_size or "-"), scale, f"{f.bits_per_weight:.4g}")
    Console(width=120).print(table)


def _damping(value: str) -> float | None:
    if value == "search":
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'search' nor a number") from None


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
        click.option("--hessians", type=click.Choice(["fp", "sequential"]), default="fp",
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
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def _plan(options: dict):
    from pipelines.evaluate_formats import EvaluationPlan
    from pipelines.features import FeatureSettings

    seeds = tuple(options["seed"] + i for i in range(3))
    features = FeatureSettings(slope_seeds=seeds, hessians=options["hessians"],
                               damp=_damping(options["damp"]), batch_size=options["batch_size"])
    return EvaluationPlan(
        seq_len=options["seq_len"], max_windows=options["max_windows"],
        slope_windows=options["slope_windows"], gptq=options["gptq"],
        calibration_size=options["calibration_size"], seed=options["seed"],
        include_embeddings=options["include_embeddings"],
        include_lm_head=options["include_lm_head"], features=features)


def _run_measure(model, tokenizer, corpus, model_name, options):
    from pipelines.evaluate_formats import evaluate_formats, fp_bytes, sequence_length

    formats = parse_formats(options["formats_spec"])
    plan = _plan(options)
    seq_len = sequence_length(model, plan.seq_len)
    progress = None if options["as_json"] else (lambda m: click.echo(f"  measuring {m}", err=True))
    fp, windows, records = evaluate_formats(model, tokenizer, corpus, formats, plan, progress)
    summary = {
        "model": model_name, "dataset": corpus.spec, "dataset_digest": corpus.digest,
        "seq_len": seq_len, "windows": int(windows.input_ids.shape[0]),
        "tokens": windows.predicted_tokens, "bytes": windows.predicted_bytes, "bos": windows.bos,
        "fp": {"nll_fp": fp.nll, "bpb_fp": fp.bits_per_byte, "bytes": fp_bytes(model)},
        "variants": [{k: v for k, v in r.items() if not k.endswith("layers")} for r in records],
    }
    if options["as_json"]:
        click.echo(json.dumps(summary, indent=2))
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


@cli.command()
@click.argument("model")
@click.option("--dataset", default=None,
              help="Text file, folder, or hub id[:config] [default: Salesforce/wikitext:wikitext-2-raw-v1].")
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
    from pipelines.corpus import DEFAULT_DATASET, load_corpus
    from pipelines.model_source import load_model

    parse_formats(options["formats_spec"])  # fail on a typo before any slow load
    _damping(options["damp"])
    corpus = load_corpus(dataset or DEFAULT_DATASET)
    net, tokenizer, source = load_model(model, dtype=dtype, gguf_file=gguf_file,
                                        trust_remote_code=trust_remote_code)
    _run_measure(net, tokenizer, corpus, model, options)


DEMO_MODEL = "demo-tiny-llama"


@cli.command()
@_measure_options(gptq_default=True)
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help=f"Also export the model in mxint4_32 (GPTQ) to this folder, registered as {DEMO_MODEL}.")
@friendly_errors
def demo(export_dir, **options):
    """Run the main job on embedded defaults: a small model built here, measured per format.

    Trains a tiny Llama on CPython's documentation (cached after the first run), then quantizes
    it to the `demo` preset of formats with RTN and GPTQ and prints the feature record of each.
    """
    from pipelines.corpus import load_corpus
    from pipelines.model_source import load_model
    from pipelines.tiny_model import ensure_tiny_model, python_docs_text

    parse_formats(options["formats_spec"])
    _damping(options["damp"])
    root = cache_dir()
    corpus_file = root / "python-docs.txt"
    if not corpus_file.exists():
        root.mkdir(parents=True, exist_ok=True)
        corpus_file.write_text(python_docs_text(), encoding="utf-8")
    click.echo(f"building the tiny model under {root} (first run trains it for ~1 min)", err=True)
    corpus = load_corpus(str(corpus_file))
    folder = ensure_tiny_model(root, text=corpus.train)
    net, tokenizer, _ = load_model(str(folder))
    _run_measure(net, tokenizer, corpus, folder.name, options)
    if export_dir:
        _export_demo(folder, corpus_file, export_dir)


def _export_demo(folder, corpus_file, out) -> None:
    import mlflow

    from pipelines.export.export_model import ExportConfig, export_quantized
    from registry.exported_models import register_export

    click.echo(f"exporting {folder.name} in mxint4_32 (GPTQ) to {out}", err=True)
    record = export_quantized(ExportConfig(model=str(folder), format="mxint4_32", method="gptq", out=out,
                                           dataset=str(corpus_file), force=True),
                              say=lambda m: click.echo(f"  {m}", err=True))
    version = register_export(record, out, name=DEMO_MODEL, client=mlflow.MlflowClient())
    click.echo(f"{out}: NLL {record['nll_onnx']:.4f} nats/token with onnxruntime (PyTorch "
               f"{record['nll_torch']:.4f}, fp {record['nll_fp']:.4f}); "
               f"{record['onnx_quantized_bytes']:,} bytes of quantized weights; registered as "
               f"{version.name}/{version.version}")


@cli.command()
@click.option("--models", default=None,
              help="Comma-separated hub ids, model folders, .gguf files or runs:/RUN_ID/checkpoint artifacts.")
@click.option("--models-file", type=click.Path(dir_okay=False), default=None,
              help="YAML list of models with family, gguf_file, train_tokens, name (see README).")
@click.option("--formats", "formats_spec", default="demo", show_default=True,
              help="Comma-separated formats and/or preset names.")
@click.option("--dataset", default=None,
              help="Text file, folder, or hub id[:config] [default: Salesforce/wikitext:wikitext-2-raw-v1].")
@click.option("--methods", default="rtn,gptq", show_default=True, help="rtn, gptq or both.")
@click.option("--experiment", default="ptq-sweep", show_default=True, help="MLflow experiment name.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--seq-len", type=click.IntRange(0, 1 << 20), default=None,
              help="Tokens per window; 0 = model context, capped at 2048 [default: 0].")
@click.option("--max-windows", type=click.IntRange(1), default=None,
              help="Evaluation windows spread over the validation text [default: all].")
@click.option("--slope-windows", type=click.IntRange(1), default=2, show_default=True)
@click.option("--calibration-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--hessians", type=click.Choice(["fp", "sequential"]), default="fp", show_default=True)
@click.option("--damp", default="search", show_default=True, metavar="search|FLOAT")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True)
@click.option("--landscape-step", type=click.FloatRange(0, 40), default=4.0, show_default=True,
              help="dB between points of each model's radial loss profile (0..40 dB); 0 = none.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Models swept at once, one process each (CPU threads are shared out).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine (see --workers); ray: one Ray task per variant.")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (ray://host:10001 or auto); default: start a local one. "
                   "Workers must reach the tracking store: use a tracking server.")
@click.option("--no-catalog", is_flag=True,
              help="Keep these models out of the recommendation catalog (research models, e.g. the zoo).")
@click.option("--json", "as_json", is_flag=True, help="Print the logged metrics as JSON, no progress.")
@friendly_errors
def sweep(models, models_file, formats_spec, dataset, methods, experiment, tracking_uri, seq_len, max_windows,
          slope_windows, calibration_size, hessians, damp, seed, dtype, landscape_step, batch_size,
          workers, executor, ray_address, no_catalog, as_json):
    """Quantize every model to every format and method; log each variant as an MLflow run.

    A parent run per model, a child run per (format, method). Re-running resumes: variants whose
    FINISHED run exists (same model, data, settings and code) are reused, the rest are measured.
    """
    from pipelines.corpus import DEFAULT_DATASET
    from pipelines.model_set import ModelEntry, ModelSetError, load_model_set
    from pipelines.model_source import resolve
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipelines.sweep import METHODS, SweepConfig, TrackingError, run_sweep, variant_count

    formats = [f.name for f in parse_formats(formats_spec)]
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not chosen or set(chosen) - set(METHODS):
        raise AdvisorError(f"--methods takes rtn, gptq or both (comma-separated), not {methods!r}")
    if not models and not models_file:
        raise AdvisorError("give --models and/or --models-file")
    if executor == "ray" and workers > 1:
        raise AdvisorError("--workers is for --executor local; Ray places one task per variant itself")
    if ray_address and executor != "ray":
        raise AdvisorError("--ray-address needs --executor ray")
    store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if ray_address and not store.startswith(("http://", "https://", "databricks")):
        raise AdvisorError(f"a Ray cluster at {ray_address} cannot reach the local store {store}: "
                           "sweep into a tracking server (README: Running for a team)")
    runner = None
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise AdvisorError("--executor ray needs Ray: pip install 'ptq-advisor[team]'") from None
        from pipelines.ray_executor import RayExecutor

        runner = RayExecutor(ray_address)
    if tracking_uri:  # runs:/ model artifacts are read from this store
        from pipelines.tracking import use_store

        use_store(tracking_uri)
    try:
        entries = load_model_set(models_file) if models_file else []
    except ModelSetError as err:
        raise AdvisorError(str(err)) from None
    from pipelines.artifact_models import local_model

    try:
        entries += [ModelEntry(local_model(m.strip())) for m in (models or "").split(",") if m.strip()]
    except ValueError as err:
        raise AdvisorError(str(err)) from None
    for entry in entries:
        resolve(entry.spec, entry.gguf_file)  # a missing path fails here, before any run exists
    config = SweepConfig(models=tuple(entries), formats=tuple(formats), dataset=dataset or DEFAULT_DATASET,
                         methods=chosen, experiment=experiment, seq_len=seq_len,
                         max_windows=max_windows, slope_windows=slope_windows,
                         calibration_size=calibration_size, seed=seed, hessians=hessians,
                         damp=_damping(damp), dtype=dtype, landscape_step_db=landscape_step,
                         batch_size=batch_size)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=as_json) as bar:
        task = bar.add_task("variants", total=variant_count(config))

        def say(message):
            if not as_json:
                bar.console.print(f"  {message}", markup=False, highlight=False)
                bar.update(task, description=message if len(message) <= 48 else message[:47] + "…")

        try:
            results = run_sweep(config, tracking_uri, say, done=lambda: bar.advance(task),
                                workers=workers, executor=runner, grow_catalog=not no_catalog)
        except TrackingError as err:
            raise AdvisorError(str(err)) from None
        bar.update(task, description="variants")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    failed = [name for model in results.values() for name, metrics in model.items() if metrics is None]
    if failed:
        total = sum(len(model) for model in results.values())
        raise SweepFailed(f"{len(failed)} of {total} variants FAILED: {', '.join(failed)}; "
                          "the FAILED runs hold the error, re-run the sweep to retry them")


@cli.command()
@click.argument("model")
@click.option("--gguf-file", default=None, help="GGUF file inside MODEL's folder (or give the .gguf path).")
@click.option("--dataset", default=None,
              help="Text file, folder, or hub id[:config] [default: Salesforce/wikitext:wikitext-2-raw-v1].")
@click.option("--formats", "formats_spec", default="",
              help="Also profile along these formats' RTN error directions (comma-separated/presets).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the random directions.")
@click.option("--step", type=click.FloatRange(0.1, 40), default=2.0, show_default=True, help="Grid step, dB.")
@click.option("--max-db", type=click.FloatRange(1, 80), default=40.0, show_default=True,
              help="Largest perturbation SNR, dB (0 dB = noise as large as the weights).")
@click.option("--seq-len", type=click.IntRange(0, 1 << 20), default=0, show_default=True,
              help="Tokens per window; 0 = model context, capped at 2048.")
@click.option("--max-windows", type=click.IntRange(1), default=8, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True)
@click.option("--experiment", default="ptq-landscape", show_default=True, help="MLflow experiment name.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db].")
@click.option("--json", "as_json", is_flag=True, help="Print the profile points as JSON.")
@friendly_errors
def landscape(model, gguf_file, dataset, formats_spec, seeds, step, max_db, seq_len, max_windows, dtype,
              experiment, tracking_uri, as_json):
    """Log MODEL's radial loss landscape (NLL vs perturbation SNR) as an MLflow run.

    Along seeded random directions (the typical landscape, Xu et al. Fig. 1) and, with --formats,
    along each format's RTN error direction, which reaches the RTN loss at SNR = SQNR (Fig. 2).
    """
    from pipelines.corpus import DEFAULT_DATASET
    from pipelines.landscape_run import LandscapeConfig, run_landscape
    from pipelines.sweep import TrackingError

    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise AdvisorError(f"--seeds takes comma-separated integers, not {seeds!r}") from None
    names = tuple(f.name for f in parse_formats(formats_spec)) if formats_spec.strip() else ()
    if not seed_list and not names:
        raise AdvisorError("nothing to profile: give --seeds and/or --formats")
    config = LandscapeConfig(model=model, dataset=dataset or DEFAULT_DATASET, formats=names,
                             seeds=seed_list, step_db=step, max_db=max_db, seq_len=seq_len or None,
                             max_windows=max_windows, gguf_file=gguf_file, dtype=dtype,
                             experiment=experiment)
    say = (lambda message: None) if as_json else (lambda message: click.echo(f"  {message}", err=True))
    try:
        result = run_landscape(config, tracking_uri, say)
    except TrackingError as err:
        raise AdvisorError(str(err)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"logged run {result['run_id']}: NLL fp {result['nll_fp']:.4f} nats/token, "
               f"{len(result['points'])} profile points")
    for name, value in result["sqnr_rtn_db"].items():
        click.echo(f"  {name}: RTN SQNR {value:.2f} dB")


from advisor.browse_commands import explain, models, pareto  # noqa: E402  (commands defined elsewhere)
from advisor.export_command import export  # noqa: E402
from advisor.fetch_model_command import fetch_model  # noqa: E402
from advisor.gate import gate  # noqa: E402
from advisor.recommend_command import recommend, seed  # noqa: E402
from advisor.registry_commands import fit_predictor, fit_qid, registry  # noqa: E402
from advisor.zoo_command import zoo  # noqa: E402

for command in (fit_predictor, fit_qid, registry, recommend, seed, models, pareto, explain, export, gate, zoo,
                fetch_model):
    cli.add_command(command)


def main():  # pragma: no cover - console entry point
    sys.exit(cli())
