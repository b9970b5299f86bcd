"""`advisor fit-predictor` and `advisor registry …`: fitting and reviewing the registered models."""

from __future__ import annotations

import click

from advisor.errors import AdvisorError, friendly_errors
from advisor.json_output import echo_json
from advisor.options import open_store, tracking_uri_option
from registry.api import list_versions
from registry.conformal import widths_text
from registry.laws.registered import QID_LAW, register_qid_fit, seed_published_laws
from registry.lineage import version_lineage
from registry.predictor.feature_table import TableQuery, build_feature_table, qid_table
from registry.predictor.registered import register_evaluation
from registry.versions import parse_reference


def sweep_data_options(command):
    """--experiment / --family / --seed / --tracking-uri: which sweep runs a fit learns from."""
    for option in reversed([
        click.option("--experiment", "experiments", multiple=True, default=("ptq-sweep",), show_default=True,
                     help="Sweep experiment(s) whose runs are the training data (repeatable)."),
        click.option("--family", "families", multiple=True, help="Only these model families (repeatable)."),
        click.option("--seed", type=int, default=0, show_default=True),
        tracking_uri_option,
    ]):
        command = option(command)
    return command


@click.command("fit-predictor")
@sweep_data_options
@click.option("--dataset-digest", default=None, help="Only runs evaluated on this dataset.")
@click.option("--kind", type=click.Choice(["rf", "xgb", "both"]), default="both", show_default=True,
              help="Random forest (Xu et al.: 120 trees, depth 8), XGBoost, or one version of each.")
@click.option("--base", type=click.Choice(["nll_fp", "rtn_fraction", "nll_rtn", "none"]), default="nll_fp",
              show_default=True,
              help="Learn NLL_gptq minus this column: nll_fp is Xu et al.'s relative target (on the real "
                   "models the lowest held-out MAE over all formats and the best picks under a budget); "
                   "rtn_fraction learns (NLL_gptq − NLL_fp) / (NLL_rtn − NLL_fp), the share of RTN's loss "
                   "increase GPTQ leaves (lower MAE at ≥ 3 bits, worse picks); none: their absolute NLL.")
@click.option("--share-from-bits", type=click.FloatRange(2, 16), default=None,
              help="Answer formats of this many bits or more not by the trees but by NLL_fp + s × (NLL_rtn − "
                   "NLL_fp), s the training rows' median share of RTN's loss increase that GPTQ leaves in the "
                   "format's band of bits (3, ≥ 4). `advisor seed` fits it with 3: on held-out real-model "
                   "families it errs about half as much there as the forest.")
@click.option("--holdout", "holdouts", multiple=True,
              help="Model (parent run name) kept out of the fit and reported as a test set (repeatable).")
@click.option("--alpha", type=click.FloatRange(0.01, 0.5), default=0.1, show_default=True,
              help="Interval miscoverage: 0.1 gives 90 % conformal intervals.")
@click.option("--json", "as_json", is_flag=True, help="Print each fit's version, decision and metrics as JSON.")
@friendly_errors
def fit_predictor(experiments, families, dataset_digest, kind, base, share_from_bits, holdouts, alpha, seed,
                  tracking_uri, as_json):
    """Fit the loss predictor on sweep runs and register it as ptq-loss-predictor.

    Every fit is judged leave-one-family-out; the champion alias moves only when the new version
    beats it on the same held-out evaluation (MAE over all rows; the MAE at 3 bits or more is shown
    beside it), otherwise the new version becomes the challenger. Its 90 % intervals are conformal
    per band of bits (≤ 2, 3, ≥ 4), each from its own band's held-out errors.
    """
    from registry.predictor.evaluation import DEPLOYABLE_BITS, evaluate_recipe

    client = open_store(tracking_uri)
    query = TableQuery(tuple(experiments), tuple(families), dataset_digest)
    table = build_feature_table(query, client)
    results = []
    for recipe_kind in (["rf", "xgb"] if kind == "both" else [kind]):
        recipe = {"kind": recipe_kind, "base": base, "seed": seed, "share_from_bits": share_from_bits}
        if recipe_kind == "xgb":
            recipe |= {"n_estimators": 300, "max_depth": 4, "learning_rate": 0.05}
        evaluation = evaluate_recipe(recipe, table, holdouts, alpha)
        version, decision = register_evaluation(evaluation, table, query, holdouts, client=client)
        results.append({"name": version.name, "version": str(version.version), "kind": recipe_kind, "base": base,
                        "share_from_bits": share_from_bits, "share": evaluation.predictor.share_,
                        "decision": decision, "rows": evaluation.train_rows, "metrics": evaluation.metrics,
                        "halfwidths": evaluation.halfwidths})  # inf (no interval) prints as null
    if as_json:
        echo_json(results)
        return
    for r in results:
        m = r["metrics"]
        deployable = (f" ({m['lofo_mae_deployable']:.4f} at ≥ {DEPLOYABLE_BITS} bits)"
                      if m.get("lofo_mae_deployable") is not None else "")
        share = (", share of RTN's increase " + ", ".join(f"{v:.3f} at {b}" for b, v in r["share"].items())
                 if r["share"] else "")
        click.echo(f"{r['name']}/{r['version']} ({r['kind']}, base {r['base']}{share}, {r['rows']} rows): LOFO MAE {m['lofo_mae']:.4f}"
                   f"{deployable} nats/token, Spearman {m['lofo_spearman']:.3f}, {1 - alpha:.0%} intervals "
                   f"{widths_text(r['halfwidths'])} (coverage {m['lofo_coverage']:.0%})")
        click.echo(f"  {r['decision']}")


@click.command("fit-qid")
@sweep_data_options
@click.option("--bootstrap", type=click.IntRange(10, 10_000), default=200, show_default=True,
              help="Bootstrap resamples for the 95 % confidence intervals.")
@click.option("--max-bits", type=click.IntRange(2, 16), default=None,
              help="Fit only rows with P ≤ this (Ouyang et al. fit 2–4 bits; 8-bit ΔqLoss is mostly noise). "
                   "Default: every bit width.")
@click.option("--current/--no-current", default=True, show_default=True,
              help="Move the `current` alias (the law recommend uses) to the new version.")
@click.option("--json", "as_json", is_flag=True, help="Print the fitted laws as JSON.")
@friendly_errors
def fit_qid(experiments, families, bootstrap, seed, tracking_uri, max_bits, current, as_json):
    """Fit the QiD law ΔqLoss = k·D^β/(N^α·P^γ) per method and format family; register qid-law.

    N is non-embedding parameters, D training tokens (the models file's train_tokens), P bits.
    Version 1 (the published Pythia/GPTQ fit) is seeded first if the registry is empty.
    """
    import warnings

    from registry.laws.fitting import fit_qid_from_table

    client = open_store(tracking_uri)
    rows = qid_table(build_feature_table(TableQuery(tuple(experiments), tuple(families)), client))
    if rows.empty:
        raise AdvisorError("no swept model states its training tokens: give train_tokens in the "
                           "sweep's --models-file, then sweep again")
    if max_bits is not None:
        rows = rows[rows["P"] <= max_bits]
        if rows.empty:
            raise AdvisorError(f"no swept variant has P ≤ {max_bits} bits: raise --max-bits")
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        fits = fit_qid_from_table(rows, n_bootstrap=bootstrap, seed=seed)
    seed_published_laws(client)
    runs = sorted(set(rows["run_id"]) | set(rows["parent_run_id"]))
    version = register_qid_fit(fits, runs, f"QiD law fitted on {len(rows)} variants of "
                               f"{rows['model'].nunique()} models ({', '.join(experiments)}"
                               f"{f'; P ≤ {max_bits}' if max_bits else ''}"
                               f"{'; families ' + ', '.join(families) if families else ''})",
                               set_current=current, client=client)
    if as_json:
        echo_json({"name": QID_LAW, "version": str(version.version), "fits": fits,
                  "skipped": [str(w.message) for w in skipped]})
        return
    alias = " (alias current)" if current else ""
    click.echo(f"{QID_LAW}/{version.version}{alias}, from {len(rows)} variants:")
    for key, law in fits.items():
        ci = law["intervals"]
        click.echo(f"  {key}: k {law['k']:.4g}, α {law['alpha']:.3f} [{ci['alpha'][0]:.3f}, {ci['alpha'][1]:.3f}], "
                   f"β {law['beta']:.3f} [{ci['beta'][0]:.3f}, {ci['beta'][1]:.3f}], "
                   f"γ {law['gamma']:.3f} [{ci['gamma'][0]:.3f}, {ci['gamma'][1]:.3f}] ({law['n_rows']} rows)")
    for w in skipped:
        click.echo(f"  skipped: {w.message}")


@click.group()
def registry():
    """List registered versions and trace where they came from."""


@registry.command("versions")
@click.argument("name", default="ptq-loss-predictor")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def versions(name, tracking_uri, as_json):
    """Versions of registered model NAME, newest first, with aliases and headline tags."""

    rows = list_versions(name, open_store(tracking_uri))
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        aliases = f" [{', '.join(r['aliases'])}]" if r["aliases"] else ""
        click.echo(f"{name}/{r['version']}{aliases}: {r['description'] or ''}")


@registry.command("lineage")
@click.argument("reference")
@tracking_uri_option
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def lineage(reference, tracking_uri, as_json):
    """Where REFERENCE (name/3, name@champion, models:/…) came from: its fit run and data."""

    client = open_store(tracking_uri)
    name, ref = parse_reference(reference)
    info = version_lineage(client, name, ref)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['name']}/{info['version']} (aliases: {', '.join(info['aliases']) or 'none'})")
    click.echo(f"  fitted in run {info['run_id']} ({info['run_name']}), experiment {info['experiment']}")
    click.echo(f"  trained on {len(info['training_runs'])} runs; source: {info['source'] or 'these runs'}")
