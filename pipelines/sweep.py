"""The sweep: every (model, format, method) variant measured and logged as an MLflow run.

Run tree (one experiment per sweep name):
  parent run per base model  "<model>"                 params: source, dataset, settings;
                                                      metrics: NLL_fp, bits/byte, D, params
    child run per variant    "<model> · <fmt> · rtn"   params: P/E/M/K/family/method;
                                                      metrics: NLL, ΔNLL, SQNR, slope, bytes, s
                             "<model> · <fmt> · gptq"  the same after GPTQ
Every run carries `ptq.variant_key`; a FINISHED run with the same key is reused, anything else is
redone, so a sweep killed at any moment and started again ends with exactly one FINISHED run per
variant. A variant that raises is logged FAILED with its error and the sweep goes on.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.model_set import ModelEntry
from pipelines.tracking import (KEY_TAG, KIND_TAG, code_version, finished_run, runs_with_key, use_store,
                                variant_key)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

METHODS = ("rtn", "gptq")


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; what changes the numbers goes into the variant keys."""

    models: tuple[ModelEntry, ...]
    formats: tuple[str, ...]
    dataset: str
    methods: tuple[str, ...] = METHODS
    experiment: str = "ptq-sweep"
    seq_len: int | None = None
    max_windows: int | None = None
    slope_windows: int = 2
    calibration_size: int = 128
    seed: int = 0
    hessians: str = "fp"
    damp: float | None = None
    dtype: str = "float32"
    landscape_step_db: float = 4.0  # radial profile 0..40 dB at this step; 0 = no profile
    batch_size: int = 8

    def result_settings(self) -> dict:
        """The settings that change measured values (keys of the runs)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("models", "formats", "methods", "experiment", "batch_size")}


def short_name(spec: str) -> str:
    """A run name for a model spec: its folder/file name or the last part of a hub id."""
    return Path(spec).name if os.path.exists(spec) else spec.split("/")[-1]


def _log_dataset(mlflow, corpus) -> None:
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException

    source = corpus.spec if corpus.source == "hub" else Path(corpus.spec).resolve().as_uri()
    dataset = MetaDataset(HTTPDatasetSource(source), name=Path(corpus.spec).name, digest=corpus.digest[:16])
    try:
        mlflow.log_input(dataset, context="evaluation")
    except MlflowException as err:
        # two workers registering the same dataset at once: the loser finds it there and links it
        if "UNIQUE constraint" not in str(err):
            raise
        mlflow.log_input(dataset, context="evaluation")


def _child(client, mlflow, experiment_id, parent_id, name, key, params, work, say):
    """Run `work()` in a child run unless a FINISHED one with `key` exists; returns metrics."""
    import pandas as pd

    done = finished_run(client, experiment_id, key)
    if done is not None:
        say(f"{name}: reused run {done.info.run_id[:8]}")
        return done.data.metrics
    say(f"{name}: measuring")
    run = mlflow.start_run(run_name=name, nested=True, parent_run_id=parent_id,
                           tags={KEY_TAG: key, KIND_TAG: "variant"})
    try:
        mlflow.log_params(params)
        metrics, tables = work()
        mlflow.log_metrics(metrics)
        for path, rows in tables.items():
            mlflow.log_table(pd.DataFrame(rows), path)
    except Exception as err:  # one bad variant must not stop the sweep
        mlflow.set_tag("ptq.error", f"{type(err).__name__}: {err}"[:4000])
        mlflow.log_text(traceback.format_exc(), "error.txt")
        mlflow.end_run(status="FAILED")
        say(f"{name}: FAILED ({type(err).__name__}: {err})")
        return None
    mlflow.end_run(status="FINISHED")
    return client.get_run(run.info.run_id).data.metrics


def _numeric(record: dict, names: list[str]) -> dict:
    return {n: float(record[n]) for n in names if n in record and record[n] is not None}


def sweep_model(mlflow, client, experiment_id, config: SweepConfig, entry: ModelEntry, say,
                root_run_id: str | None = None, done=lambda: None) -> dict:
    """Measure and log every variant of one base model; returns {variant name: metrics}."""
    from pipelines.architecture import architecture, non_embedding_params
    from pipelines.corpus import load_corpus
    from pipelines.evaluate_formats import sequence_length
    from pipelines.features import FeatureSettings, measure_gptq, measure_rtn
    from pipelines.measure.nll import NllResult, evaluate_nll
    from pipelines.model_source import load_model
    from pipelines.quantize.formats import parse_formats
    from pipelines.quantize.rtn import count_params, find_weights
    from pipelines.token_windows import calibration_windows, evaluation_and_subset_windows

    formats = parse_formats(list(config.formats))
    corpus = load_corpus(config.dataset)
    spec = entry.spec
    model, tokenizer, source = load_model(spec, dtype=config.dtype, gguf_file=entry.gguf_file)
    seq_len = sequence_length(model, config.seq_len)
    name = entry.name or short_name(source.gguf_file or spec)
    model_key = variant_key({"model": source.fingerprint, "dataset": corpus.digest,
                             "settings": config.result_settings(), "code": code_version()})
    settings = FeatureSettings(slope_seeds=tuple(config.seed + i for i in range(3)),
                               hessians=config.hessians, damp=config.damp,
                               batch_size=config.batch_size)
    previous = runs_with_key(client, experiment_id, model_key)
    parent_id = previous[0].info.run_id if previous else None
    with mlflow.start_run(run_id=parent_id, run_name=None if parent_id else name,
                          tags=None if parent_id else {KEY_TAG: model_key, KIND_TAG: "model"},
                          parent_run_id=None if parent_id else root_run_id,
                          description=f"Base model {spec}: fp loss, and one child run per quantized "
                          f"variant (format x method) measured on {corpus.spec}.") as parent:
        parent_id = parent.info.run_id
        windows, slope_windows = evaluation_and_subset_windows(
            tokenizer, corpus.validation, seq_len, config.max_windows, config.slope_windows)
        targets = find_weights(model)
        if not previous:
            mlflow.log_params({"model": spec, "model_kind": source.kind, "model_fingerprint": source.fingerprint,
                               "gguf_file": source.gguf_file, "revision": source.revision,
                               "family": entry.family, "train_tokens": entry.train_tokens,
                               "dataset": corpus.spec, "dataset_digest": corpus.digest,
                               "seq_len": seq_len, "windows": len(windows.input_ids),
                               "bos": windows.bos, "code_version": code_version(),
                               **{f"arch.{k}": v for k, v in architecture(model).items()},
                               **{f"setting.{k}": v for k, v in config.result_settings().items()}})
            _log_dataset(mlflow, corpus)
        metrics = client.get_run(parent_id).data.metrics
        if "nll_fp" in metrics:  # resumed: the fp loss is already known
            fp = NllResult(metrics["nll_fp_total_nats"], windows.predicted_tokens, windows.predicted_bytes)
        else:
            say(f"{name}: fp loss")
            fp = evaluate_nll(model, windows, config.batch_size)
            d = sum(t.param.numel() for t in targets)
            mlflow.log_metrics({"nll_fp": fp.nll, "bpb_fp": fp.bits_per_byte,
                                "nll_fp_total_nats": fp.total_nats, "quantized_params": d,
                                "total_params": count_params(model),
                                "non_embedding_params": non_embedding_params(model),
                                **({"train_tokens": entry.train_tokens} if entry.train_tokens else {})})
        logged = {a.path for a in client.list_artifacts(parent_id, "landscape")}
        if config.landscape_step_db > 0 and "landscape/profile.png" not in logged:
            say(f"{name}: radial loss landscape")
            _log_landscape(mlflow, model, targets, slope_windows, config, name)
        calibration = None
        results = {}
        for fmt in formats:
            base = {"format": fmt.name, "family": fmt.family, "precision": fmt.precision,
                    "exp_bits": fmt.exp_bits, "man_bits": fmt.man_bits,
                    "block_size": fmt.block_size or 0, "granularity": fmt.granularity}
            for method in config.methods:
                key = variant_key({"model": model_key, "format": fmt.name, "method": method})
                run_name = f"{name} · {fmt.name} · {method}"
                if method == "rtn":
                    def work(fmt=fmt):
                        r = measure_rtn(model, fmt, windows, slope_windows, fp, settings=settings,
                                        targets=targets)
                        m = _numeric(r, ["nll_rtn", "bpb_rtn", "sqnr_rtn_db", "slope_rtn", "bytes",
                                         "bits_per_weight", "quantized_params", "seconds_rtn",
                                         "seconds_slope"])
                        m.update(nll=r["nll_rtn"], delta_nll=r["nll_rtn"] - fp.nll,
                                 sqnr_db=r["sqnr_rtn_db"], bpb=r["bpb_rtn"])
                        return m, {"layers_sqnr.json": r["layers"]}
                else:
                    if calibration is None:
                        calibration = calibration_windows(tokenizer, corpus.train, seq_len,
                                                          config.calibration_size, seed=config.seed)

                    def work(fmt=fmt):
                        r = measure_gptq(model, fmt, windows, calibration, settings=settings,
                                         targets=targets)
                        m = _numeric(r, ["nll_gptq", "bpb_gptq", "sqnr_gptq_db", "seconds_gptq",
                                         "damp_median"])
                        m.update(nll=r["nll_gptq"], delta_nll=r["nll_gptq"] - fp.nll,
                                 sqnr_db=r["sqnr_gptq_db"], bpb=r["bpb_gptq"], bytes=r["bytes"],
                                 bits_per_weight=fmt.bits_per_weight)
                        return m, {"layers_sqnr.json": r["gptq_layers"]}
                results[run_name] = _child(client, mlflow, experiment_id, parent_id, run_name, key,
                                           {**base, "method": method}, work, say)
                done()
        _log_plots(mlflow, name, results, fp)
    return results


def _log_landscape(mlflow, model, targets, windows, config: SweepConfig, name: str) -> None:
    """The typical radial profile (3 seeded random directions) as CSV and plot (Xu Fig. 1–2)."""
    from pipelines.landscape import Landscape
    from pipelines.landscape_run import directions_for, log_profile, snr_grid

    directions, _ = directions_for(model, targets, [config.seed + i for i in range(3)], [])
    land = Landscape(model, targets, windows, config.batch_size)
    points = land.profile(directions, snr_grid(config.landscape_step_db, 40.0))
    log_profile(mlflow, points, f"{name}: radial loss landscape")


def _log_plots(mlflow, name, results, fp) -> None:
    """NLL vs SQNR (Xu Fig. 3) and NLL vs weight bytes (Xu Fig. 6) of this model's variants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(run.split(" · ")[1], run.split(" · ")[2], m) for run, m in results.items() if m]
    if not rows:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    # Xu et al.'s convention: hollow markers RTN, filled markers GPTQ.
    for method, color, face in (("rtn", "C0", "none"), ("gptq", "C1", "C1")):
        pts = [(m["sqnr_db"], m["nll"], m.get("bytes"), f) for f, meth, m in rows if meth == method]
        if not pts:
            continue
        style = {"marker": "o", "edgecolors": color, "facecolors": face, "label": method.upper()}
        left.scatter([p[0] for p in pts], [p[1] for p in pts], **style)
        with_bytes = [p for p in pts if p[2] is not None]
        right.scatter([p[2] / 1e6 for p in with_bytes], [p[1] for p in with_bytes], **style)
        for x, y, _, fmt in pts:
            left.annotate(fmt, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for ax in (left, right):
        ax.axhline(fp.nll, color="k", lw=0.8, ls="--", label="fp")
        ax.set_ylabel("NLL (nats/token)")
        ax.legend()
    left.set_xlabel("SQNR (dB)")
    left.set_title(f"{name}: loss vs SQNR")
    right.set_xlabel("weights (MB)")
    right.set_title(f"{name}: loss vs size")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/nll_vs_sqnr_and_bytes.png")
    plt.close(fig)


class TrackingError(RuntimeError):
    """A tracking store that cannot be used; the message says which and why."""


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after minutes of retries, when an http(s) tracking URI does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).read()
    except Exception as err:
        raise TrackingError(f"tracking server {uri} does not answer ({err}); start it or pass "
                            "another --tracking-uri") from None


def variant_count(config: SweepConfig) -> int:
    """How many child runs the sweep has (reused ones included)."""
    from pipelines.quantize.formats import parse_formats

    return len(config.models) * len(parse_formats(list(config.formats))) * len(config.methods)


def run_sweep(config: SweepConfig, tracking_uri: str | None = None, say=print,
              done=lambda: None, workers: int = 1, executor=None, grow_catalog: bool = True) -> dict:
    """Run a whole sweep into `tracking_uri` (default: MLflow's own default store).

    `say(message)` reports each step; `done()` is called once per variant, reused or measured;
    `executor` (see `sweep_executors`) places the per-model units; by default `workers` > 1
    sweeps that many models at once in separate processes. `grow_catalog=False` keeps the swept
    models out of the recommendation catalog (research models such as the micro-suite).
    """
    from pipelines.sweep_executors import SweepUnit, executor_for
    from registry.versions import experiment_id as ensure_experiment

    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        use_store(tracking_uri)
    check_tracking_server(mlflow.get_tracking_uri())
    client = MlflowClient()
    experiment_id = ensure_experiment(client, config.experiment,
                                      "PTQ sweep: a parent run per base model, a child run per (format, method) "
                                      "variant with its loss, SQNR and landscape slope.")
    mlflow.set_experiment(experiment_id=experiment_id)
    # Under `mlflow run`, the project's run is the root of this sweep's tree: model runs nest under
    # it (otherwise the first model run would *become* the project run and clash with its params).
    root_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    start = time.perf_counter()
    executor = executor or executor_for(workers)
    units = [SweepUnit(config, entry, mlflow.get_tracking_uri(), experiment_id, root_run_id)
             for entry in config.models]
    by_spec = {unit.entry.spec: result for unit, result in executor.run(units, say, done)}
    results = {entry.spec: by_spec[entry.spec] for entry in config.models}
    say(f"sweep {config.experiment}: {sum(len(r) for r in results.values())} variants "
        f"in {time.perf_counter() - start:.0f} s")
    if not grow_catalog:
        return results
    # the catalog grows with every sweep: measured models (and their fp loss) become candidates
    from registry.catalog import refresh_catalog

    try:
        version = refresh_catalog(client, (config.experiment,))
        say(f"ptq-candidate-catalog/{version.version} is current")
    except Exception as err:  # every variant is logged already; the catalog can be refreshed later
        say(f"note: the candidate catalog was not refreshed ({type(err).__name__}: {err}); run `advisor seed`")
    return results
