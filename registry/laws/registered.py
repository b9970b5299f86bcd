"""Registering the QiD and 16-bit laws as `qid-law` / `loss16-law` versions, and loading them.

Version 1 of each holds the published Pythia/GPTQ coefficients (Ouyang et al. 2024). Later
versions are fits, each logged as a run in the `ptq-registry` experiment with its lineage (the
training runs). The alias `current` names the version the advisor answers from. A version's
parameters live in its model config (see `law_model.py`): nothing is pickled.

Runs are logged through MLflow's fluent API, so a `client` passed in must use MLflow's current
tracking and registry URIs.
"""

from __future__ import annotations

from pathlib import Path

from registry.laws.published import (
    PUBLISHED_SOURCE,
    published_loss16_law,
    published_qid_law,
)
from registry.versions import (
    VersionNotFoundError,
    registry_experiment_id,
    resolve_version,
)
from store.errors import InputError
from store.faults import fault_point
from store.short_runs import owner_tags

QID_LAW, LOSS16_LAW = "qid-law", "loss16-law"
CURRENT = "current"
PIP_REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1"]
_CODE = str(Path(__file__).with_name("law_model.py"))
_TAG_CHARS = 500  # the full run list goes to an artifact; a tag only needs to be readable
_DESCRIPTIONS = {
    QID_LAW: "Quantization-induced degradation ΔqLoss(N, D, P) = k·D^β/(N^α·P^γ) in nats/token, "
             "per '<method>/<format family>' (Ouyang et al. 2024, Eq. 8). Alias current: the one "
             "the advisor uses.",
    LOSS16_LAW: "16-bit loss L(N, D) = [(Nc/N)^(αN/αD) + Dc/D]^αD in nats/token (Ouyang et al. "
                "2024, Eq. 3). Alias current: the one the advisor uses.",
}
_EXAMPLES = {
    QID_LAW: {"N": [1.0e9, 7.0e9], "D": [3.0e11, 2.0e12], "P": [4.0, 3.0], "method": ["gptq", "rtn"],
              "family": ["int", "mx"]},
    LOSS16_LAW: {"N": [1.0e9, 7.0e9], "D": [3.0e11, 2.0e12]},
}

__all__ = ["QID_LAW", "LOSS16_LAW", "CURRENT", "LawNotFoundError", "seed_published_laws",
           "register_qid_fit", "register_loss16_fit", "load_law", "fit_qid_from_table"]


def fit_qid_from_table(*args, **kwargs):
    """See `registry.laws.fitting.fit_qid_from_table` (imported on use: it needs scikit-learn)."""
    from registry.laws.fitting import fit_qid_from_table as fit

    return fit(*args, **kwargs)


class LawNotFoundError(InputError, LookupError):
    """No law version where one was asked for (the message says what exists and how to seed)."""


def _client(client):
    import mlflow

    return client or mlflow.MlflowClient()


def _signature(name: str):
    """Declared columns; numbers typed `any` because MLflow refuses int64 → double, and a parameter
    count is naturally an int: the law casts to float64 itself."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    numbers = [ColSpec(AnyType(), c) for c in ("N", "D", "P")[:3 if name == QID_LAW else 2]]
    if name == QID_LAW:
        inputs = Schema(numbers + [ColSpec("string", c, required=False) for c in ("method", "family")])
        outputs = Schema([ColSpec("double", "delta_nll"), ColSpec("string", "law_key")])
    else:
        inputs, outputs = Schema(numbers), Schema([ColSpec("double", "loss16")])
    return ModelSignature(inputs=inputs, outputs=outputs), pd.DataFrame(_EXAMPLES[name])


def _log_version(client, name: str, config: dict, tags: dict, description: str,
                 training_run_ids=(), set_current: bool = True):
    """Log `config` as a pyfunc in a short `ptq-registry` run and register it as a version of `name`."""
    import mlflow

    signature, example = _signature(name)
    experiment_id = registry_experiment_id(client)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name} · {tags['source'][:60]}",
                          description=description, nested=mlflow.active_run() is not None,
                          tags=owner_tags()) as run:
        mlflow.log_params({"law": name, "keys": tags["keys"], "n_rows": tags["n_rows"]})
        mlflow.log_dict(config, "law.json")
        mlflow.log_dict({"runs": list(training_run_ids)}, "lineage/training_runs.json")
        info = mlflow.pyfunc.log_model(name="model", python_model=_CODE, model_config=config,
                                       signature=signature, input_example=example,
                                       pip_requirements=PIP_REQUIREMENTS, registered_model_name=name)
    version = str(info.registered_model_version)
    fault_point("registry.law_registered")
    for key, value in {**tags, "lineage": f"run {run.info.run_id} in experiment {experiment_id}"}.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=description)
    client.update_registered_model(name, description=_DESCRIPTIONS[name])
    if set_current:
        client.set_registered_model_alias(name, CURRENT, version)
    return client.get_model_version(name, version)


def _runs_tag(training_run_ids) -> str:
    ids = list(training_run_ids)
    text = f"{len(ids)} runs: {','.join(ids)}"
    if len(text) <= _TAG_CHARS:
        return text
    return text[:_TAG_CHARS - 45] + "… (full list: lineage/training_runs.json)"


def _has_versions(client, name: str) -> bool:
    return bool(client.search_model_versions(f"name = '{name}'", max_results=1))


def _published_config(name: str) -> dict:
    if name == QID_LAW:
        return {"kind": QID_LAW, "fits": {"gptq/int": published_qid_law()}}
    return {"kind": LOSS16_LAW, "law": published_loss16_law()}


def _published_tags(name: str) -> dict:
    return {"source": PUBLISHED_SOURCE, "kind": "published", "keys": "gptq/int" if name == QID_LAW else "loss16",
            "n_rows": "unpublished", "training_runs": "none (published coefficients)"}


def _seed(client, name: str):
    """Version 1 of `name` from the published coefficients, or None if `name` is complete already.

    A seed killed half-way (a version registered, its tags or `current` alias not yet set) left
    `name` without a law to answer with: that version is completed here instead of skipped.
    """
    if not _has_versions(client, name):
        return _log_version(client, name, _published_config(name), _published_tags(name),
                            f"Published coefficients: {PUBLISHED_SOURCE}.")
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version_by_alias(name, CURRENT)  # (search results carry no aliases)
        return None
    except MlflowException:
        pass
    first = min(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    for key, value in _published_tags(name).items():
        if key not in first.tags:
            client.set_model_version_tag(name, first.version, key, value)
    client.set_registered_model_alias(name, CURRENT, first.version)
    return client.get_model_version(name, first.version)


def seed_published_laws(client=None) -> dict:
    """Register version 1 of `qid-law` and `loss16-law` from the published coefficients.

    Idempotent: a registered model that already has versions is left alone. Returns
    {name: ModelVersion} for the laws seeded by this call (empty if none).
    """
    client = _client(client)
    seeded = {name: _seed(client, name) for name in (QID_LAW, LOSS16_LAW)}
    return {name: version for name, version in seeded.items() if version is not None}


def register_qid_fit(fits: dict, training_run_ids: list[str], description: str, set_current: bool = True,
                     client=None):
    """Register QiD law fits ({"<method>/<family>": law entry}) as a new `qid-law` version.

    A version without a "gptq/int" fit gets the published one, so every row has a last fallback.
    """
    if not fits:
        raise InputError("no QiD fits to register: fit some with fit_qid_from_table(table)")
    fits = {"gptq/int": published_qid_law(), **fits}
    tags = {"source": f"fit on {len(training_run_ids)} runs", "kind": "fit", "keys": ",".join(sorted(fits)),
            "n_rows": ",".join(f"{key}={fit.get('n_rows') or 'unpublished'}" for key, fit in sorted(fits.items())),
            "training_runs": _runs_tag(training_run_ids)}
    client = _client(client)
    _seed(client, QID_LAW)  # version 1 is always the published law, so fits compare against it
    return _log_version(client, QID_LAW, {"kind": QID_LAW, "fits": fits}, tags, description,
                        training_run_ids, set_current)


def register_loss16_fit(law: dict, training_run_ids: list[str], description: str, set_current: bool = True,
                        client=None):
    """Register a 16-bit law entry (Loss16LawFit.as_law(...)) as a new `loss16-law` version."""
    missing = [p for p in ("Nc", "Dc", "alpha_N", "alpha_D") if p not in law]
    if missing:
        raise ValueError(f"the 16-bit law entry lacks {missing}: "
                         "build it with Loss16LawFit().fit(X, y).as_law(source)")
    tags = {"source": f"fit on {len(training_run_ids)} runs", "kind": "fit", "keys": "loss16",
            "n_rows": str(law.get("n_rows") or "unpublished"),
            "training_runs": _runs_tag(training_run_ids)}
    client = _client(client)
    _seed(client, LOSS16_LAW)
    return _log_version(client, LOSS16_LAW, {"kind": LOSS16_LAW, "law": law}, tags, description,
                        training_run_ids, set_current)


def load_law(name: str, ref: str = CURRENT, client=None):
    """The law version `ref` (alias, number or 'latest') as (pyfunc model, ModelVersion)."""
    import mlflow

    client = _client(client)
    try:
        version = resolve_version(client, name, ref)
    except VersionNotFoundError as err:
        raise LawNotFoundError(f"{err}; seed version 1 from the published coefficients with "
                               "registry.laws.registered.seed_published_laws(), or register a fit") from None
    return mlflow.pyfunc.load_model(f"models:/{name}/{version.version}"), version
