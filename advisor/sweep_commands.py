"""`advisor sweep` and `advisor landscape`: measured variants and loss landscapes logged as MLflow runs."""

from __future__ import annotations

import os

import click

from advisor.errors import AdvisorError, SweepFailed, friendly_errors
from advisor.json_output import echo_json
from advisor.options import (
    damping,
    dataset_option,
    device_option,
    eval_dtype_option,
    methods_option,
    tracking_uri_option,
)
from pipelines.quantize.formats import parse_formats
from registry.catalog.registered import grow_catalog
from store.keys import use_store
from store.tracking_server import TrackingError
from store.uri import check_store


@click.command()
@click.option("--models", default=None,
              help="Comma-separated hub ids, model folders, .gguf files or runs:/RUN_ID/checkpoint artifacts.")
@click.option("--models-file", type=click.Path(dir_okay=False), default=None,
              help="YAML list of models with family, gguf_file, train_tokens, name (see docs/sweeps.md).")
@click.option("--formats", "formats_spec", default="demo", show_default=True,
              help="Comma-separated formats and/or preset names.")
@dataset_option()
@methods_option
@click.option("--experiment", default="ptq-sweep", show_default=True, help="MLflow experiment name.")
@tracking_uri_option
@click.option("--seq-len", type=click.IntRange(0, 1 << 20), default=None,
              help="Tokens per window; 0 = model context, capped at 2048 [default: 0].")
@click.option("--max-windows", type=click.IntRange(1), default=None,
              help="Evaluation windows spread over the validation text [default: all].")
@click.option("--slope-windows", type=click.IntRange(1), default=2, show_default=True)
@click.option("--calibration-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--hessians", type=click.Choice(["sequential", "fp"]), default="sequential", show_default=True)
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
@device_option
@eval_dtype_option
@click.option("--json", "as_json", is_flag=True, help="Print the logged metrics as JSON, no progress.")
@friendly_errors
def sweep(models, models_file, formats_spec, dataset, methods, experiment, tracking_uri, seq_len, max_windows,
          slope_windows, calibration_size, hessians, damp, seed, dtype, landscape_step, batch_size,
          workers, executor, ray_address, no_catalog, device, eval_dtype, as_json):
    """Quantize every model to every format and method; log each variant as an MLflow run.

    A parent run per model, a child run per (format, method). Re-running resumes: variants whose
    FINISHED run exists (same model, data, settings and code) are reused, the rest are measured.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from pipelines.measure.device import resolve_eval_dtype
    from pipelines.sources.artifact_models import local_model
    from pipelines.sources.corpus import DEFAULT_DATASET
    from pipelines.sources.model_set import ModelEntry, ModelSetError, load_model_set
    from pipelines.sources.model_source import resolve
    from pipelines.sweep.config import SweepConfig
    from pipelines.sweep.ray_executor import RayExecutor
    from pipelines.sweep.runner import run_sweep, variant_count


    formats = [f.name for f in parse_formats(formats_spec)]
    chosen = methods
    if not models and not models_file:
        raise AdvisorError("give --models and/or --models-file")
    if executor == "ray" and workers > 1:
        raise AdvisorError("--workers is for --executor local; Ray places one task per variant itself")
    if ray_address and executor != "ray":
        raise AdvisorError("--ray-address needs --executor ray")
    store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if ray_address and not store.startswith(("http://", "https://", "databricks")):
        raise AdvisorError(f"a Ray cluster at {ray_address} cannot reach the local store {store}: "
                           "sweep into a tracking server (docs/team.md)")
    runner = None
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise AdvisorError("--executor ray needs Ray: pip install 'ptq-advisor[team]'") from None

        runner = RayExecutor(ray_address)
    check_store(store)  # before MLflow touches it (it would create a misspelt folder)
    if tracking_uri:  # runs:/ model artifacts are read from this store
        use_store(tracking_uri)
    try:
        entries = load_model_set(models_file) if models_file else []
    except ModelSetError as err:
        raise AdvisorError(str(err)) from None

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
                         damp=damping(damp), dtype=dtype, landscape_step_db=landscape_step,
                         batch_size=batch_size, device=device, eval_dtype=resolve_eval_dtype(eval_dtype, device))
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
                                workers=workers, executor=runner)
        except TrackingError as err:
            raise AdvisorError(str(err)) from None
        bar.update(task, description="variants")
    if not no_catalog:  # measured models (and their fp loss) become candidates
        grow_catalog([config.experiment], say)
    if as_json:
        echo_json(results)
    failed = [name for model in results.values() for name, metrics in model.items() if metrics is None]
    if failed:
        total = sum(len(model) for model in results.values())
        raise SweepFailed(f"{len(failed)} of {total} variants FAILED: {', '.join(failed)}; "
                          "the FAILED runs hold the error, re-run the sweep to retry them")


@click.command()
@click.argument("model")
@click.option("--gguf-file", default=None, help="GGUF file inside MODEL's folder (or give the .gguf path).")
@dataset_option()
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
@tracking_uri_option
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the profile points as JSON.")
@friendly_errors
def landscape(model, gguf_file, dataset, formats_spec, seeds, step, max_db, seq_len, max_windows, dtype,
              experiment, tracking_uri, device, as_json):
    """Log MODEL's radial loss landscape (NLL vs perturbation SNR) as an MLflow run.

    Along seeded random directions (the typical landscape, Xu et al. Fig. 1) and, with --formats,
    along each format's RTN error direction, which reaches the RTN loss at SNR = SQNR (Fig. 2).
    """
    from pipelines.measure.landscape_run import LandscapeConfig, run_landscape
    from pipelines.sources.corpus import DEFAULT_DATASET


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
                             experiment=experiment, device=device)
    say = (lambda message: None) if as_json else (lambda message: click.echo(f"  {message}", err=True))
    try:
        result = run_landscape(config, tracking_uri, say)
    except TrackingError as err:
        raise AdvisorError(str(err)) from None
    if as_json:
        echo_json(result)
        return
    click.echo(f"logged run {result['run_id']}: NLL fp {result['nll_fp']:.4f} nats/token, "
               f"{len(result['points'])} profile points")
    for name, value in result["sqnr_rtn_db"].items():
        click.echo(f"  {name}: RTN SQNR {value:.2f} dB")
