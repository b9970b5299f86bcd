"""The candidate rows of a recommendation: what the store holds (catalog, measured runs, predictor,
prior, laws), read once, and one row per (model, format, method) from it.

The prior (`ptq-prior@champion`) travels beside the answer cache's snapshot in a file of its own,
stamped like it (`answer_cache.store_stamp`): a repeat on an unchanged store reads neither MLflow
nor the store for it.
"""

from __future__ import annotations

import json
import os
import tempfile

from advisor.answer_cache import (
    StoreInputs,
    answers_dir,
    normalized_uri,
    snapshot_file,
    store_stamp,
)
from advisor.errors import AdvisorError
from advisor.recommend import catalog_rows, measured_rows
from registry.api import PriorNotFoundError, load_champion, load_current_law, load_prior
from registry.catalog.entries import CatalogError
from registry.catalog.registered import load_catalog
from registry.laws.registered import LawNotFoundError
from registry.predictor.feature_table import (
    FeatureTableError,
    TableQuery,
    build_feature_table,
)
from registry.predictor.registered import PredictorNotFoundError
from registry.prior.spec import LoadedPrior


def _measured_table(client, experiments):
    """(the sweep feature table or None, a note when there is none)."""

    try:
        return build_feature_table(TableQuery(tuple(experiments)), client), None
    except FeatureTableError as err:
        return None, f"note: no measured candidates ({err})"


def _prior_file(uri: str):
    return answers_dir() / f"prior-{snapshot_file(uri, ()).stem}.json"


def _save_prior(uri: str, prior, stamp) -> None:
    """Keep the prior (or why there is none) as read at `stamp`, atomically."""
    body = prior if isinstance(prior, str) else {"name": prior.name, "version": prior.version,
                                                 "params": prior.params, "run_id": prior.run_id}
    path = _prior_file(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(json.dumps({"stamp": stamp, "prior": body}))
    os.replace(f.name, path)


def cached_prior(uri: str):
    """The prior kept for an unchanged store (LoadedPrior or the reason there is none); None if stale."""
    stamp = store_stamp(uri)
    path = _prior_file(uri)
    if stamp is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("stamp") != stamp:
        return None
    body = data["prior"]
    return body if isinstance(body, str) else LoadedPrior(**body)


def _read_prior(client):
    """`ptq-prior@champion`, or the reason there is none (kept beside the answer cache when it can be)."""
    uri = normalized_uri(client.tracking_uri)
    before = store_stamp(uri)
    try:
        prior = load_prior("champion", client)
    except PriorNotFoundError as err:
        prior = str(err)
    if before is not None and store_stamp(uri) == before:  # a sqlite store read in one state, like `refresh`
        _save_prior(uri, prior, before)
    return prior


def gather_inputs(client, experiments, catalog=None) -> StoreInputs:
    """Everything a recommendation reads from the store: catalog, measured table, predictor, prior, laws.

    `catalog`: the current catalog if the caller has it (else it is loaded). The prior rides on
    the inputs as `.prior` (a LoadedPrior or the reason there is none).
    """

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
    inputs = StoreInputs(catalog or load_catalog("current", client), table, note, predictor, predictor_error,
                         laws["qid-law"], laws["loss16-law"])
    inputs.prior = _read_prior(client)
    return inputs


def _canonical(catalog, name: str) -> str:
    """A model's catalog name when it is a catalog model under another spelling (hub id, alias, case)."""
    try:
        return catalog.get(name).name
    except CatalogError:
        return name


def rows_from_inputs(inputs: StoreInputs, models: str, formats: dict, methods, plan, say):
    """Every candidate row for `models` ('all', 'measured' or names) × formats × methods.

    Returns (rows, {registered model: version used}, [notes on skipped candidates]).
    """

    chosen, table, catalog = methods, inputs.table, inputs.catalog
    prior = getattr(inputs, "prior", None)
    if inputs.table_note:
        say(inputs.table_note)
    if table is not None:  # one model, one name: a swept model answers under its catalog name
        table = table.assign(model=[_canonical(catalog, m) for m in table["model"]])
    measured_names = set() if table is None else set(table["model"])
    wanted = None if models in ("all", "measured") else {_canonical(catalog, m.strip())
                                                         for m in models.split(",") if m.strip()}
    known = measured_names | {e.name for e in catalog.entries}
    if wanted and wanted - known:
        import difflib

        bad = min(wanted - known)
        close = difflib.get_close_matches(bad, sorted(known), n=3)
        raise AdvisorError(f"unknown model {bad!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                       "; see `advisor models`"))
    if models == "measured" and not measured_names:
        raise AdvisorError("--models measured, but no sweep runs were found: run `advisor sweep` first")
    rows, versions, notes = [], {"ptq-candidate-catalog": catalog.version}, []
    if table is not None:
        table = table[table["model"].isin(wanted)] if wanted else table
        predictor = None
        if "gptq" in chosen and not table.empty and inputs.predictor is None:
            unmeasured = int(table[table["format"].isin(formats)]["nll_gptq"].isna().sum())
            # a predictor needs two measured families; until then, what was measured (counted per note)
            notes += ["GPTQ of a measured model, not measured, and no loss predictor to predict it "
                      "(`advisor fit-predictor` once two families are measured)"] * unmeasured
        elif "gptq" in chosen and not table.empty:
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
        if isinstance(prior, LoadedPrior):
            versions[prior.name] = prior.version
            versions["published-data"] = prior.params["data_versions"]["published"]
        elif prior is not None:
            notes.append(f"no prior ({prior}): catalog models answer through the QiD law")
        entries = [e for e in catalog.entries if not wanted or e.name in wanted]
        more, skipped = catalog_rows(entries, formats, chosen, plan, qid, loss16,
                                     f"ptq-candidate-catalog/{catalog.version}",
                                     prior if isinstance(prior, LoadedPrior) else None)
        # a swept model's measured rows stand; the catalog answers only what its sweep did not measure
        covered = {(r.model, r.format, r.method) for r in rows}
        rows += [r for r in more if (r.model, r.format, r.method) not in covered]
        notes += skipped
    return rows, versions, notes


def collect_rows(client, models: str, formats: dict, methods, plan, experiments, say, catalog=None):
    """Every candidate row, read from the store (see `rows_from_inputs`)."""
    return rows_from_inputs(gather_inputs(client, experiments, catalog), models, formats, methods, plan, say)
