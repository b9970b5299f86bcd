"""The prior's training rows: published results and this project's measured runs, one frame.

Each row is one (model, format, method, corpus) with its ΔNLL in nats/token — ln(ppl_q/ppl_fp)
for a published row, NLL_q − NLL_fp for a measured variant — and the facts the prior reads
(features.FRAME_COLUMNS). Model facts come from the candidate catalog, else from the published
file's `models:` list (parameter counts by the catalog's formula), else from the sweep's parent
run. Rows that cannot be used are counted by reason, never dropped silently.

Measured GPTQ rows count only when GPTQ collected its Hessians block by block (`sequential`):
fp-network Hessians make GPTQ lose to RTN on real models (docs/real-model-study.md).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from registry.catalog.entries import CatalogEntry, CatalogError
from registry.catalog.params import architecture_param_counts
from registry.prior.features import sqnr_lookup

PRIOR_METHODS = ("rtn", "gptq")
# the real models' sweeps; the micro-suite (ptq-zoo: 0.06-4 M parameters trained on ≤ 3.3 M tokens) is
# left out by default: held out, its family is mispredicted ~18× (mean |ln error| 2.9), and its
# residuals would widen every interval (docs/prior.md); `advisor prior fit --experiment ptq-zoo` adds it
# In precedence order: a variant (model, format, method, corpus) measured in several of them counts
# once, from the first — the current protocol (ptq-sweep: sequential GPTQ, calibrated int scales)
# before the earlier sequential-Hessian study and the fp-Hessian sweep whose int scales it replaced.
MEASURED_EXPERIMENTS = ("ptq-sweep", "ptq-hessians", "ptq-sweep-fp-hessians")
COLUMNS = ("model", "family", "format", "method", "origin", "cite", "link", "corpus", "precision",
           "format_family", "granularity", "block_size", "bits_per_weight", "non_embedding_params",
           "train_tokens", "architecture", "sqnr_db", "delta_nll")


def listed_facts(listed: dict) -> dict:
    """name → facts of the published file's listed models that carry architecture numbers."""
    out = {}
    for name, m in listed.items():
        if m.get("layers") is None or m.get("architecture") is None:
            continue
        entry = CatalogEntry(name=name, family=m["family"], total_params=1, non_embedding_params=1,
                             sources=m["sources"], architecture=m["architecture"], layers=m["layers"],
                             hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"],
                             heads=m["heads"], kv_heads=m["kv_heads"], head_dim=m["head_dim"],
                             vocab_size=m["vocab_size"], tied_embeddings=m["tied_embeddings"],
                             context_length=m.get("context_length"))
        try:
            counts = architecture_param_counts(entry)
        except CatalogError:
            continue
        out[name] = {"family": m["family"], "non_embedding_params": float(counts.non_embedding),
                     "train_tokens": m.get("train_tokens"), "architecture": m["architecture"]}
    return out


def catalog_facts(entries) -> dict:
    """name → facts of catalog entries (non-embedding params, training tokens or None)."""
    return {e.name: {"family": e.family, "non_embedding_params": float(e.non_embedding_params),
                     "train_tokens": e.train_tokens, "architecture": e.architecture} for e in entries}


def _row(model, facts, fmt: dict, method, origin, cite, link, corpus, delta, sqnr_table) -> dict:
    return {"model": model, "family": facts["family"], "format": fmt["name"], "method": method,
            "origin": origin, "cite": cite, "link": link, "corpus": corpus, "precision": fmt["precision"],
            "format_family": fmt["family"], "granularity": fmt["granularity"], "block_size": fmt["block_size"],
            "bits_per_weight": fmt["bits_per_weight"], "non_embedding_params": facts["non_embedding_params"],
            "train_tokens": np.nan if facts["train_tokens"] is None else float(facts["train_tokens"]),
            "architecture": facts["architecture"], "sqnr_db": sqnr_lookup(sqnr_table, fmt), "delta_nll": delta}


def published_rows(data, facts: dict, sqnr_table) -> tuple[list[dict], Counter]:
    """Prior rows from validated published data; (rows, Counter of skipped rows by reason)."""
    rows, skipped = [], Counter()
    for r in data.rows:
        if r["method"] not in PRIOR_METHODS:
            skipped[f"method {r['method']} (kept as published data, outside the prior)"] += 1
        elif r["format_facts"] is None:
            skipped["format outside the grammar"] += 1
        elif r["model"] not in facts:
            skipped["model without architecture numbers"] += 1
        else:
            rows.append(_row(r["model"], facts[r["model"]], r["format_facts"], r["method"], "published",
                             r["source"], r["link"], r["corpus"], r["delta_nll"], sqnr_table))
    return rows, skipped


def _runs(mlflow, ids, kind):
    return mlflow.search_runs(ids, filter_string=f"tags.`ptq.kind` = '{kind}' and attributes.status = 'FINISHED'",
                              max_results=100_000)


def measured_rows(client, experiments, match, sqnr_table) -> tuple[list[dict], Counter, list]:
    """Prior rows from sweep runs: (rows, skipped by reason, the measured-data versions behind them).

    `match(name)`: the catalog name and facts of a run's model, or None (then the run's own facts).
    """
    import mlflow
    import pandas as pd

    ids = [e.experiment_id for name in experiments if (e := client.get_experiment_by_name(name))]
    if not ids:
        return [], Counter(), []
    parents, variants = _runs(mlflow, ids, "model"), _runs(mlflow, ids, "variant")
    if parents.empty or variants.empty:
        return [], Counter(), []
    parents = parents.set_index("run_id")
    # earlier experiments in `experiments` first, then newest first: the first measurement of a
    # variant is the one kept, a re-measurement supersedes the one it re-measured
    precedence = variants["experiment_id"].map({e: i for i, e in enumerate(ids)})
    variants = variants.assign(_precedence=precedence).sort_values(["_precedence", "start_time"],
                                                                     ascending=[True, False], kind="stable")
    rows, skipped, versions, seen = [], Counter(), set(), set()
    for _, v in variants.iterrows():
        parent_id = v.get("tags.mlflow.parentRunId")
        if parent_id not in parents.index:
            skipped["variant without its model run"] += 1
            continue
        p = parents.loc[parent_id]
        method = v.get("params.method")
        if method == "gptq" and p.get("params.setting.hessians", "fp") != "sequential":
            skipped["GPTQ with fp-network Hessians"] += 1
            continue
        delta = v.get("metrics.delta_nll")
        n = p.get("metrics.non_embedding_params")
        if delta is None or pd.isna(delta) or n is None or pd.isna(n):
            skipped["run without ΔNLL or parameter count"] += 1
            continue
        name = p.get("tags.mlflow.runName")
        found = match(name)
        variant = (found[0] if found else name, v["params.format"], method, p.get("params.dataset"))
        if variant in seen:
            skipped["superseded by a newer measurement of the same variant"] += 1
            continue
        seen.add(variant)
        tokens = p.get("metrics.train_tokens")
        facts = found[1] if found else {
            "family": p.get("params.family") or "unknown", "non_embedding_params": float(n),
            "train_tokens": None if tokens is None or pd.isna(tokens) else float(tokens),
            "architecture": p.get("params.arch.model_type")}
        fmt = {"name": v["params.format"], "family": v["params.family"], "precision": int(v["params.precision"]),
               "exp_bits": int(v["params.exp_bits"]), "man_bits": int(v["params.man_bits"]),
               "block_size": None if v["params.block_size"] in (None, "None") else int(v["params.block_size"]),
               "granularity": v["params.granularity"], "bits_per_weight": v.get("metrics.bits_per_weight")}
        if pd.notna(p.get("tags.ptq.seed_data", None)):
            versions.add(p["tags.ptq.seed_data"])
        rows.append(_row(found[0] if found else name, facts, fmt, method, "measured", f"runs:/{v['run_id']}",
                         None, p.get("params.dataset"), float(delta), sqnr_table))
    return rows, skipped, sorted(versions)


def frame_of(rows):
    """The rows as a DataFrame with COLUMNS (empty frames keep them)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS))
