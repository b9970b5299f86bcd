"""`advisor recommend --memory 8GB`: the command users came for.

No torch or transformers on this path: the registry answers from JSON documents and the
memory model is arithmetic on the catalog's architecture numbers.
"""

from __future__ import annotations

import sys

import click

from advisor.answer_cache import cache_enabled, default_uri, normalized_uri, store_stamp
from advisor.answer_cache import load as load_cached
from advisor.candidates import cached_prior, gather_inputs, rows_from_inputs
from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from advisor.memory import BudgetError, MemoryPlan, parse_memory
from advisor.options import memory_plan_options, methods_option, open_store, tracking_uri_option, writable_file
from advisor.recommend import NothingFits, choose, mark_pareto
from advisor.recommendation_log import (
    flush_abandoned,
    log_run,
    new_id,
    payload,
    spool,
    start_logger,
)
from advisor.seed_command import ensure_seeded
from pipelines.quantize.formats import parse_formats
from registry.exports.exported_models import register_export

DEFAULT_FORMATS = "xu-mx36,classic-int"


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.option("--memory", "memory_text", required=True, metavar="SIZE",
              help="Budget: 8GB = 8·10⁹ bytes, 8GiB = 8·2³⁰; decimals allowed (7.5G, 512MB).")
@click.option("--models", default="all", show_default=True,
              help="Comma-separated model names, 'measured' (swept models only) or 'all'.")
@click.option("--formats", "formats_spec", default=DEFAULT_FORMATS, show_default=True,
              help="Formats and/or presets (see `advisor formats`).")
@methods_option
@memory_plan_options
@click.option("--max-delta-nll", type=click.FloatRange(0), default=None,
              help="Only rows losing at most this much NLL (nats/token) vs the same model at 16 bits.")
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True, help="Rows to show.")
@click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True,
              help="Sweep experiment(s) holding measured candidates (repeatable).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="Draw the loss-vs-memory frontier with the budget line to this PNG.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Export the winner to this folder as low-bit ONNX (see `advisor export`).")
@click.option("--dataset", default=None,
              help="With --export: calibration / verification text [default: the sweep's dataset].")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="The recommendation as JSON (schema in docs/recommend.md).")
@friendly_errors
def recommend(memory_text, models, formats_spec, methods, context, batch, runtime, max_delta_nll,
              top, experiments, plot, export_dir, dataset, tracking_uri, as_json):
    """Recommend the model + format + method predicted to lose least within a memory budget.

    Measured variants rank by their measured loss; unmeasured GPTQ of swept models answers through
    the champion loss predictor; catalog models through a published result for exactly that
    variant, else the prior (ptq-prior, with a 90% interval), else the QiD law. Rows rank by
    bits/byte, so models with different tokenizers compare fairly. Every recommendation is logged
    as an MLflow run.
    """

    try:
        budget = parse_memory(memory_text)
    except BudgetError as err:
        raise AdvisorError(str(err)) from None
    chosen = methods
    formats = {f.name: f for f in parse_formats(formats_spec)}
    plan = MemoryPlan(context=context, batch=batch, runtime=runtime)
    say = (lambda message: None) if as_json else _say
    uri = normalized_uri(tracking_uri or default_uri())
    inputs = None if export_dir or not cache_enabled() else load_cached(uri, experiments)
    if inputs is not None:  # the prior is cached beside the snapshot; both must be current
        inputs.prior = cached_prior(uri)
        inputs = inputs if inputs.prior is not None else None
    client = None
    if inputs is None:  # the store itself (a first answer, a changed store, a server, or --export)
        client = open_store(tracking_uri)
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
        echo_json(report)
    else:
        _print(report, budget, plan)
        if export_dir:
            click.echo(f"exported to {export_dir}: NLL {report['export']['nll_onnx']:.4f} nats/token with "
                       f"onnxruntime; registered as {report['export']['registered']}")


def _export_winner(row, report, out, dataset, client, say) -> dict:
    """Hand the winner to the export pipeline, with the prediction it was chosen on."""
    import json as _json
    from pathlib import Path

    from pipelines.export.export_model import (
        ExportConfig,
        ExportError,
        ExportInputError,
        export_quantized,
    )
    from pipelines.sources.corpus import DEFAULT_DATASET


    if row.method == "none":
        raise AdvisorError(f"the winner is {row.model} unquantized: nothing to quantize; "
                           "narrow --formats or the budget, or export another row with `advisor export`")
    if not row.spec:
        raise AdvisorError(f"the catalog gives no source for {row.model}'s weights: use `advisor export`")
    config = ExportConfig(model=row.spec, format=row.format, method=row.method, out=out,
                          dataset=dataset or DEFAULT_DATASET, gguf_file=row.gguf_file, context=row.memory["context"])
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
            "memory_plan": plan.as_dict(),
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
    if row["nll_lower"] is None or row["source"] == "prior":  # the prior's interval is in the ΔNLL column
        return f"{row['nll']:.4f}"
    if row["nll_upper"] == float("inf"):
        return f"{row['nll']:.4f} ± ∞"
    return f"{row['nll']:.4f} ± {(row['nll_upper'] - row['nll_lower']) / 2:.4f}"


def _fmt_delta(row) -> str:
    """ΔNLL with its 90% interval (multiplicative for the prior, so shown as bounds)."""
    if row["method"] == "none":
        return "-"
    if row["lower"] is None:
        return f"{row['delta_nll']:.3f}"
    upper = "∞" if row["upper"] == float("inf") else f"{row['upper']:.3f}"
    return f"{row['delta_nll']:.3f} [{row['lower']:.3f}, {upper}]"


def _skip_summary(notes) -> str:
    """How many candidates were skipped and why, in one line (every reason is in --json notes)."""
    from collections import Counter

    reasons = Counter(n.split(": ", 1)[1] if ": " in n else n for n in notes)
    return "; ".join(f"{count} × {reason}" for reason, count in reasons.most_common())


def _print(report, budget, plan) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Best under {budget.text} ({budget.bytes:,} bytes; {plan.describe()})")
    for column in ("", "model", "format", "method", "peak memory", "context", "% budget", "ΔNLL [90%]", "NLL nats/tok", "bits/byte",
                   "source", "fp loss"):
        table.add_column(column, justify="right" if column in ("peak memory", "context", "% budget", "bits/byte") else "left")
    for i, row in enumerate(report["rows"]):
        mark = "★" if i == 0 else ("◆" if row["pareto"] else "")
        table.add_row(mark, escape(row["model"]), row["format"], row["method"], row["size"],
                      f"{row['memory']['context']:,}",
                      f"{row['budget_fraction']:.0%}", _fmt_delta(row), _fmt_interval(row),
                      f"{row['bpb']:.4f}" + ("*" if row["bytes_per_token_assumed"] else ""), row["source"],
                      row["fp_source"])
    console = Console(width=160)
    console.print(table)
    w = report["winner"]
    console.print(escape(f"★ {w['model']} · {w['format']} · {w['method']}: {w['size']} ({w['bytes']:,.0f} bytes at "
                         f"{w['memory']['context']:,} tokens on {w['memory']['runtime']}), "
                         f"NLL {_fmt_interval(w)} nats/token (ΔNLL {_fmt_delta(w)}), {w['bpb']:.4f} bits/byte "
                         f"[{w['source']}: {w['cite']}]" + (f" ({'; '.join(w['notes'])})" if w["notes"] else "")),
                  highlight=False)
    console.print(f"◆ on the loss-vs-memory Pareto frontier; * bits/byte assume 4 bytes/token; "
                  f"{report['fitting']} of {report['candidates']} candidates fit; " + (
                      f"logged as run {report['run_id']}" if report["run_id"] else
                      f"answered from the answer cache; logging as recommendation {report['recommendation_id']}"),
                  highlight=False)
    if report["notes"]:
        console.print(escape(f"skipped {len(report['notes'])} (see --json notes): {_skip_summary(report['notes'])}"),
                      highlight=False)
    console.print("answered with " + ", ".join(
        f"measured data {v}" if k == "measured-data" else f"published data {v}" if k == "published-data"
        else f"{k}/{v}" for k, v in report["versions"].items()), highlight=False)


def _plot(rows, winner, budget, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for source, marker in (("measured", "o"), ("published", "D"), ("predictor", "s"), ("prior", "^"),
                           ("law", "."), ("catalog", "x")):
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
