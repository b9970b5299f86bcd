"""`advisor models`, `advisor pareto`, `advisor explain`: browsing what the advisor knows."""

from __future__ import annotations

import json

import click

from advisor.candidates import collect_rows
from advisor.errors import AdvisorError, friendly_errors
from advisor.memory import MemoryPlan
from advisor.options import methods_option, open_store, tracking_uri_option
from advisor.recommend import mark_pareto
from advisor.recommend_command import DEFAULT_FORMATS
from advisor.seed_command import ensure_seeded
from pipelines.quantize.formats import parse_formats
from registry.predictor.feature_table import FEATURES, TableQuery, build_feature_table
from registry.predictor.registered import load_predictor


def _count(n) -> str:
    if n is None or n != n:
        return "?"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


@click.command()
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="The catalog entries as JSON.")
@friendly_errors
def models(tracking_uri, as_json):
    """The candidate catalog: parameters, training tokens, context, measured fp loss."""
    catalog = ensure_seeded(open_store(tracking_uri))
    if as_json:
        click.echo(json.dumps({"catalog": catalog.reference, "models": [e.to_dict() for e in catalog.entries]},
                              indent=2, default=str))
        return
    click.echo(f"{catalog.reference}: {len(catalog.entries)} models "
               "(params / non-embedding / training tokens / context; fp NLL if measured)")
    for e in catalog.entries:
        fp = f", fp NLL {e.measured_fp.nll:.4f} nats/token" if e.measured_fp else ""
        click.echo(f"  {e.name:<24} {e.family:<10} {_count(e.total_params):>6} / {_count(e.non_embedding_params):>6}"
                   f" / {_count(e.train_tokens):>6} tok / ctx {e.context_length or '?'}{fp}")


@click.command()
@click.option("--models", "model_names", default="all", show_default=True,
              help="Comma-separated model names, 'measured' or 'all'.")
@click.option("--formats", "formats_spec", default=DEFAULT_FORMATS, show_default=True)
@methods_option
@click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True)
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def pareto(model_names, formats_spec, methods, experiments, tracking_uri, as_json):
    """The loss-vs-weight-bytes frontier: no other candidate is both smaller and better."""

    chosen = methods
    formats = {f.name: f for f in parse_formats(formats_spec)}
    client = open_store(tracking_uri)
    catalog = ensure_seeded(client, experiments)
    say = (lambda message: None) if as_json else (lambda message: click.echo(message, err=True))
    rows, versions, _ = collect_rows(client, model_names, formats, chosen, MemoryPlan(overhead=0.0),
                                     experiments, say, catalog)
    mark_pareto(rows)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.memory["total"])
    if as_json:
        click.echo(json.dumps({"versions": versions, "frontier": [
            {"model": r.model, "format": r.format, "method": r.method, "bytes": r.memory["total"],
             "nll": r.nll, "bpb": r.bpb, "source": r.source} for r in front]}, indent=2))
        return
    click.echo(f"{len(front)} of {len(rows)} candidates on the frontier (weight bytes, predicted bits/byte):")
    for r in front:
        click.echo(f"  {r.memory['total'] / 1e9:9.4f} GB  {r.bpb:.4f}  {r.model} · {r.format} · {r.method}  [{r.source}]")


@click.command()
@click.argument("model")
@click.argument("format_name", metavar="FORMAT")
@click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True)
@click.option("--version", "ref", default="champion", show_default=True, help="Predictor alias or version.")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def explain(model, format_name, experiments, ref, tracking_uri, as_json):
    """Why the predictor says what it says for MODEL in FORMAT (a swept model).

    Per-feature contributions along the trees' decision paths (Saabas), which add up exactly to
    the prediction, and the predictor's global importances (Xu et al. App. D).
    """
    from registry.predictor.spec import spec_scale
    from registry.predictor.tree_json import TreeEnsemble

    client = open_store(tracking_uri)
    table = build_feature_table(TableQuery(tuple(experiments)), client)
    rows = table[(table["model"] == model) & (table["format"] == format_name)]
    if rows.empty:
        pairs = sorted(set(zip(table["model"], table["format"])))
        raise AdvisorError(f"no swept variant {model} · {format_name}; swept: "
                           + ", ".join(f"{m} · {f}" for m, f in pairs[:12]) + (" …" if len(pairs) > 12 else ""))
    row = rows.iloc[0]
    predictor = load_predictor(ref, client)
    spec = predictor.spec
    bias, parts = TreeEnsemble(spec["ensemble"]).contributions([row[f] for f in FEATURES])
    base = float(row[spec["base_column"]]) if spec["base_column"] else 0.0
    # an rtn_fraction predictor's trees give a fraction of RTN's loss increase: scaled by that
    # increase, bias and contributions are in nats and still add up to the prediction
    scale = float(spec_scale(spec, rows.iloc[[0]])[0])
    bias, parts = bias * scale, parts * scale
    importances = client.download_artifacts(predictor.run_id, "feature_importance.json")
    with open(importances) as f:
        importance = json.load(f)
    report = {"model": model, "format": format_name, "predictor": predictor.uri,
              "base_column": spec["base_column"], "base": base, "scale_column": spec.get("scale_column"),
              "scale": scale, "bias": bias,
              "prediction": base + bias + float(parts.sum()), "halfwidth": spec["halfwidth"],
              "measured_nll_gptq": None if row["nll_gptq"] != row["nll_gptq"] else float(row["nll_gptq"]),
              "contributions": [{"feature": f, "value": float(row[f]), "contribution": float(c),
                                 "importance": importance.get(f)} for f, c in zip(FEATURES, parts)]}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{model} · {format_name} · gptq by {predictor.uri}: NLL {report['prediction']:.4f} "
               f"± {spec['halfwidth']:.4f} nats/token" + (f" (measured {report['measured_nll_gptq']:.4f})"
                                                         if report["measured_nll_gptq"] is not None else ""))
    start = f"{spec['base_column']} {base:.4f} + " if spec["base_column"] else ""
    scaled = (f" (trees' fraction × {spec['scale_column']} − {spec['base_column']} {scale:.4f})"
              if spec.get("scale_column") else "")
    click.echo(f"  = {start}mean of the training targets {bias:+.4f} + contributions{scaled}:")
    for c in sorted(report["contributions"], key=lambda c: -abs(c["contribution"])):
        click.echo(f"    {c['feature']:<18} = {c['value']:<12.5g} {c['contribution']:+.5f}"
                   f"   (importance {c['importance']:.3f})")
