"""The loss predictor's training table, read from sweep runs in the tracking store (never files).

One row per (base model, format): the parent run gives the model's facts (D = quantized params,
NLL_fp), the RTN child run the cheap features (SQNR_rtn, NLL_rtn, slope), the GPTQ child run the
target (NLL after GPTQ, Xu et al. §3). Rows without a GPTQ run can still be predicted, not learned.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.errors import InputError

# Xu et al.'s predictor inputs (App. D): D, NLL_fp, SQNR_rtn, NLL_rtn, slope, P, E, K
FEATURES = ("quantized_params", "nll_fp", "sqnr_rtn_db", "nll_rtn", "slope_rtn",
            "precision", "exp_bits", "block_size")
TARGET = "nll_gptq"
# params.arch.* a sweep logs on each model's parent run (pipelines/sources/architecture.py)
ARCHITECTURE_PARAMS = ("layers", "hidden_size", "intermediate_size", "heads", "kv_heads", "head_dim", "vocab_size",
                       "context_length")
IDENTITY = ("model", "model_family", "format", "format_family", "dataset_digest",
            "parent_run_id", "rtn_run_id", "gptq_run_id", "experiment_id")


class FeatureTableError(InputError, LookupError):
    """No usable runs where the table was asked for."""


@dataclass(frozen=True)
class TableQuery:
    """Which sweep runs feed the table: experiments by name, optionally one model family/dataset.

    `hessians`: GPTQ targets only from sweeps that collected GPTQ's Hessians this way (None: any).
    fp-network Hessians make GPTQ lose to RTN on real models (docs/real-model-study.md), so such
    runs stay predictable (their RTN features count) but never teach the predictor GPTQ's loss.
    """

    experiments: tuple[str, ...] = ("ptq-sweep",)
    families: tuple[str, ...] = ()
    dataset_digest: str | None = None
    hessians: str | None = "sequential"


def _runs(mlflow, experiment_ids, kind: str):
    return mlflow.search_runs(experiment_ids, filter_string=f"tags.`ptq.kind` = '{kind}' and "
                              "attributes.status = 'FINISHED'", max_results=100_000)


def _column(frame, name, default=None):
    return frame[name] if name in frame.columns else default


def build_feature_table(query: TableQuery = TableQuery(), client=None):
    """A pandas DataFrame: IDENTITY columns, FEATURES, nll_gptq (NaN when not measured), bpb_*."""
    import mlflow
    import pandas as pd

    client = client or mlflow.MlflowClient()
    ids = []
    for name in query.experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            known = sorted(e.name for e in client.search_experiments())
            raise FeatureTableError(f"no experiment {name!r} in {mlflow.get_tracking_uri()} "
                                    f"(there are: {', '.join(known) or 'none'}); run a sweep first")
        ids.append(experiment.experiment_id)
    parents, variants = _runs(mlflow, ids, "model"), _runs(mlflow, ids, "variant")
    if parents.empty or variants.empty:
        raise FeatureTableError(f"no finished sweep runs in experiment(s) {', '.join(query.experiments)}")
    models = pd.DataFrame({
        "parent_run_id": parents["run_id"],
        "experiment_id": parents["experiment_id"],
        "model": parents["tags.mlflow.runName"],
        "model_spec": _column(parents, "params.model"),
        "gguf_file": _column(parents, "params.gguf_file"),
        "model_family": _column(parents, "params.family").fillna("unknown"),
        "hessians": _column(parents, "params.setting.hessians", "fp"),
        "dataset_digest": parents["params.dataset_digest"],
        "quantized_params": parents["metrics.quantized_params"],
        "nll_fp": parents["metrics.nll_fp"],
        "bpb_fp": parents["metrics.bpb_fp"],
        "train_tokens": _column(parents, "metrics.train_tokens", float("nan")),
        "non_embedding_params": _column(parents, "metrics.non_embedding_params", float("nan")),
        "total_params": _column(parents, "metrics.total_params", float("nan")),
        # architecture numbers for the runtime memory model (absent in runs older than these params)
        **{name: pd.to_numeric(_column(parents, f"params.arch.{name}", float("nan")), errors="coerce")
           for name in ARCHITECTURE_PARAMS},
        "tied_embeddings": _column(parents, "params.arch.tied_embeddings", None),
        "model_type": _column(parents, "params.arch.model_type", None),
    })
    # A model swept again (new code version or settings) has a newer parent run: learn from the
    # newest measurement of each model on each dataset, never from two generations at once.
    models["start_time"] = parents["start_time"]
    models = (models.sort_values("start_time", ascending=False)
              .drop_duplicates(["model", "dataset_digest"]).drop(columns="start_time"))
    if query.families:
        models = models[models["model_family"].isin(query.families)]
    if query.dataset_digest:
        models = models[models["dataset_digest"] == query.dataset_digest]
    variants = variants.rename(columns={"tags.mlflow.parentRunId": "parent_run_id"})
    rtn = variants[variants["params.method"] == "rtn"]
    gptq = variants[variants["params.method"] == "gptq"]
    rtn = pd.DataFrame({
        "parent_run_id": rtn["parent_run_id"], "format": rtn["params.format"],
        "format_family": rtn["params.family"], "rtn_run_id": rtn["run_id"],
        "precision": rtn["params.precision"].astype(float),
        "exp_bits": rtn["params.exp_bits"].astype(float),
        "block_size": rtn["params.block_size"].astype(float),
        "sqnr_rtn_db": rtn["metrics.sqnr_rtn_db"], "nll_rtn": rtn["metrics.nll_rtn"],
        "slope_rtn": rtn["metrics.slope_rtn"], "bpb_rtn": rtn["metrics.bpb_rtn"],
        "bits_per_weight": rtn["metrics.bits_per_weight"], "bytes": rtn["metrics.bytes"],
    })
    # an RTN-only sweep has no GPTQ metric columns at all: its rows are predictable, not learnable
    gptq = pd.DataFrame({
        "parent_run_id": gptq["parent_run_id"], "format": gptq["params.format"],
        "gptq_run_id": gptq["run_id"], "nll_gptq": _column(gptq, "metrics.nll_gptq", float("nan")),
        "bpb_gptq": _column(gptq, "metrics.bpb_gptq", float("nan")),
        "sqnr_gptq_db": _column(gptq, "metrics.sqnr_gptq_db", float("nan")),
    })
    table = models.merge(rtn, on="parent_run_id").merge(gptq, on=["parent_run_id", "format"], how="left")
    if query.hessians is not None:
        other = table["hessians"].fillna("fp") != query.hessians
        table.loc[other, ["nll_gptq", "bpb_gptq", "sqnr_gptq_db"]] = float("nan")
    table = table.dropna(subset=list(FEATURES))
    if table.empty:
        raise FeatureTableError("the sweep runs have no complete RTN feature rows "
                                f"(families {list(query.families) or 'all'}, dataset {query.dataset_digest or 'any'})")
    return table.sort_values(["model", "format"]).reset_index(drop=True)


def qid_table(table):
    """Rows for the QiD law (Ouyang et al.): N non-embedding params, D training tokens, P bits,
    method, format family, delta_nll = NLL after quantization − NLL_fp (nats/token)."""
    import pandas as pd

    known = table.dropna(subset=["train_tokens", "non_embedding_params"])
    parts = []
    for method, column, run in (("rtn", "nll_rtn", "rtn_run_id"), ("gptq", "nll_gptq", "gptq_run_id")):
        rows = known.dropna(subset=[column])
        parts.append(pd.DataFrame({"N": rows["non_embedding_params"], "D": rows["train_tokens"],
                                   "P": rows["precision"], "method": method, "family": rows["format_family"],
                                   "delta_nll": rows[column] - rows["nll_fp"], "model": rows["model"],
                                   "run_id": rows[run], "parent_run_id": rows["parent_run_id"]}))
    return pd.concat(parts, ignore_index=True)
