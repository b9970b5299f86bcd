import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never need the hub: fail fast, not slow

import pytest
import torch

from pipelines.tiny_model import TinySpec, build_model, ensure_tiny_model, python_docs_text, train_tokenizer


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Every test gets its own cache and working directory: no test touches a user's state."""
    monkeypatch.setenv("PTQ_ADVISOR_CACHE", str(tmp_path / "cache"))
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)  # MLflow sets some of these while a test runs
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


@pytest.fixture
def tracking_uri(tmp_path, _migrated_store, monkeypatch):
    """A fresh sqlite store for this test (tracking and registry), set as MLflow's default."""
    import shutil

    import mlflow

    path = tmp_path / "mlflow.db"
    shutil.copyfile(_migrated_store, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.end_run()
