"""The sweep: every (model, format, method) variant measured and logged as an MLflow run.

Run tree (one experiment per sweep name):
  parent run per base model  "<model>"                 params: source, dataset, settings;
                                                      metrics: NLL_fp, bits/byte, D, params
    child run                "<model> · fp + landscape" the claim on measuring those once (timings)
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

from pipelines.machine import MACHINE_TAG, describe
from pipelines.model_set import ModelEntry
from pipelines.run_claims import DUPLICATE_TAG, OWNER_TAG, Heartbeat, claim_tags, settle
from pipelines.run_claims import order as _order
from pipelines.tracking import KEY_TAG, KIND_TAG, code_version, runs_with_key, use_store, variant_key

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


@dataclass
class Waiting:
    """A variant another live sweep is measuring (its run id): wait for it, do not measure it twice."""

    run_id: str


def _child(client, mlflow, experiment_id, parent_id, name, key, params, work, say, kind="variant"):
    """Run `work()` in a child run of `parent_id` unless the variant is FINISHED (its metrics) or
    claimed by a live run elsewhere (Waiting); None when it FAILED. See `run_claims`."""
    import pandas as pd

    done, live = settle(client, experiment_id, key)
    if done is not None:
        say(f"{name}: reused run {done.info.run_id[:8]}")
        return done.data.metrics
    if live:
        say(f"{name}: being measured by {live[0].data.tags.get(OWNER_TAG, '?')}")
        return Waiting(live[0].info.run_id)
    say(f"{name}: measuring")
    run = mlflow.start_run(run_name=name, nested=True, parent_run_id=parent_id,
                           tags={KEY_TAG: key, KIND_TAG: kind, MACHINE_TAG: describe(), **claim_tags()})
    run_id = run.info.run_id
    with Heartbeat(client, run_id):
        done, live = settle(client, experiment_id, key)
        if done is not None or live[0].info.run_id != run_id:  # another sweep claimed it first
            mlflow.set_tag(DUPLICATE_TAG, (done or live[0]).info.run_id)
            mlflow.end_run(status="KILLED")
            return done.data.metrics if done is not None else Waiting(live[0].info.run_id)
        mlflow.log_params(params)
        try:
            metrics, tables = work()
        except Exception as err:  # one bad variant must not stop the sweep (a store error does)
            mlflow.set_tag("ptq.error", f"{type(err).__name__}: {err}"[:4000])
            mlflow.log_text(traceback.format_exc(), "error.txt")
            mlflow.end_run(status="FAILED")
            say(f"{name}: FAILED ({type(err).__name__}: {err})")
            return None
        mlflow.log_metrics(metrics)
        for path, rows in tables.items():
            mlflow.log_table(pd.DataFrame(rows), path)
        mlflow.end_run(status="FINISHED")
    winner, _ = settle(client, experiment_id, key)  # a same-instant twin: the earlier one stays
    return client.get_run(winner.info.run_id).data.metrics


def wait_for(client, experiment_id, key, name, say, measure, poll_s: float = 2.0):
    """A Waiting variant's metrics once its owner finishes; measured here if the owner dies."""
    while True:
        done, live = settle(client, experiment_id, key)
        if done is not None:
            say(f"{name}: reused run {done.info.run_id[:8]} (measured by another sweep)")
            return done.data.metrics
        if not live:
            result = measure()
            if not isinstance(result, Waiting):
                return result
        time.sleep(poll_s)


def _numeric(record: dict, names: list[str]) -> dict:
    return {n: float(record[n]) for n in names if n in record and record[n] is not None}


@dataclass
class Variant:
    """One (format, method) of a model: its run name, key and params."""

    name: str
    key: str
    fmt: object  # pipelines.quantize.formats.Format
    method: str
    params: dict


class ModelContext:
    """What measuring any variant of one base model needs, loaded once per process (no MLflow)."""

    def __init__(self, config: SweepConfig, entry: ModelEntry):
        from pipelines.corpus import load_corpus
        from pipelines.evaluate_formats import sequence_length
        from pipelines.features import FeatureSettings
        from pipelines.model_source import load_model
        from pipelines.quantize.rtn import find_weights
        from pipelines.token_windows import evaluation_and_subset_windows

        self.config, self.entry = config, entry
        self.corpus = load_corpus(config.dataset)
        self.model, self.tokenizer, self.source = load_model(entry.spec, dtype=config.dtype,
                                                             gguf_file=entry.gguf_file)
        self.seq_len = sequence_length(self.model, config.seq_len)
        self.name = entry.name or short_name(self.source.gguf_file or entry.spec)
        self.model_key = variant_key({"model": self.source.fingerprint, "dataset": self.corpus.digest,
                                      "settings": config.result_settings(), "code": code_version()})
        self.settings = FeatureSettings(slope_seeds=tuple(config.seed + i for i in range(3)),
                                        hessians=config.hessians, damp=config.damp,
                                        batch_size=config.batch_size)
        self.windows, self.slope_windows = evaluation_and_subset_windows(
            self.tokenizer, self.corpus.validation, self.seq_len, config.max_windows, config.slope_windows)
        self.targets = find_weights(self.model)
        self.fp = None  # NllResult, from the parent run or measured
        self._calibration = None

    def calibration(self):
        from pipelines.token_windows import calibration_windows

        if self._calibration is None:
            self._calibration = calibration_windows(self.tokenizer, self.corpus.train, self.seq_len,
                                                    self.config.calibration_size, seed=self.config.seed)
        return self._calibration

    def fp_from(self, metrics: dict):
        from pipelines.measure.nll import NllResult

        self.fp = NllResult(metrics["nll_fp_total_nats"], self.windows.predicted_tokens,
                            self.windows.predicted_bytes)
        return self.fp

    def variants(self) -> list[Variant]:
        from pipelines.quantize.formats import parse_formats

        out = []
        for fmt in parse_formats(list(self.config.formats)):
            base = {"format": fmt.name, "family": fmt.family, "precision": fmt.precision,
                    "exp_bits": fmt.exp_bits, "man_bits": fmt.man_bits,
                    "block_size": fmt.block_size or 0, "granularity": fmt.granularity}
            for method in self.config.methods:
                out.append(Variant(f"{self.name} · {fmt.name} · {method}",
                                   variant_key({"model": self.model_key, "format": fmt.name, "method": method}),
                                   fmt, method, {**base, "method": method}))
        return out

    def measure(self, variant: Variant):
        """(metrics, tables) of one variant; the model's weights are restored afterwards."""
        from pipelines.features import measure_gptq, measure_rtn

        fmt, fp = variant.fmt, self.fp
        if variant.method == "rtn":
            r = measure_rtn(self.model, fmt, self.windows, self.slope_windows, fp, settings=self.settings,
                            targets=self.targets)
            m = _numeric(r, ["nll_rtn", "bpb_rtn", "sqnr_rtn_db", "slope_rtn", "bytes",
                             "bits_per_weight", "quantized_params", "seconds_rtn", "seconds_slope"])
            m.update(nll=r["nll_rtn"], delta_nll=r["nll_rtn"] - fp.nll, sqnr_db=r["sqnr_rtn_db"],
                     bpb=r["bpb_rtn"])
            return m, {"layers_sqnr.json": r["layers"]}
        r = measure_gptq(self.model, fmt, self.windows, self.calibration(), settings=self.settings,
                         targets=self.targets)
        m = _numeric(r, ["nll_gptq", "bpb_gptq", "sqnr_gptq_db", "seconds_gptq", "damp_median"])
        m.update(nll=r["nll_gptq"], delta_nll=r["nll_gptq"] - fp.nll, sqnr_db=r["sqnr_gptq_db"],
                 bpb=r["bpb_gptq"], bytes=r["bytes"], bits_per_weight=fmt.bits_per_weight)
        return m, {"layers_sqnr.json": r["gptq_layers"]}


def open_model_run(mlflow, client, experiment_id, ctx: ModelContext, say, root_run_id: str | None = None):
    """Start (or resume) the model's parent run and make sure it holds the fp loss and the
    landscape profile; the active run. The caller ends it. `ctx.fp` stays None if that failed."""
    from pipelines.architecture import architecture

    config, entry, spec = ctx.config, ctx.entry, ctx.entry.spec
    previous = runs_with_key(client, experiment_id, ctx.model_key)
    parent_id = previous[0].info.run_id if previous else None
    parent = mlflow.start_run(run_id=parent_id, run_name=None if parent_id else ctx.name,
                              tags=None if parent_id else {KEY_TAG: ctx.model_key, KIND_TAG: "model"},
                              parent_run_id=None if parent_id else root_run_id,
                              description=f"Base model {spec}: fp loss, and one child run per quantized "
                              f"variant (format x method) measured on {ctx.corpus.spec}.")
    parent_id = parent.info.run_id
    if not previous:
        # two sweeps starting this model at once each created a parent: all keep the earliest
        first = min(runs_with_key(client, experiment_id, ctx.model_key), key=_order)
        if first.info.run_id != parent_id:
            mlflow.end_run(status="KILLED")
            client.delete_run(parent_id)
            parent, previous = mlflow.start_run(run_id=first.info.run_id), [first]
            parent_id = first.info.run_id
    if not previous:
        mlflow.log_params({"model": spec, "model_kind": ctx.source.kind, "model_fingerprint": ctx.source.fingerprint,
                           "gguf_file": ctx.source.gguf_file, "revision": ctx.source.revision,
                           "family": entry.family, "train_tokens": entry.train_tokens,
                           "dataset": ctx.corpus.spec, "dataset_digest": ctx.corpus.digest,
                           "seq_len": ctx.seq_len, "windows": len(ctx.windows.input_ids),
                           "bos": ctx.windows.bos, "code_version": code_version(),
                           **{f"arch.{k}": v for k, v in architecture(ctx.model).items()},
                           **{f"setting.{k}": v for k, v in config.result_settings().items()}})
        _log_dataset(mlflow, ctx.corpus)
    if not _setup_done(client, parent_id, config):
        # fp loss and landscape once per model however many sweeps share it: claimed like a variant
        # (two sweeps logging the same parent at once also race inside MLflow's tag writes)
        name, key = f"{ctx.name} · fp + landscape", variant_key({"model": ctx.model_key, "stage": "setup"})

        def attempt():
            return _child(client, mlflow, experiment_id, parent_id, name, key, {},
                          lambda: _measure_setup(mlflow, client, parent_id, ctx, say), say, kind="setup")

        def claim():  # measured here, or by another sweep that holds the claim
            setup = attempt()
            return wait_for(client, experiment_id, key, name, say, attempt) if isinstance(setup, Waiting) else setup

        setup = claim()
        if setup is not None and not _setup_done(client, parent_id, config):
            # a FINISHED claim whose results are gone from the parent (artifacts deleted, or lost
            # with the folder they lived in): retire it and measure again, or every resume fails
            stale, _ = settle(client, experiment_id, key)
            if stale is not None:
                client.set_tag(stale.info.run_id, "ptq.stale", "its parent lacks the fp loss or the landscape")
                client.set_terminated(stale.info.run_id, status="KILLED")
            setup = claim()
        if setup is None or not _setup_done(client, parent_id, config):
            return parent
    ctx.fp_from(client.get_run(parent_id).data.metrics)
    return parent


def _setup_done(client, parent_id: str, config: SweepConfig) -> bool:
    """Whether the parent run holds the fp loss and, when asked for, the landscape profile."""
    return "nll_fp" in client.get_run(parent_id).data.metrics and _landscape_done(client, parent_id, config)


def _landscape_done(client, parent_id: str, config: SweepConfig) -> bool:
    return config.landscape_step_db <= 0 or "landscape/profile.png" in {
        a.path for a in client.list_artifacts(parent_id, "landscape")}


def _measure_setup(mlflow, client, parent_id: str, ctx: ModelContext, say):
    """Log the fp loss and the landscape profile on the parent run; (timings, no tables) for the claim run."""
    from pipelines.architecture import non_embedding_params
    from pipelines.measure.nll import evaluate_nll
    from pipelines.quantize.rtn import count_params

    config, seconds = ctx.config, {}
    if "nll_fp" not in client.get_run(parent_id).data.metrics:
        say(f"{ctx.name}: fp loss")
        start = time.perf_counter()
        fp = evaluate_nll(ctx.model, ctx.windows, config.batch_size)
        seconds["seconds_fp"] = time.perf_counter() - start
        mlflow.log_metrics({"nll_fp": fp.nll, "bpb_fp": fp.bits_per_byte, "nll_fp_total_nats": fp.total_nats,
                            "quantized_params": sum(t.param.numel() for t in ctx.targets),
                            "total_params": count_params(ctx.model),
                            "non_embedding_params": non_embedding_params(ctx.model),
                            **({"train_tokens": ctx.entry.train_tokens} if ctx.entry.train_tokens else {})},
                           run_id=parent_id)
    if not _landscape_done(client, parent_id, config):
        say(f"{ctx.name}: radial loss landscape")
        start = time.perf_counter()
        _log_landscape(RunLogger(client, parent_id), ctx.model, ctx.targets, ctx.slope_windows, config, ctx.name)
        seconds["seconds_landscape"] = time.perf_counter() - start
    return seconds, {}


class RunLogger:
    """MLflow's fluent artifact calls (log_table, log_text, log_figure) bound to one run, not the active one."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def __getattr__(self, name):
        method = getattr(self.client, name)
        return lambda *args, **kwargs: method(self.run_id, *args, **kwargs)


def sweep_model(mlflow, client, experiment_id, config: SweepConfig, entry: ModelEntry, say,
                root_run_id: str | None = None, done=lambda: None) -> dict:
    """Measure and log every variant of one base model; returns {variant name: metrics}."""
    ctx = ModelContext(config, entry)
    results, waiting = {}, []
    with open_model_run(mlflow, client, experiment_id, ctx, say, root_run_id) as parent:
        parent_id = parent.info.run_id
        if ctx.fp is None:  # no fp loss, no variant: all reported FAILED, the setup run holds the error
            results = {v.name: None for v in ctx.variants()}
            for _ in results:
                done()
            return results
        for v in ctx.variants():
            def attempt(v=v):
                return _child(client, mlflow, experiment_id, parent_id, v.name, v.key, v.params,
                              lambda: ctx.measure(v), say)

            results[v.name] = attempt()
            if isinstance(results[v.name], Waiting):
                waiting.append((v, attempt))
            else:
                done()
        for v, attempt in waiting:  # measured by another sweep meanwhile, or taken over here
            results[v.name] = wait_for(client, experiment_id, v.key, v.name, say, attempt)
            done()
        _log_plots(mlflow, ctx.name, finished_variants(client, experiment_id, parent_id), ctx.fp)
    return results


def finished_variants(client, experiment_id: str, parent_id: str) -> dict:
    """{run name: metrics} of every FINISHED variant under a model run, whichever sweep measured it."""
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                              f"tags.`{KIND_TAG}` = 'variant' and attributes.status = 'FINISHED'",
                              max_results=5000)
    return {r.info.run_name: r.data.metrics for r in runs}


def _log_landscape(mlflow, model, targets, windows, config: SweepConfig, name: str) -> None:
    """The typical radial profile (3 seeded random directions) as CSV and plot (Xu Fig. 1–2)."""
    from pipelines.landscape import Landscape
    from pipelines.landscape_run import directions_for, log_profile, snr_grid

    directions, _ = directions_for(model, targets, [config.seed + i for i in range(3)], [])
    land = Landscape(model, targets, windows, config.batch_size)
    points = land.profile(directions, snr_grid(config.landscape_step_db, 40.0))
    log_profile(mlflow, points, f"{name}: radial loss landscape")


def _log_plots(mlflow, name, results, fp) -> None:
    """NLL vs SQNR (Xu Fig. 3) and NLL vs weight bytes (Xu Fig. 6) of a model's variants ({run name: metrics})."""
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
    # the plotted points as text (not log_table: its tag write races when two sweeps end together)
    lines = ["format,method,sqnr_db,nll,bytes"] + [
        f"{f},{meth},{m['sqnr_db']},{m['nll']},{m.get('bytes', '')}" for f, meth, m in sorted(rows, key=lambda r: r[:2])]
    mlflow.log_text("\n".join(lines) + "\n", "plots/variants.csv")


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


def store_failure(err: BaseException) -> str | None:
    """The message of the store error behind `err` (MLflow's REST client gave up after its retries,
    possibly inside a Ray task), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "MlflowException" and str(err).startswith("API request to"):
            return str(err).splitlines()[0]
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return None


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
    try:
        by_spec = {unit.entry.spec: result for unit, result in executor.run(units, say, done)}
    except Exception as err:
        cause = store_failure(err)
        if cause is None:
            raise
        raise TrackingError(f"the tracking store stopped answering ({cause[:300]}); every finished variant "
                            "is kept: run the same sweep again to resume") from None
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
