"""The candidate catalog: seed facts, validation, growth from sweep runs, versions in the registry."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from registry.catalog.entries import (
    CATALOG,
    CURRENT,
    SEED_PATH,
    CatalogEntry,
    CatalogError,
    CatalogNotFoundError,
    content_digest,
    load_seed,
)
from registry.catalog.params import architecture_param_counts, kv_cache_bytes
from registry.catalog.registered import (
    entries_from_runs,
    load_catalog,
    merge,
    register_catalog,
)


@pytest.fixture(scope="module")
def seed():
    return load_seed()


def by_name(entries, name) -> CatalogEntry:
    return next(e for e in entries if e.name == name)


def test_seed_holds_the_curated_families_and_the_locally_measured_models(seed):
    names = {e.name for e in seed}
    wanted = {"llama-2-7b", "llama-2-13b", "llama-3-8b", "llama-3.1-8b", "llama-3.2-1b", "llama-3.2-3b",
              "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-coder-0.5b",
              "qwen2.5-coder-0.5b-instruct", "mistral-7b-v0.1", "gemma-2-2b", "gemma-2-9b", "gemma-3-270m",
              "gemma-3-1b", "gemma-3-4b", "phi-3-mini-4k-instruct", "smollm2-135m", "smollm2-135m-instruct",
              "smollm2-360m", "smollm2-1.7b", "pythia-70m", "pythia-12b", "opt-125m", "opt-350m", "opt-6.7b",
              "bloom-560m", "bloom-7b1", "gpt2", "gpt2-xl", "qwen3-8b", "qwen3-0.6b-base", "olmo-2-1124-7b",
              "phi-4"}
    assert wanted <= names
    for entry in seed:
        assert {"architecture", "params"} <= set(entry.sources), entry.name
        # a null training-token count must say why rather than be silently missing
        assert entry.train_tokens is not None or "train_tokens" in (entry.notes or ""), entry.name


def test_parameter_counts_follow_from_the_architecture(seed):
    # the formulas are exact per family (biases and norms included), so equality rather than ~1 %
    for entry in seed:
        assert architecture_param_counts(entry) == (entry.total_params, entry.non_embedding_params,
                                                    entry.quantized_params), entry.name


@pytest.mark.parametrize("fixture, architecture", [("tiny_llama", "llama"), ("tiny_gpt2", "gpt2")])
def test_the_formulas_count_what_a_real_model_holds(request, fixture, architecture):
    from pipelines.quantize.rtn import count_params, find_weights
    from pipelines.sources.architecture import architecture as facts_of
    from pipelines.sources.architecture import non_embedding_params

    model = request.getfixturevalue(fixture)
    facts = facts_of(model)
    assert facts.pop("model_type") == architecture
    entry = CatalogEntry(name=fixture, family="tiny", total_params=1, non_embedding_params=1,
                         sources={"architecture": "test"}, architecture=architecture, **facts)
    quantized = sum(t.param.numel() for t in find_weights(model))
    assert architecture_param_counts(entry) == (count_params(model), non_embedding_params(model), quantized)


def test_qk_norms_count_per_head_for_qwen3_and_per_projection_for_olmo2(seed):
    # Qwen3 normalises q and k per head (2·head_dim weights a layer), OLMo 2 over the whole projection
    # ((heads + kv_heads)·head_dim) and has no other extra weights: the same shape as Llama otherwise
    from dataclasses import replace

    for name, extra in (("qwen3-8b", lambda e: 2 * e.head_dim), ("olmo-2-1124-7b",
                                                                 lambda e: (e.heads + e.kv_heads) * e.head_dim)):
        entry = by_name(seed, name)
        as_llama = architecture_param_counts(replace(entry, architecture="llama"))
        counts = architecture_param_counts(entry)
        assert counts.total - as_llama.total == entry.layers * extra(entry)
        assert counts.quantized == as_llama.quantized


@pytest.mark.parametrize("name, total, non_embedding", [
    # EleutherAI/pythia README's model table (Biderman et al. 2023, arXiv:2304.01373), exact counts
    ("pythia-70m", 70_426_624, 18_915_328),
    ("pythia-1b", 1_011_781_632, 805_736_448),
    ("pythia-6.9b", 6_857_302_016, 6_444_163_072),
    ("pythia-12b", 11_846_072_320, 11_327_027_200),
    # bigscience/bloom-560m model card: "559,214,592 parameters"
    ("bloom-560m", 559_214_592, None),
])
def test_counts_match_published_exact_figures(seed, name, total, non_embedding):
    entry = by_name(seed, name)
    assert entry.total_params == total
    assert non_embedding is None or entry.non_embedding_params == non_embedding


def test_kv_cache_and_unquantized_params(seed):
    llama3 = by_name(seed, "llama-3-8b")  # 32 layers x 8 KV heads x 128 dims, K and V
    assert kv_cache_bytes(llama3, context=1, batch=1, bytes_per_element=2) == 131_072
    assert kv_cache_bytes(llama3, context=8192, batch=2, bytes_per_element=1) == 2**30  # 1 GiB
    assert kv_cache_bytes(llama3, context=3, batch=1, bytes_per_element=0.5) == 3 * 32_768
    smol = by_name(seed, "smollm2-135m")  # tied: embeddings + 61 RMSNorms stay unquantized
    assert smol.unquantized_params == 49_152 * 576 + (2 * 30 + 1) * 576


def _write_models(tmp_path, models) -> str:
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump({"schema": 1, "models": models}, sort_keys=False))
    return str(path)


def _raw_seed():
    return yaml.safe_load(SEED_PATH.read_text())["models"]


@pytest.mark.parametrize("change, expected", [
    (lambda m: m[1].pop("layers"), "entry 2 ('llama-2-13b'): field 'layers' is missing"),
    (lambda m: m[0].update(total_params=-7),
     "entry 1 ('llama-2-7b'): field 'total_params' must be a positive integer"),
    (lambda m: m[1].update(name="llama-2-7b"), "entry 2 ('llama-2-7b'): duplicate name"),
    (lambda m: m[0].update(train_tokens="2e12"), "entry 1 ('llama-2-7b'): field 'train_tokens'"),
    (lambda m: m[0].update(kv_heads=5), "kv_heads (5) must divide heads (32)"),
    (lambda m: m[1].update(hub_id=m[0]["hub_id"]), "entry 2 ('llama-2-13b'): name, hub id or alias"),
    (lambda m: m[0].update(params=7), "entry 1 ('llama-2-7b'): unknown field(s) ['params']"),
])
def test_a_broken_seed_entry_is_named(tmp_path, change, expected):
    models = _raw_seed()[:3]
    change(models)
    with pytest.raises(CatalogError) as caught:
        load_seed(_write_models(tmp_path, models))
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_the_catalog_module_imports_without_mlflow_or_torch():
    code = ("import sys, registry.catalog.entries as c; c.load_seed(); "
            "print(sorted(m for m in ('mlflow', 'torch', 'transformers', 'pandas') if m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_an_empty_store_says_how_to_create_the_catalog(tracking_uri):
    with pytest.raises(CatalogNotFoundError, match="register_catalog"):
        load_catalog()


def test_register_is_idempotent_on_content_and_moves_current(tracking_uri, seed):
    import mlflow

    client = mlflow.MlflowClient()
    first = register_catalog(seed[:4], "four seed models", "seed")
    again = register_catalog(list(reversed(seed[:4])), "the same four, reordered", "seed")
    assert (str(first.version), str(again.version)) == ("1", "1")
    assert len(client.search_model_versions(f"name = '{CATALOG}'")) == 1
    assert first.tags["content_digest"] == content_digest(seed[:4]) and first.tags["entries"] == "4"

    second = register_catalog(seed[:5], "five seed models", "seed")
    assert str(second.version) == "2"
    assert str(client.get_model_version_by_alias(CATALOG, CURRENT).version) == "2"
    current, old = load_catalog(), load_catalog("1")
    assert (current.reference, len(current.entries)) == (f"{CATALOG}/2", 5)
    assert (old.version, [e.name for e in old.entries]) == ("1", [e.name for e in seed[:4]])
    assert load_catalog("latest").version == "2"
    assert current.get("meta-llama/Meta-Llama-3-8B").name == "llama-3-8b"

    # registering known content again reuses its version and points current back at it
    assert str(register_catalog(seed[:4], "back to four", "seed").version) == "1"
    assert load_catalog().version == "1"

    client.set_model_version_tag(CATALOG, "2", "content_digest", "0" * 64)
    with pytest.raises(CatalogError, match="does not match"):
        load_catalog("2")


def test_a_client_reads_its_own_store_not_the_process_wide_one(tracking_uri, seed, tmp_path):
    import mlflow

    register_catalog(seed[:3], "three seed models", "seed")
    mine = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    mlflow.set_tracking_uri(other)
    mlflow.set_registry_uri(other)  # the process now points at an empty store
    with pytest.raises(CatalogNotFoundError):
        load_catalog()
    loaded = load_catalog(client=mine)
    assert (loaded.version, [e.name for e in loaded.entries]) == ("1", [e.name for e in seed[:3]])


def test_a_version_loads_as_a_pyfunc_that_returns_the_table(tracking_uri, seed):
    import mlflow

    register_catalog(seed, "the curated seed", "seed")
    model = mlflow.pyfunc.load_model(f"models:/{CATALOG}@{CURRENT}")
    table = model.predict(pd.DataFrame())
    pd.testing.assert_frame_equal(table, load_catalog().table())
    assert len(table) == len(seed) and table["total_params"].dtype == "int64"
    picked = model.predict(pd.DataFrame({"name": ["gpt2", "qwen2.5-0.5b"]}))
    assert list(picked["name"]) == ["gpt2", "qwen2.5-0.5b"]
    assert list(picked["kv_heads"]) == [12, 2]


def _parent_run(client, experiment_id, name, start, nll, digest="d1", hub=False, **arch):
    """A sweep parent run as the sweep logs it (the contract this module reads)."""
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, start_time=start, run_name=name, tags={"ptq.kind": "model"})
    facts = {"layers": 30, "hidden_size": 576, "heads": 9, "kv_heads": 3, "head_dim": 64,
             "context_length": 8192, "vocab_size": 49152, "intermediate_size": 1536,
             "tied_embeddings": True, **arch}
    params = {"model": "HuggingFaceTB/SmolLM2-360M" if hub else f"/models/{name}",
              "model_kind": "hub" if hub else "gguf", "family": "smollm2", "dataset": "kjv.txt",
              "dataset_digest": digest, "train_tokens": "None",
              **{f"arch.{k}": str(v) for k, v in facts.items()}}
    metrics = {"total_params": 134_515_008, "non_embedding_params": 106_203_456,
               "quantized_params": 106_168_320, "nll_fp": nll, "bpb_fp": nll / 3}
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()],
                     metrics=[Metric(k, v, start, 0) for k, v in metrics.items()])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_sweep_runs_grow_the_catalog(tracking_uri, seed):
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.create_experiment("ptq-sweep")
    _parent_run(client, exp, "SmolLM2-135M-Instruct.Q4_1.gguf", 1_000, nll=3.0)
    latest = _parent_run(client, exp, "SmolLM2-135M-Instruct.Q4_1.gguf", 2_000, nll=2.9535)
    hub_run = _parent_run(client, exp, "smollm2-360m", 3_000, nll=2.7, hub=True)
    tiny = _parent_run(client, exp, "llama-64", 4_000, nll=5.1, layers=2, hidden_size=64, heads=4, kv_heads=4,
                       head_dim=16, context_length=128, vocab_size=512, intermediate_size=160,
                       tied_embeddings=False)
    _parent_run(client, exp, "other-text", 5_000, nll=4.0, digest="d2")
    variant = client.create_run(exp, run_name="llama-64 · mxint4_32 · rtn", tags={"ptq.kind": "variant"})
    client.log_metric(variant.info.run_id, "nll_fp", 9.9)
    unmeasured = client.create_run(exp, run_name="stopped", tags={"ptq.kind": "model"})
    client.log_param(unmeasured.info.run_id, "model", "x")

    measured = entries_from_runs(client, [exp], dataset_digest="d1")
    assert [e.name for e in measured] == ["SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-360m", "llama-64"]
    smol = measured[0]
    assert smol.measured_fp.nll == 2.9535 and smol.measured_fp.run_id == latest  # the later run wins
    assert (smol.measured_fp.dataset, smol.measured_fp.dataset_digest) == ("kjv.txt", "d1")
    assert smol.sources["measured_fp"] == f"runs:/{latest}" and smol.hub_id is None
    assert (smol.layers, smol.kv_heads, smol.tied_embeddings, smol.train_tokens) == (30, 3, True, None)
    assert measured[1].hub_id == "HuggingFaceTB/SmolLM2-360M" and measured[1].architecture is None
    assert kv_cache_bytes(measured[2], 128, 1, 4) == 2 * 2 * 4 * 16 * 128 * 4
    assert len(entries_from_runs(client, [exp])) == 4

    merged = merge(seed, measured)
    assert len(merged) == len(seed) + 1 and merged[-1].name == "llama-64"
    instruct = by_name(merged, "smollm2-135m-instruct")  # matched through its GGUF file name
    assert instruct.measured_fp.run_id == latest and instruct.sources["measured_fp"] == f"runs:/{latest}"
    assert instruct.total_params == by_name(seed, "smollm2-135m-instruct").total_params  # seed facts win
    assert by_name(merged, "smollm2-360m").measured_fp.run_id == hub_run  # matched through its hub id
    assert by_name(merged, "llama-64").sources["architecture"] == f"runs:/{tiny}"

    version = register_catalog(merged, "seed + the KJV sweep", "seed+runs")
    assert (version.tags["source"], version.tags["measured"]) == ("seed+runs", "3")
    loaded = load_catalog()
    assert loaded.get("smollm2-135m-instruct").measured_fp == instruct.measured_fp
    row = loaded.table().set_index("name").loc["llama-64"]
    assert (row["nll_fp"], row["fp_run_id"]) == (5.1, tiny)
