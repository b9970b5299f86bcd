import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never need the hub: fail fast, not slow

import pytest
import torch

from pipelines.sources.tiny_model import (
    TinySpec,
    build_model,
    ensure_tiny_model,
    python_docs_text,
    train_tokenizer,
)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Every test gets its own cache and working directory: no test touches a user's state."""
    monkeypatch.setenv("PTQ_ADVISOR_CACHE", str(tmp_path / "cache"))
    # recommend's answer cache starts a detached logger per answer: only the tests about it turn it on
    monkeypatch.setenv("PTQ_ADVISOR_ANSWER_CACHE", "off")
    import mlflow

    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI",
                 "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)  # MLflow sets some of these while a test runs
    # and keeps the URIs in process globals too: a store set by one test must not leak into the next
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def docs_text():
    return python_docs_text()


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory, docs_text):
    path = tmp_path_factory.mktemp("corpus") / "python-docs.txt"
    path.write_text(docs_text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer(docs_text):
    return train_tokenizer(docs_text[:200_000], vocab_size=512)


def _untrained(arch, tokenizer):
    torch.manual_seed(0)
    spec = TinySpec(arch=arch, hidden=64, layers=2, heads=4, intermediate=96, context=128)
    return build_model(spec, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id).eval()


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    return _untrained("llama", tokenizer)


@pytest.fixture(scope="session")
def tiny_gpt2(tokenizer):
    return _untrained("gpt2", tokenizer)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, docs_text):
    """A briefly trained tiny Llama saved like any local model folder (~15 s on 2 cores)."""
    spec = TinySpec(hidden=64, layers=2, heads=4, intermediate=160, context=128, steps=120,
                    batch=8, seq_len=64, vocab_size=512)
    return ensure_tiny_model(tmp_path_factory.mktemp("models"), spec, text=docs_text[:300_000])


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory):
    """An empty sqlite tracking store with MLflow's schema already created (that costs ~5 s)."""
    import mlflow

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def _store_copy(source, tmp_path, monkeypatch):
    """Copy a sqlite store into the test's folder and make it MLflow's tracking and registry URI."""
    import shutil

    import mlflow

    path = tmp_path / "mlflow.db"
    shutil.copyfile(source, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@pytest.fixture
def tracking_uri(tmp_path, _migrated_store, monkeypatch):
    """A fresh sqlite store for this test (tracking and registry), set as MLflow's default."""
    import mlflow

    yield _store_copy(_migrated_store, tmp_path, monkeypatch)
    mlflow.end_run()


SWEEP_FORMATS = ("mxint3_32", "mxint4_32", "mxfp4_e2m1_32", "int4_chan")


@pytest.fixture(scope="session")
def sweep_store(tmp_path_factory, trained_model_dir, docs_text, _migrated_store):
    """A real sweep of three tiny models (two families) × SWEEP_FORMATS × {rtn, gptq}: its sqlite file.

    Session-scoped (~1 min); tests copy the file, so each gets its own store with the same runs.
    """
    import shutil

    from pipelines.sources.model_set import ModelEntry
    from pipelines.sweep.config import SweepConfig
    from pipelines.sweep.runner import run_sweep
    from registry.catalog.registered import grow_catalog

    root = tmp_path_factory.mktemp("sweep")
    models = root / "models"
    small = ensure_tiny_model(models, TinySpec(hidden=48, layers=2, heads=4, intermediate=128, context=128,
                                               steps=80, batch=8, seq_len=64, vocab_size=512),
                              text=docs_text[:300_000])
    gpt2 = ensure_tiny_model(models, TinySpec(arch="gpt2", hidden=64, layers=2, heads=4, intermediate=160,
                                              context=128, steps=80, batch=8, seq_len=64, vocab_size=512),
                             text=docs_text[:300_000])
    corpus = root / "docs.txt"
    corpus.write_text(docs_text[:400_000], encoding="utf-8")
    path = root / "mlflow.db"
    shutil.copyfile(_migrated_store, path)
    entries = (ModelEntry(str(trained_model_dir), family="llama-tiny", name="llama-64", train_tokens=120 * 8 * 64),
               ModelEntry(str(small), family="llama-tiny", name="llama-48", train_tokens=80 * 8 * 64),
               ModelEntry(str(gpt2), family="gpt2-tiny", name="gpt2-64", train_tokens=80 * 8 * 64))
    config = SweepConfig(models=entries, formats=SWEEP_FORMATS, dataset=str(corpus), experiment="ptq-sweep",
                         seq_len=64, max_windows=3, calibration_size=4, damp=0.01, landscape_step_db=0)
    messages = []
    run_sweep(config, f"sqlite:///{path}", say=messages.append)
    grow_catalog([config.experiment], messages.append)
    assert not [m for m in messages if m.startswith("note:")], messages
    return path


@pytest.fixture
def swept_uri(tmp_path, sweep_store, monkeypatch):
    """This test's own copy of the sweep store, set as MLflow's tracking and registry URI."""
    import mlflow

    yield _store_copy(sweep_store, tmp_path, monkeypatch)
    mlflow.end_run()
