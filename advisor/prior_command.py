"""`advisor prior fit` and `advisor prior evaluate`: the prior on published results and measured runs.

This layer joins the two sides the registry may not: the format grammar and quantizers of
`pipelines` (each format's SQNR on a fixed synthetic heavy-tailed weight matrix, computed here
with the same RTN code the sweeps use) and the registry's data, fitting and versions. The SQNR
table is stored with every prior version, so `advisor recommend` answers without torch; a format
outside the table is interpolated along its block size, or gets no prior (and says so).
"""

from __future__ import annotations

import functools
import json
import math

import click

from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from advisor.options import open_store, tracking_uri_option
from pipelines.quantize.formats import PRESETS, parse_format
from registry.catalog.entries import CatalogError, CatalogNotFoundError, load_seed
from registry.catalog.registered import load_catalog, refresh_catalog
from registry.prior.published import DEFAULT_FILE as PUBLISHED_FILE
from registry.prior.published import load_published
from registry.prior.rows import (
    MEASURED_EXPERIMENTS,
    catalog_facts,
    frame_of,
    listed_facts,
    measured_rows,
    published_rows,
)
from registry.prior.spec import published_index
from store.errors import InputError

# the synthetic "LLM-like" weight matrix: Student-t rows (heavy tails), per-output-channel and
# per-input-column scale spread, and a few outliers; seeded, so every fit sees the same noise
SYNTHETIC = {"rows": 256, "cols": 2048, "student_t_df": 4, "row_scale_sigma": 0.3, "col_scale_sigma": 0.3,
             "outlier_fraction": 0.0005, "outlier_scale": 4.0, "std": 0.02, "seed": 0, "int_scales": "absmax"}
MX_ELEMENTS = ("e1m1", "e2m1", "e2m2", "e3m2", "e2m3", "e4m3", "e5m2")


def describe(text: str) -> dict:
    """A format string's facts (the published loader's validator)."""
    return parse_format(text).as_dict()


def grid_formats() -> list[str]:
    """Formats whose SQNR every prior stores: the presets and a grid to interpolate block sizes on."""
    names = [f for preset in PRESETS.values() for f in preset]
    names += [f"int{p}_{g}" for p in range(2, 9) for g in ("tens", "chan", "g16", "g32", "g64", "g128", "g256", "g1024")]
    names += [f"mxint{p}_{k}" for p in range(2, 9) for k in (8, 16, 32, 64, 128, 256)]
    for element in MX_ELEMENTS:
        e, m = int(element[1]), int(element[3])
        names += [f"mxfp{1 + e + m}_{element}_{k}" for k in (16, 32, 64, 128)]
    return list(dict.fromkeys(names))


def synthetic_weights(spec: dict = SYNTHETIC):
    """The fixed [rows, cols] float32 matrix: t(df) entries × lognormal row and column scales, with
    `outlier_fraction` of the entries multiplied by `outlier_scale`."""
    import torch

    g = torch.Generator().manual_seed(spec["seed"])
    shape = (spec["rows"], spec["cols"])
    df = spec["student_t_df"]
    chi2 = sum(torch.randn(shape, generator=g, dtype=torch.float64) ** 2 for _ in range(df))
    w = torch.randn(shape, generator=g, dtype=torch.float64) / torch.sqrt(chi2 / df)
    w *= torch.exp(spec["row_scale_sigma"] * torch.randn(shape[0], 1, generator=g, dtype=torch.float64))
    w *= torch.exp(spec["col_scale_sigma"] * torch.randn(1, shape[1], generator=g, dtype=torch.float64))
    picked = torch.randperm(w.numel(), generator=g)[: int(w.numel() * spec["outlier_fraction"])]
    w.view(-1)[picked] *= spec["outlier_scale"]
    return (spec["std"] * w).float()


def sqnr_table(formats, spec: dict = SYNTHETIC) -> list[dict]:
    """Each format's facts and SQNR (dB) after RTN of the synthetic matrix (classic ints: absmax scales)."""
    return [dict(row) for row in _sqnr_rows(tuple(formats), json.dumps(spec, sort_keys=True))]


@functools.lru_cache(maxsize=4)
def _sqnr_rows(formats: tuple, spec_json: str) -> tuple:
    """The table, computed once per process for the same formats and matrix (~4 s for the grid)."""
    from pipelines.quantize.classic_int import quantize_int
    from pipelines.quantize.mx import quantize_mx

    spec = json.loads(spec_json)
    w = synthetic_weights(spec)
    w64, table = w.double(), []
    signal = float((w64 ** 2).sum())
    for name in formats:
        fmt = parse_format(name)
        q = quantize_mx(w, fmt) if fmt.is_mx else quantize_int(w, fmt, objective=spec["int_scales"])
        noise = float(((q.double() - w64) ** 2).sum())
        table.append({**fmt.as_dict(), "sqnr_db": 10 * math.log10(signal / noise) if noise else 99.0})
    return tuple(table)


def prior_frame(client, catalog, experiments, published_path=PUBLISHED_FILE):
    """(frame of training rows, extras for the version, skipped counts, published data)."""
    from collections import Counter

    published = load_published(describe, {e.name for e in catalog.entries}, published_path)
    facts = catalog_facts(catalog.entries) | listed_facts(published.models)
    formats = grid_formats() + sorted({r["format"] for r in published.rows if r["format"]})
    table = sqnr_table(list(dict.fromkeys(formats)))

    def match(name):
        try:
            entry = catalog.get(name)
        except CatalogError:
            return None
        return entry.name, facts[entry.name]

    rows, skipped = published_rows(published, facts, table)
    measured, more, versions = measured_rows(client, experiments, match, table)
    skipped = Counter(skipped) + more
    frame = frame_of(rows + measured)
    outside = frame["sqnr_db"].isna()
    if outside.any():
        skipped["format outside the SQNR table"] += int(outside.sum())
        frame = frame[~outside].reset_index(drop=True)
    exact, fp = published_index(published.rows, {e.name for e in catalog.entries})
    extras = {"sqnr_table": table, "synthetic": SYNTHETIC, "published": exact, "fp_published": fp,
              "data_versions": {"published": published.data_version, "measured": versions},
              "skipped": dict(skipped)}
    return frame, extras, published


def fit_and_register(client, catalog, experiments, kinds, say, published_path=PUBLISHED_FILE, only_if_new=False):
    """Fit each recipe in `kinds`, evaluate it family by family, register and promote; says each decision."""
    from mlflow.exceptions import MlflowException

    from registry.prior.evaluation import evaluation_key
    from registry.prior.model import RECIPES
    from registry.prior.registered import CHAMPION, PRIOR, build_fit, register_fit

    frame, extras, published = prior_frame(client, catalog, experiments, published_path)
    if frame.empty:
        raise AdvisorError("no rows to fit the prior on: the published data and the measured runs gave none")
    if only_if_new:
        try:
            champion = client.get_model_version_by_alias(PRIOR, CHAMPION)
        except MlflowException:  # no champion yet
            champion = None
        if champion is not None and champion.tags.get("evaluation_key") == evaluation_key(
                frame, frame["delta_nll"].to_numpy(float)):
            say(f"{PRIOR}/{champion.version} (champion) was fitted on these rows: not refitted")
            return []
    counts = frame.groupby("origin").size().to_dict()
    say(f"prior rows: {counts.get('published', 0)} published (data {published.data_version}), "
        f"{counts.get('measured', 0)} measured; skipped: " +
        (", ".join(f"{n} {why}" for why, n in sorted(extras["skipped"].items())) or "none"))
    out = []
    for kind in kinds:
        fit = build_fit(RECIPES[kind], frame, extras)
        version, decision = register_fit(fit, published.path, client)
        s = fit.params["summary"]
        say(f"{PRIOR}/{version.version} ({kind}): held-out median fold error {s['median_fold_error']:.2f}×, "
            f"90% interval coverage {s['coverage']:.0%}: {decision}")
        out.append((version, decision, fit))
    return out


@click.group()
def prior():
    """The prior: ΔNLL of any (model, format, method) from published results and measured runs."""


@prior.command("fit")
@click.option("--kind", type=click.Choice(["ridge", "forest", "both"]), default="both", show_default=True,
              help="Recipe(s) to fit: the log-linear model on physical terms, a random forest, or both.")
@click.option("--published", "published_path", type=click.Path(dir_okay=False), default=str(PUBLISHED_FILE),
              show_default="the embedded file", help="Published results (YAML, registry/data schema).")
@click.option("--experiment", "experiments", multiple=True, default=MEASURED_EXPERIMENTS, show_default=True,
              help="Experiments whose measured runs join the published rows (repeatable; missing ones are skipped; "
                   "a variant measured in several counts once, from the first listed).")
@tracking_uri_option
@friendly_errors
def fit(kind, published_path, experiments, tracking_uri):
    """Fit the prior, judge it with each model family held out, register it as `ptq-prior`.

    The champion alias moves only to a version with a lower held-out mean |ln(pred/obs)| over the
    3- and 4-bit rows, where budgets are decided.
    """
    kinds = ("ridge", "forest") if kind == "both" else (kind,)
    try:
        load_published(describe, {e.name for e in load_seed()}, published_path)  # checked before any write
        client = open_store(tracking_uri)
        try:
            catalog = load_catalog("current", client)
        except CatalogNotFoundError:
            catalog = load_catalog(str(refresh_catalog(client).version), client)
        fit_and_register(client, catalog, experiments, kinds, click.echo, published_path)
    except InputError as err:
        raise AdvisorError(str(err)) from None


def _cell(value, pattern="{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def _echo_family_bias(biases, bits) -> None:
    """Per family, held out: predicted / observed (median) per (bits, method) — where the prior errs."""
    columns = [(b, m) for b in bits for m in ("rtn", "gptq")]
    cells = {(r["family"], r["bits"], r["method"]): r for r in biases}
    families = sorted({r["family"] for r in biases})
    if not families:
        return
    click.echo("held out, predicted / observed per family (median; > 1 over-predicts):")
    click.echo(f"{'family':<16}" + "".join(f"{f'{b}-bit {m}':>13}" for b, m in columns))
    for family in families:
        line = ""
        for b, m in columns:
            c = cells.get((family, b, m))
            text = f"{c['bias']:.2f}× ({c['n']})" if c else "-"
            line += f"{text:>13}"
        click.echo(f"{family:<16}{line}")


@prior.command("evaluate")
@click.option("--version", "ref", default="champion", show_default=True, help="Prior alias or version.")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True, help="Every row held out by family, and the metrics, as JSON.")
@friendly_errors
def evaluate(ref, tracking_uri, as_json):
    """Every row of the prior's data predicted with its model family held out, against the
    published or measured ΔNLL; metrics per (bits, method) for the prior and both QiD baselines.
    """
    from registry.prior.evaluation import JUDGED_BITS, family_bias
    from registry.prior.registered import load_evaluation, load_prior

    client = open_store(tracking_uri)
    loaded = load_prior(ref, client)
    document = load_evaluation(loaded, client)
    biases = family_bias(document["rows"])  # from the rows, so versions logged before it show it too
    if as_json:
        echo_json({"prior": loaded.cite, "recipe": document["recipe"],
                  "data_versions": loaded.params["data_versions"], "rows": document["rows"],
                  "metrics": {**document["metrics"], "by_family": biases}}, indent=1)
        return
    m = document["metrics"]
    s = m["summary"]
    click.echo(f"{loaded.cite} ({document['recipe']['kind']}) on {len(document['rows'])} rows, each with its "
               f"family held out: median fold error {s['median_fold_error']:.2f}×, "
               f"90% interval coverage {s['coverage']:.0%}")
    data = loaded.params["data_versions"]
    click.echo(f"fitted on published data {data['published']}, measured data {', '.join(data['measured']) or 'none'}")
    click.echo(f"{'bits':>4} {'method':<6} {'predictor':<14} {'rows':>5} {'fold err':>8} {'MAE nats':>9} "
               f"{'Spearman':>8} {'coverage':>8}")
    for r in m["by_bits_method"]:
        click.echo(f"{r['bits']:>4} {r['method']:<6} {r['predictor']:<14} {r['n']:>5} "
                   f"{_cell(r['fold_error'], '{:.2f}×'):>8} {_cell(r['mae'], '{:.3f}'):>9} "
                   f"{_cell(r['spearman']):>8} {_cell(r['coverage'], '{:.0%}'):>8}")
    _echo_family_bias(biases, JUDGED_BITS)
    pairs = m["rtn_vs_gptq"]
    if pairs["pairs"]:
        click.echo(f"RTN predicted ≥ GPTQ on {pairs['rtn_ge_gptq']:.0%} of the {pairs['pairs']} (model, format, "
                   "corpus, source) published with both")
