"""The candidate rows of a recommendation: what the store holds (catalog, measured runs, predictor,
laws), read once, and one row per (model, format, method) from it."""

from __future__ import annotations

from advisor.answer_cache import StoreInputs
from advisor.errors import AdvisorError
from advisor.recommend import catalog_rows, measured_rows
from registry.api import load_champion, load_current_law
from registry.catalog.registered import load_catalog
from registry.laws.registered import LawNotFoundError
from registry.predictor.feature_table import (
    FeatureTableError,
    TableQuery,
    build_feature_table,
)
from registry.predictor.registered import PredictorNotFoundError


def _measured_table(client, experiments):
    """(the sweep feature table or None, a note when there is none)."""

    try:
        return build_feature_table(TableQuery(tuple(experiments)), client), None
    except FeatureTableError as err:
        return None, f"note: no measured candidates ({err})"



def gather_inputs(client, experiments, catalog=None) -> StoreInputs:
    """Everything a recommendation reads from the store: catalog, measured table, predictor, laws.

    `catalog`: the current catalog if the caller has it (else it is loaded).
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
    return StoreInputs(catalog or load_catalog("current", client), table, note, predictor, predictor_error,
                       laws["qid-law"], laws["loss16-law"])



def rows_from_inputs(inputs: StoreInputs, models: str, formats: dict, methods, plan, say):
    """Every candidate row for `models` ('all', 'measured' or names) × formats × methods.

    Returns (rows, {registered model: version used}, [notes on skipped candidates]).
    """

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
