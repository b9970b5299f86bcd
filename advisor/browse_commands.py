"""`advisor models`, `advisor pareto`, `advisor explain`: browsing what the advisor knows."""

from __future__ import annotations

import json
import math

import click

from advisor.candidates import collect_rows
from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from advisor.memory import MemoryPlan
from advisor.options import memory_plan_options, methods_option, open_store, tracking_uri_option
from advisor.recommend import mark_pareto
from advisor.recommend_command import DEFAULT_FORMATS
from advisor.seed_command import ensure_seeded
from pipelines.quantize.formats import parse_formats
from registry.predictor.feature_table import (
    FEATURES,
    FeatureTableError,
    TableQuery,
    build_feature_table,
)
from registry.predictor.registered import load_predictor
from registry.prior.registered import PriorNotFoundError, load_prior


def _count(n) -> str:
    """A count in three significant digits with a unit: 135M, 1B (not 1e+03M), 12.5T."""
    if n is None or n != n:
        return "?"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        shown = float(f"{n / size:.3g}")  # rounded first, so 999.6M reads as the 1B it rounds to
        if shown >= 1:
            return f"{shown:.3g}{unit}" if shown < 1000 else f"{shown:.0f}{unit}"
    return str(int(n))


@click.command()
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="The catalog entries as JSON.")
@friendly_errors
def models(tracking_uri, as_json):
    """The candidate catalog: parameters, training tokens, context, measured fp loss."""
    catalog = ensure_seeded(open_store(tracking_uri))
    if as_json:
        echo_json({"catalog": catalog.reference, "models": [e.to_dict() for e in catalog.entries]}, default=str)
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
@memory_plan_options
@click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True)
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def pareto(model_names, formats_spec, methods, context, batch, runtime, experiments, tracking_uri, as_json):
    """The loss-vs-memory frontier: no other candidate needs less memory at run time and loses less.

    Memory is the runtime memory model's peak, sized exactly as `advisor recommend` sizes it."""

    chosen = methods
    formats = {f.name: f for f in parse_formats(formats_spec)}
    plan = MemoryPlan(context=context, batch=batch, runtime=runtime)
    client = open_store(tracking_uri)
    catalog = ensure_seeded(client, experiments)
    say = (lambda message: None) if as_json else (lambda message: click.echo(message, err=True))
    rows, versions, _ = collect_rows(client, model_names, formats, chosen, plan,
                                     experiments, say, catalog)
    mark_pareto(rows)
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.memory["total"])
    if as_json:
        echo_json({"versions": versions, "memory_plan": plan.as_dict(), "frontier": [
            {"model": r.model, "format": r.format, "method": r.method, "bytes": r.memory["total"],
             "context": r.memory["context"],
             "nll": r.nll, "bpb": r.bpb, "source": r.source} for r in front]})
        return
    click.echo(f"{len(front)} of {len(rows)} candidates on the frontier ({plan.describe()}; predicted bits/byte):")
    for r in front:
        click.echo(f"  {r.memory['total'] / 1e9:9.4f} GB  {r.bpb:.4f}  {r.model} · {r.format} · {r.method}  [{r.source}]")


@click.command()
@click.argument("model")
@click.argument("format_name", metavar="FORMAT")
@click.option("--method", type=click.Choice(["gptq", "rtn"]), default="gptq", show_default=True,
              help="The method of the variant to explain.")
@click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True)
@click.option("--version", "ref", default="champion", show_default=True,
              help="Predictor (swept GPTQ variants) or prior (any other variant) alias or version.")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def explain(model, format_name, method, experiments, ref, tracking_uri, as_json):
    """Why the advisor predicts what it does for MODEL in FORMAT by --method.

    A swept model's GPTQ variant: per-feature contributions of the loss predictor along its trees'
    decision paths (Saabas), which add up exactly to the prediction, with its global importances
    (Xu et al. App. D); where the predictor answers that many bits by its share of RTN's loss
    increase (fit-predictor --share-from-bits), the share and the increase. Any other catalog variant: the prior's terms (coefficient × standardized
    fact; Saabas for a forest prior), the model and format facts it read, the published result for
    exactly that variant if there is one, and the nearest published or measured rows it learned from.
    """
    client = open_store(tracking_uri)
    try:
        table = build_feature_table(TableQuery(tuple(experiments)), client)
    except FeatureTableError:
        table = None
    rows = None if table is None else table[(table["model"] == model) & (table["format"] == format_name)]
    if method == "gptq" and rows is not None and not rows.empty:
        _explain_predictor(client, model, format_name, rows, ref, as_json)
        return
    try:
        prior = load_prior(ref, client)
    except PriorNotFoundError as err:
        pairs = [] if table is None else sorted(set(zip(table["model"], table["format"])))
        raise AdvisorError(f"no swept variant {model} · {format_name}; swept: "
                           + (", ".join(f"{m} · {f}" for m, f in pairs[:12]) + (" …" if len(pairs) > 12 else "")
                              if pairs else "none") + f"; and {err}") from None
    report = explain_prior(prior, ensure_seeded(client, experiments), model, format_name, method)
    if as_json:
        echo_json(report)
        return
    f = report["facts"]
    head = (f"{report['model']} · {report['format']} · {method} by {prior.cite}: ΔNLL {report['delta_nll']:.4f} "
            f"[{report['lower']:.4f}, {report['upper']:.4f}] nats/token (90%)")
    if report["published"]:
        p = report["published"]
        head += f"; published {p['delta_nll']:.4f} ({p['source']}, {p['corpus']})"
    click.echo(head)
    tokens = "unknown (imputed)" if f["train_tokens"] is None else _count(f["train_tokens"])
    click.echo(f"  facts: N {_count(f['non_embedding_params'])} non-embedding, D {tokens} tokens, "
               f"{f['architecture']}; {f['format_family']} {f['granularity']} P={f['precision']}, "
               f"SQNR {f['sqnr_db']:.2f} dB on the synthetic weights")
    click.echo(f"  ln ΔNLL = {report['bias']:+.4f} (intercept) + terms below"
               + (f" {report['saturation']:+.4f} (saturation, GPTQ ≤ RTN)" if report["saturation"] else "")
               + ":")
    for c in sorted(report["contributions"], key=lambda c: -abs(c["contribution"]))[:10]:
        click.echo(f"    {c['feature']:<14} = {c['value']:<10.4g} {c['contribution']:+.4f}")
    click.echo("  nearest rows it learned from:")
    for n in report["nearest"]:
        click.echo(f"    {n['model']} · {n['format']} · {n['method']}: ΔNLL {n['delta_nll']:.4f} "
                   f"({n['origin']}: {n['cite']})")


def explain_prior(prior, catalog, model: str, format_name: str, method: str) -> dict:
    """The prior's answer for one catalog variant, term by term, with the rows that drive it."""
    import math

    import numpy as np
    import pandas as pd

    from pipelines.quantize.formats import parse_format
    from registry.catalog.entries import CatalogError
    from registry.prior.features import REFERENCE_CORPUS, design
    from registry.prior.model import contributions, predict_log

    try:
        entry = catalog.get(model)
    except CatalogError as err:
        raise AdvisorError(str(err)) from None
    fmt = parse_format(format_name)
    sqnr = prior.sqnr_db(fmt.as_dict())
    if math.isnan(sqnr):
        raise AdvisorError(f"{fmt.name} is outside {prior.cite}'s SQNR table: no prior for it")
    tokens = entry.train_tokens
    frame = pd.DataFrame({"non_embedding_params": [float(entry.non_embedding_params)],
                          "train_tokens": [math.nan if tokens is None else float(tokens)], "method": [method],
                          "sqnr_db": [sqnr], "precision": [fmt.precision], "format_family": [fmt.family],
                          "granularity": [fmt.granularity], "corpus": [REFERENCE_CORPUS]})
    answer = prior.predict(frame).iloc[0]
    model_doc = prior.params["model"]
    bias, parts = contributions(model_doc, frame)
    values = [float(v) for v in design(frame, model_doc["log_d_fill"], model_doc["features"])[0]]
    saturation = float(predict_log(model_doc, frame)[0] - bias - parts[0].sum())
    log_n = math.log(entry.non_embedding_params)

    def distance(r):
        return ((r["format"] != fmt.name) + 2 * (r["method"] != method)
                + abs(log_n - math.log(r["non_embedding_params"])) + abs(sqnr - r["sqnr_db"]) / 10)

    nearest = sorted(prior.params["training_rows"], key=distance)[:5]
    return {"model": entry.name, "format": fmt.name, "method": method, "explained_by": prior.cite,
            "facts": {"non_embedding_params": entry.non_embedding_params, "train_tokens": tokens,
                      "architecture": entry.architecture, "family": entry.family, "sqnr_db": sqnr,
                      "precision": fmt.precision, "format_family": fmt.family, "granularity": fmt.granularity},
            "delta_nll": float(answer["delta_nll"]), "lower": float(answer["lower"]), "upper": float(answer["upper"]),
            "published": prior.published(entry.name, fmt.name, method),
            "bias": float(bias), "saturation": saturation if abs(saturation) > 1e-12 else 0.0,
            "contributions": [{"feature": f, "value": v, "contribution": float(c)}
                              for f, v, c in zip(model_doc["features"], values, np.asarray(parts[0]))],
            "nearest": [{k: r[k] for k in ("model", "format", "method", "origin", "cite", "corpus", "delta_nll")}
                        for r in nearest]}


def _headline(model, format_name, uri, prediction, width, measured) -> str:
    return (f"{model} · {format_name} · gptq by {uri}: NLL {prediction:.4f} "
            + (f"± {width:.4f} nats/token" if math.isfinite(width) else "nats/token (no 90% interval at this bit count)")
            + (f" (measured {measured:.4f})" if measured is not None else ""))


def _explain_share(model, format_name, row, predictor, width, measured, as_json) -> None:
    """A row the predictor answers with its band's share of RTN's loss increase: three numbers, no trees."""
    from registry.conformal import precision_bands
    from registry.predictor.spec import share_values

    share = predictor.spec["share"]
    value = float(share_values(predictor.spec, [row["precision"]])[0])
    band = str(precision_bands([row["precision"]], share["bands"])[0])
    fp, rtn = float(row[share["base_column"]]), float(row[share["scale_column"]])
    increase = max(rtn - fp, share["floor"])
    report = {"model": model, "format": format_name, "predictor": predictor.uri, "answered_by": "share",
              "base_column": share["base_column"], "base": fp, "scale_column": share["scale_column"],
              "scale": increase, "share": value, "band": band, "from_bits": share["from_bits"],
              "prediction": fp + value * increase, "halfwidth": width,
              "measured_nll_gptq": measured, "contributions": []}
    if as_json:
        echo_json(report)
        return
    click.echo(_headline(model, format_name, predictor.uri, report["prediction"], width, measured))
    click.echo(f"  = {share['base_column']} {fp:.4f} + share {value:.4f} × RTN's loss increase "
               f"({share['scale_column']} − {share['base_column']}, at least {share['floor']:g}) {increase:.4f}")
    click.echo(f"  at ≥ {share['from_bits']:g} bits the predictor answers with the median share of RTN's loss "
               f"increase that GPTQ left on its training rows of the same band ({band}), not with its trees")


def _explain_predictor(client, model, format_name, rows, ref, as_json) -> None:
    """A swept GPTQ variant explained by the loss predictor (Saabas contributions, or its share)."""
    from registry.predictor.spec import share_rows, spec_scale, spec_widths
    from registry.predictor.tree_json import TreeEnsemble

    row = rows.iloc[0]
    predictor = load_predictor(ref, client)
    spec = predictor.spec
    width = float(spec_widths(spec, [row["precision"]])[0])
    measured = None if row["nll_gptq"] != row["nll_gptq"] else float(row["nll_gptq"])
    if share_rows(spec, rows.iloc[[0]])[0]:
        _explain_share(model, format_name, row, predictor, width, measured, as_json)
        return
    bias, parts = TreeEnsemble(spec["ensemble"]).contributions([row[f] for f in FEATURES])
    base = float(row[spec["base_column"]]) if spec["base_column"] else 0.0
    # an rtn_fraction predictor's trees give a fraction of RTN's loss increase: scaled by that
    # increase, bias and contributions are in nats and still add up to the prediction
    scale = float(spec_scale(spec, rows.iloc[[0]])[0])
    bias, parts = bias * scale, parts * scale
    importances = client.download_artifacts(predictor.run_id, "feature_importance.json")
    with open(importances) as f:
        importance = json.load(f)
    report = {"model": model, "format": format_name, "predictor": predictor.uri, "answered_by": "trees",
              "base_column": spec["base_column"], "base": base, "scale_column": spec.get("scale_column"),
              "scale": scale, "bias": bias,
              "prediction": base + bias + float(parts.sum()), "halfwidth": width,
              "measured_nll_gptq": measured,
              "contributions": [{"feature": f, "value": float(row[f]), "contribution": float(c),
                                 "importance": importance.get(f)} for f, c in zip(FEATURES, parts)]}
    if as_json:
        echo_json(report)
        return
    click.echo(_headline(model, format_name, predictor.uri, report["prediction"], width, measured))
    start = f"{spec['base_column']} {base:.4f} + " if spec["base_column"] else ""
    scaled = (f" (trees' fraction × {spec['scale_column']} − {spec['base_column']} {scale:.4f})"
              if spec.get("scale_column") else "")
    click.echo(f"  = {start}mean of the training targets {bias:+.4f} + contributions{scaled}:")
    for c in sorted(report["contributions"], key=lambda c: -abs(c["contribution"])):
        click.echo(f"    {c['feature']:<18} = {c['value']:<12.5g} {c['contribution']:+.5f}"
                   f"   (importance {c['importance']:.3f})")
