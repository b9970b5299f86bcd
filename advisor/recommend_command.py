"""`advisor recommend --memory 8GB` and `advisor seed`: the command users came for.

No torch or transformers on this path: the registry answers from JSON documents and the
memory model is arithmetic on the catalog's architecture numbers.
"""

from __future__ import annotations

import json
import sys

import click

from advisor.answer_cache import StoreInputs, cache_enabled, default_uri, normalized_uri, store_stamp
from advisor.answer_cache import load as load_cached
from advisor.errors import AdvisorError, friendly_errors
from advisor.recommendation_log import flush_abandoned, log_run, new_id, payload, spool, start_logger
from advisor.registry_commands import TRACKING_HELP, _use_store
from registry.measured_data import DEFAULT_FILE as DEFAULT_MEASURED

DEFAULT_FORMATS = "xu-mx36,classic-int"


def _say(message: str) -> None:
    click.echo(message, err=True)


def ensure_seeded(client, experiments=("ptq-sweep",), say=_say):
    """Seed the published laws and the candidate catalog when the store has none (says so).

    Returns the current catalog, so callers need not load it again.
    """
    from registry.catalog import CatalogNotFoundError, load_catalog, refresh_catalog
    from registry.laws import seed_published_laws

    seeded = seed_published_laws(client)
    for name, version in seeded.items():
        say(f"seeded {name}/{version.version} from the published coefficients (Ouyang et al. 2024)")
    try:
        return load_catalog("current", client)
    except CatalogNotFoundError:
        version = refresh_catalog(client, experiments)
        say(f"seeded ptq-candidate-catalog/{version.version} from the curated model list"
            " and the swept models")
        return load_catalog(str(version.version), client)


@click.command()
@click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True,
              help="Sweep experiment(s) whose models are catalogued (repeatable).")
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
@click.option("--measured-data", default=str(DEFAULT_MEASURED), show_default="the embedded file",
              help="Measured runs to import (a .json.gz from `bench/study_real.py --export`), or none.")
@click.option("--fit/--no-fit", default=True, show_default=True,
              help="Fit and register a loss predictor on the imported runs.")
@friendly_errors
def seed(experiments, tracking_uri, measured_data, fit):
    """Seed the store: published QiD / 16-bit laws, measured reference runs, the candidate catalog.

    The measured runs (real pretrained models and the micro-suite, swept here; see
    docs/real-model-study.md) come from a versioned data file; importing them is idempotent, and
    a loss predictor is fitted on them and registered citing the data version.
    """
    from registry.catalog import refresh_catalog
    from registry.laws import seed_published_laws

    data = None if measured_data.lower() == "none" else _measured_file(measured_data)  # checked before any write
    client = _use_store(tracking_uri)
    for name, version in seed_published_laws(client).items():
        click.echo(f"seeded {name}/{version.version} (published coefficients)")
    if data is not None:
        _seed_measured(client, data, experiments, fit)
    version = refresh_catalog(client, experiments)
    click.echo(f"ptq-candidate-catalog/{version.version} is current")


def _measured_file(path: str):
    """The measured-data file's content, or None (said) when the embedded one is not in this checkout."""
    from pathlib import Path

    from registry.measured_data import MeasuredDataError, load

    if path == str(DEFAULT_MEASURED) and not Path(path).exists():
        click.echo("no embedded measured data in this checkout: seeding laws and catalog only")
        return None
    try:
        return load(path)
    except MeasuredDataError as err:
        raise AdvisorError(str(err)) from None


def _seed_measured(client, data, experiments, fit) -> None:
    from registry.feature_table import TableQuery, build_feature_table
    from registry.measured_data import ZOO_EXPERIMENT, import_runs
    from registry.predictor_evaluation import evaluate_recipe
    from registry.predictor_registry import register_evaluation

    counts = import_runs(client, data)
    click.echo(f"measured data {data['data_version']} ({data['models']} models, {data['variants']} variants): "
               f"imported {counts['models']} model runs and {counts['variants']} variant runs, "
               f"{counts['skipped']} already here")
    if not fit or not (counts["variants"] or not _has_champion(client)):
        return
    present = [e for e in dict.fromkeys((*experiments, ZOO_EXPERIMENT)) if client.get_experiment_by_name(e)]
    query = TableQuery(tuple(present))
    table = build_feature_table(query, client)
    # Three targets, champion by held-out MAE: relative to NLL_fp is the paper's; relative to NLL_rtn
    # anchors predictions to the measured RTN loss, which holds up on a model that loses far more
    # than any training model; the share of RTN's loss increase left after GPTQ also scales with it
    # (docs/real-model-study.md: on the shipped data its LOFO MAE is a quarter of the others')
    for base in ("nll_fp", "nll_rtn", "rtn_fraction"):
        try:
            evaluation = evaluate_recipe({"kind": "rf", "base": base, "seed": 0}, table, (), 0.1)
        except ValueError as err:  # e.g. a single model family: nothing to hold out
            click.echo(f"no loss predictor fitted on it: {err}")
            return
        version, decision = register_evaluation(evaluation, table, query, client=client,
                                                data_version=data["data_version"])
        click.echo(f"{version.name}/{version.version} (rf, base {base}) fitted on {evaluation.train_rows} rows "
                   f"(measured data {data['data_version']}): {decision}")


def _has_champion(client) -> bool:
    from registry.predictor_registry import CHAMPION, PREDICTOR

    try:
        client.get_model_version_by_alias(PREDICTOR, CHAMPION)
        return True
    except Exception:
        return False


def _measured_table(client, experiments):
    """(the sweep feature table or None, a note when there is none)."""
    from registry.feature_table import FeatureTableError, TableQuery, build_feature_table

    try:
        return build_feature_table(TableQuery(tuple(experiments)), client), None
    except FeatureTableError as err:
        return None, f"note: no measured candidates ({err})"


def gather_inputs(client, experiments, catalog=None) -> StoreInputs:
    """Everything a recommendation reads from the store: catalog, measured table, predictor, laws.

    `catalog`: the current catalog if the caller has it (else it is loaded).
    """
    from registry.api import load_champion, load_current_law
    from registry.catalog import load_catalog
    from registry.laws import LawNotFoundError
    from registry.predictor_registry import PredictorNotFoundError

    table, note = _measured_table(client, experiments)
    predictor = predictor_error = None
    if table is not None and not table.empty:
        try:
            predictor = load_champion(client)
        except PredictorNotFoundError as err:
            predictor_error = str(err)
    laws = {}
    for name in ("qid-law", "loss16-law"):
        try:
            laws[name] = load_current_law(name, client=client)
        except LawNotFoundError as err:
            laws[name] = str(err)
    return StoreInputs(catalog or load_catalog("current", client), table, note, predictor, predictor_error,
                       laws["qid-law"], laws["loss16-law"])


def rows_from_inputs(inputs: StoreInputs, models: str, formats: dict, methods, plan, say):
    """Every candidate row for `models` ('all', 'measured' or names) × formats × methods.

    Returns (rows, {registered model: version used}, [notes on skipped candidates]).
    """
    from advisor.recommend import catalog_rows, measured_rows

    chosen, table, catalog = methods, inputs.table, inputs.catalog
    if inputs.table_note:
        say(inputs.table_note)
    measured_names = set() if table is None else set(table["model"])
    wanted = None if models in ("all", "measured") else {m.strip() for m in models.split(",") if m.strip()}
    known = measured_names | {e.name for e in catalog.entries}
    if wanted and wanted - known:
        import difflib

        bad = sorted(wanted - known)[0]
        close = difflib.get_close_matches(bad, sorted(known), n=3)
        raise AdvisorError(f"unknown model {bad!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                       "; see `advisor models`"))
    if models == "measured" and not measured_names:
        raise AdvisorError("--models measured, but no sweep runs were found: run `advisor sweep` first")
    rows, versions, notes = [], {"ptq-candidate-catalog": catalog.version}, []
    if table is not None:
        table = table[table["model"].isin(wanted)] if wanted else table
        predictor = None
        if "gptq" in chosen and not table.empty:
            if inputs.predictor is None:
                raise AdvisorError(f"{inputs.predictor_error}, or use --methods rtn")
            predictor = inputs.predictor
            versions[predictor.name] = predictor.version
            if predictor.spec.get("data_version"):  # fitted on the embedded measured data
                versions["measured-data"] = predictor.spec["data_version"]
        rows += measured_rows(table, formats, chosen, plan, predictor)
        if any(r.source == "predictor" and r.nll != r.nll for r in rows):
            raise AdvisorError("the loss predictor returned NaN for some candidates: refit it "
                               "(`advisor fit-predictor`) on runs that log every feature")
    if models != "measured":
        qid, loss16 = inputs.qid, inputs.loss16
        for law in (qid, loss16):
            if isinstance(law, str):
                raise AdvisorError(law)
        versions |= {qid.name: qid.version, loss16.name: loss16.version}
        entries = [e for e in catalog.entries if e.name not in measured_names and (not wanted or e.name in wanted)]
        more, skipped = catalog_rows(entries, formats, chosen, plan, qid, loss16,
                                     f"ptq-candidate-catalog/{catalog.version}")
        rows += more
        notes += skipped
    return rows, versions, notes


def collect_rows(client, models: str, formats: dict, methods, plan, experiments, say, catalog=None):
    """Every candidate row, read from the store (see `rows_from_inputs`)."""
    return rows_from_inputs(gather_inputs(client, experiments, catalog), models, formats, methods, plan, say)


@click.command()
@click.option("--memory", "memory_text", required=True, metavar="SIZE",
              help="Budget: 8GB = 8·10⁹ bytes, 8GiB = 8·2³⁰; decimals allowed (7.5G, 512MB).")
@click.option("--models", default="all", show_default=True,
              help="Comma-separated model names, 'measured' (swept models only) or 'all'.")
@click.option("--formats", "formats_spec", default=DEFAULT_FORMATS, show_default=True,
              help="Formats and/or presets (see `advisor formats`).")
@click.option("--methods", default="rtn,gptq", show_default=True, help="rtn, gptq or both.")
@click.option("--context", type=click.IntRange(0), default=0, show_default=True,
              help="Tokens of KV cache per sequence to count; 0 = weights only.")
@click.option("--batch", type=click.IntRange(1), default=None, help="Sequences in the KV cache [default: 1].")
@click.option("--kv-bits", type=click.Choice(["16", "8"]), default=None, help="KV-cache precision [default: 16].")
@click.option("--overhead", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Runtime overhead as a fraction of the weight bytes.")
@click.option("--max-delta-nll", type=click.FloatRange(0), default=None,
              help="Only rows losing at most this much NLL (nats/token) vs the same model at 16 bits.")
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True, help="Rows to show.")
@click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True,
              help="Sweep experiment(s) holding measured candidates (repeatable).")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Draw the loss-vs-bytes frontier with the budget line to this PNG.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Export the winner to this folder as low-bit ONNX (see `advisor export`).")
@click.option("--dataset", default=None,
              help="With --export: calibration / verification text [default: the sweep's dataset].")
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
@click.option("--json", "as_json", is_flag=True, help="The recommendation as JSON (schema in README).")
@friendly_errors
def recommend(memory_text, models, formats_spec, methods, context, batch, kv_bits, overhead, max_delta_nll,
              top, experiments, plot, export_dir, dataset, tracking_uri, as_json):
    """Recommend the model + format + method predicted to lose least within a memory budget.

    Measured models answer through the champion loss predictor (with a conformal interval);
    catalog-only models through the QiD law on their fp loss. Rows rank by bits/byte, so models
    with different tokenizers compare fairly. Every recommendation is logged as an MLflow run.
    """
    from advisor.memory import BudgetError, MemoryPlan, parse_memory
    from advisor.recommend import NothingFits, choose, mark_pareto
    from pipelines.quantize.formats import parse_formats

    try:
        budget = parse_memory(memory_text)
    except BudgetError as err:
        raise AdvisorError(str(err)) from None
    if not context and (batch is not None or kv_bits is not None):
        raise AdvisorError("--batch and --kv-bits size the KV cache: give --context too")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not chosen or set(chosen) - {"rtn", "gptq"}:
        raise AdvisorError(f"--methods takes rtn, gptq or both (comma-separated), not {methods!r}")
    formats = {f.name: f for f in parse_formats(formats_spec)}
    plan = MemoryPlan(context=context, batch=batch or 1, kv_bits=int(kv_bits or 16), overhead=overhead)
    say = (lambda message: None) if as_json else _say
    uri = normalized_uri(tracking_uri or default_uri())
    inputs = None if export_dir or not cache_enabled() else load_cached(uri, experiments)
    client = None
    if inputs is None:  # the store itself (a first answer, a changed store, a server, or --export)
        client = _use_store(tracking_uri)
        inputs = gather_inputs(client, experiments, ensure_seeded(client, experiments, say=_say))
    rows, versions, notes = rows_from_inputs(inputs, models, formats, chosen, plan, say)
    mark_pareto(rows)
    inputs_logged = {"memory": memory_text, "models": models, "formats": ",".join(formats),
                     "methods": ",".join(chosen), "max_delta_nll": max_delta_nll}
    try:
        ranked = choose(rows, budget, max_delta_nll)
    except NothingFits as err:
        _log(client, uri, experiments, payload(budget, plan, inputs_logged, versions, [], None, new_id()))
        raise click.ClickException(str(err)) from None  # exit 1: a valid question without an answer
    report = _report(budget, plan, ranked[:top], versions, notes, len(rows), len(ranked))
    report["recommendation_id"] = new_id()
    report["run_id"] = _log(client, uri, experiments, payload(budget, plan, inputs_logged, versions, report["rows"],
                                                              report["winner"], report["recommendation_id"]))
    if plot:
        _plot(rows, ranked[0], budget, plot)
    if export_dir:  # (never answered from the cache: client is the store's)
        report["export"] = _export_winner(ranked[0], report, export_dir, dataset, client, say)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print(report, budget, plan)
        if export_dir:
            click.echo(f"exported to {export_dir}: NLL {report['export']['nll_onnx']:.4f} nats/token with "
                       f"onnxruntime; registered as {report['export']['registered']}")


def _export_winner(row, report, out, dataset, client, say) -> dict:
    """Hand the winner to the export pipeline, with the prediction it was chosen on."""
    import json as _json
    from pathlib import Path

    from pipelines.corpus import DEFAULT_DATASET
    from pipelines.export.export_model import ExportConfig, ExportError, ExportInputError, export_quantized
    from registry.exported_models import register_export

    if row.method == "none":
        raise AdvisorError(f"the winner is {row.model} unquantized (fp16): nothing to quantize; "
                           "narrow --formats or the budget, or export another row with `advisor export`")
    if not row.spec:
        raise AdvisorError(f"the catalog gives no source for {row.model}'s weights: use `advisor export`")
    config = ExportConfig(model=row.spec, format=row.format, method=row.method, out=out,
                          dataset=dataset or DEFAULT_DATASET, gguf_file=row.gguf_file)
    try:
        record = export_quantized(config, say)
    except ExportInputError as err:
        raise AdvisorError(str(err)) from None
    except ExportError as err:
        raise click.ClickException(str(err)) from None
    record |= {"nll_predicted": row.nll, "nll_predicted_interval": [row.nll_lower, row.nll_upper],
               "prediction_source": row.cite, "registry_versions": report["versions"]}
    version = register_export(record, out, client=client)
    record["registered"] = f"{version.name}/{version.version}"
    Path(out, "quantization.json").write_text(_json.dumps(record, indent=2))
    return record


def _report(budget, plan, rows, versions, notes, candidates, fitting) -> dict:
    shown = [r.as_dict(budget) for r in rows]
    return {"schema": "ptq-advisor/recommendation/v1",
            "budget": {"text": budget.text, "bytes": budget.bytes, "unit": budget.unit},
            "memory_plan": {"context": plan.context, "batch": plan.batch, "kv_bits": plan.kv_bits,
                            "overhead": plan.overhead},
            "versions": versions, "candidates": candidates, "fitting": fitting,
            "winner": shown[0], "rows": shown, "notes": notes}


def _log(client, uri, experiments, record) -> str | None:
    """Log the recommendation: now when the store is open (run id), else by the detached logger (None)."""
    if client is None:
        spool(uri, experiments, record)
        start_logger(uri, experiments)
        return None
    flush_abandoned(uri, client)  # recommendations a dead logger left behind
    run_id = log_run(record, client)
    if cache_enabled() and store_stamp(uri) is not None:
        start_logger(uri, experiments)  # refreshes the answer cache in the background
    return run_id


def _fmt_interval(row) -> str:
    if row["nll_lower"] is None:
        return f"{row['nll']:.4f}"
    if row["nll_upper"] == float("inf"):
        return f"{row['nll']:.4f} ± ∞"
    return f"{row['nll']:.4f} ± {(row['nll_upper'] - row['nll_lower']) / 2:.4f}"


def _print(report, budget, plan) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Best under {budget.text} ({budget.bytes:,} bytes; weights + 16-bit rest"
                        + (f" + KV cache {plan.context}×{plan.batch} at {plan.kv_bits} bits" if plan.context else "")
                        + f" + {plan.overhead:.0%} overhead)")
    for column in ("", "model", "format", "method", "size", "% budget", "NLL nats/tok", "bits/byte", "source"):
        table.add_column(column, justify="right" if column in ("size", "% budget", "bits/byte") else "left")
    for i, row in enumerate(report["rows"]):
        mark = "★" if i == 0 else ("◆" if row["pareto"] else "")
        table.add_row(mark, row["model"], row["format"], row["method"], row["size"],
                      f"{row['budget_fraction']:.0%}", _fmt_interval(row),
                      f"{row['bpb']:.4f}" + ("*" if row["bytes_per_token_assumed"] else ""), row["source"])
    console = Console(width=140)
    console.print(table)
    w = report["winner"]
    console.print(f"★ {w['model']} · {w['format']} · {w['method']}: {w['size']} ({w['bytes']:,.0f} bytes), "
                  f"predicted NLL {_fmt_interval(w)} nats/token, {w['bpb']:.4f} bits/byte "
                  f"[{w['source']}: {w['cite']}]", highlight=False)
    console.print(f"◆ on the loss-vs-bytes Pareto frontier; * bits/byte assume 4 bytes/token; "
                  f"{report['fitting']} of {report['candidates']} candidates fit; " + (
                      f"logged as run {report['run_id']}" if report["run_id"] else
                      f"answered from the answer cache; logging as recommendation {report['recommendation_id']}"),
                  highlight=False)
    console.print("answered with " + ", ".join(
        f"measured data {v}" if k == "measured-data" else f"{k}/{v}" for k, v in report["versions"].items()),
        highlight=False)


def _plot(rows, winner, budget, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for source, marker in (("measured", "o"), ("predictor", "s"), ("law", "."), ("catalog", "x")):
        pts = [r for r in rows if r.source == source]
        if pts:
            ax.scatter([r.memory["total"] / 1e9 for r in pts], [r.bpb for r in pts], marker=marker, s=12,
                       alpha=0.5, label=source)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.memory["total"])
    ax.plot([r.memory["total"] / 1e9 for r in front], [r.bpb for r in front], "k-", linewidth=1, label="frontier")
    ax.axvline(budget.bytes / 1e9, color="red", linestyle="--", label=f"budget {budget.text}")
    ax.scatter([winner.memory["total"] / 1e9], [winner.bpb], marker="*", s=200, color="gold", edgecolor="k",
               zorder=5, label="recommended")
    ax.set_xscale("log")
    ax.set_xlabel("memory (GB, 10⁹ bytes)")
    ax.set_ylabel("predicted bits per byte")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(recommend())
