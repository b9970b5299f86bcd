"""The micro-suite: real training of transformers Llamas on the `test` preset, logged to MLflow."""

import json

import mlflow
import pytest
import torch
import yaml
from click.testing import CliRunner

from advisor.cli import cli
from pipelines.zoo.presets import PRESETS, ZooPreset, ZooSize
from pipelines.zoo.training import learning_rate


@pytest.fixture(scope="module")
def zoo_store(tmp_path_factory, _migrated_store):
    """The `test` preset trained once (~15 s) into its own store: (uri, CLI JSON, output folder)."""
    import shutil

    root = tmp_path_factory.mktemp("zoo")
    shutil.copyfile(_migrated_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = CliRunner().invoke(cli, ["zoo", "--preset", "test", "--out", str(root / "zoo"),
                                      "--tracking-uri", uri, "--json"])
    assert result.exit_code == 0, result.output
    return uri, json.loads(result.stdout), root / "zoo"


def test_validation_loss_falls_with_tokens_and_with_size(zoo_store):
    _, result, _ = zoo_store
    rows = result["checkpoints"]
    preset = PRESETS["test"]
    assert len(rows) == len(preset.sizes) * preset.checkpoints == 9
    by_size = {}
    for row in rows:
        by_size.setdefault(row["size"], []).append(row)
    for size, points in by_size.items():
        points.sort(key=lambda r: r["train_tokens"])
        tokens = [r["train_tokens"] for r in points]
        assert [b / a for a, b in zip(tokens, tokens[1:])] == [2.0, 2.0], tokens  # log-spaced D
        losses = [r["nll_val"] for r in points]
        assert losses == sorted(losses, reverse=True) and losses[0] > losses[-1] + 0.2, (size, losses)
    n = {size: points[0]["non_embedding_params"] for size, points in by_size.items()}
    assert n["xs"] < n["s"] < n["m"]
    for i in range(preset.checkpoints):
        at_d = [by_size[s.name][i]["nll_val"] for s in preset.sizes]  # sizes small → large
        assert at_d == sorted(at_d, reverse=True), at_d


def test_every_checkpoint_is_a_finished_run_with_its_artifact(zoo_store):
    uri, result, _ = zoo_store
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("ptq-zoo")
    runs = client.search_runs([experiment.experiment_id], "tags.`ptq.kind` = 'zoo-checkpoint'")
    assert len(runs) == 9 and {r.info.status for r in runs} == {"FINISHED"}
    run = next(r for r in runs if r.info.run_id == result["checkpoints"][-1]["run_id"])
    metrics = run.data.metrics
    assert {"train_tokens", "total_params", "non_embedding_params", "train_loss", "nll_val", "bpb_val"} <= set(metrics)
    assert metrics["total_params"] > metrics["non_embedding_params"] > 0
    names = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert {"checkpoint/config.json", "checkpoint/tokenizer.json", "checkpoint/zoo.json"} <= names
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["ptq.kind"] == "zoo-size"
    curve = client.get_metric_history(parent.info.run_id, "nll_val")
    assert sorted(m.step for m in curve) == sorted(r["train_tokens"] for r in result["checkpoints"]
                                                    if r["size"] == parent.data.params["size"])


def test_rerun_logs_nothing_new_and_models_file_feeds_the_sweep(zoo_store, tmp_path):
    uri, result, out = zoo_store
    again = CliRunner().invoke(cli, ["zoo", "--preset", "test", "--out", str(out), "--tracking-uri", uri])
    assert again.exit_code == 0, again.output
    assert "9 checkpoints of zoo-test" in again.stdout and "next: advisor sweep --models-file" in again.stdout
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("ptq-zoo")
    assert len(client.search_runs([experiment.experiment_id])) == 9 + 3  # checkpoints + one parent per size

    from pipelines.sources.model_set import load_model_set

    entries = load_model_set(result["models_file"])
    assert len(entries) == 9 and {e.family for e in entries} == {"zoo-test"}
    assert sorted(e.train_tokens for e in entries) == sorted(r["train_tokens"] for r in result["checkpoints"])


def test_sweep_of_the_suite_fits_a_qid_law_without_moving_current(zoo_store, tmp_path):
    uri, result, _ = zoo_store
    # two sizes × two token counts × two precisions: the smallest table that identifies α, β, γ
    picked = [r for r in result["checkpoints"] if r["size"] in ("xs", "m") and r["train_tokens"] > 30_000]
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": [
        {"id": r["folder"], "family": "zoo-test", "train_tokens": r["train_tokens"], "name": r["name"]}
        for r in picked]}))
    swept = CliRunner().invoke(cli, ["sweep", "--models-file", str(models_file), "--formats", "int2_g32,int4_g32",
                                     "--methods", "rtn", "--dataset", "python-docs", "--max-windows", "4",
                                     "--landscape-step", "0", "--no-catalog", "--tracking-uri", uri, "--json"])
    assert swept.exit_code == 0, swept.output
    assert not mlflow.MlflowClient(uri).search_registered_models("name = 'ptq-candidate-catalog'")  # --no-catalog
    fitted = CliRunner().invoke(cli, ["fit-qid", "--family", "zoo-test", "--no-current", "--bootstrap", "20",
                                      "--tracking-uri", uri, "--json"])
    assert fitted.exit_code == 0, fitted.output
    law = json.loads(fitted.stdout)
    fit = law["fits"]["rtn/int"]
    # rows where quantization did not hurt (ΔqLoss ≤ 0, possible at 4 bits) cannot enter log space
    assert fit["n_rows"] + fit["n_dropped"] == 8 and fit["n_rows"] >= 6
    assert fit["gamma"] > 0  # fewer bits, more damage
    client = mlflow.MlflowClient(uri)
    assert str(client.get_model_version_by_alias("qid-law", "current").version) == "1"  # still the published law
    assert law["version"] == "2"
    # with one bit width left, γ cannot be told from k: a one-line error, nothing registered
    one_width = CliRunner().invoke(cli, ["fit-qid", "--family", "zoo-test", "--no-current", "--max-bits", "3",
                                         "--bootstrap", "20", "--tracking-uri", uri])
    assert one_width.exit_code == 2 and "Traceback" not in one_width.output, one_width.output
    assert one_width.output.startswith("Error: no QiD law could be fitted")
    assert "rows" in one_width.output and "(of 4" in one_width.output or "4 rows" in one_width.output
    assert len(client.search_model_versions("name = 'qid-law'")) == 2


def test_a_checkpoint_artifact_is_swept_by_its_runs_uri(zoo_store):
    uri, result, _ = zoo_store
    last = result["checkpoints"][-1]
    swept = CliRunner().invoke(cli, ["sweep", "--models", f"runs:/{last['run_id']}/checkpoint", "--formats",
                                     "int4_g32", "--methods", "rtn", "--dataset", "python-docs", "--max-windows", "2",
                                     "--landscape-step", "0", "--no-catalog", "--experiment", "from-artifacts",
                                     "--tracking-uri", uri, "--json"])
    assert swept.exit_code == 0, swept.output
    (model,) = json.loads(swept.stdout).values()
    (metrics,) = model.values()
    assert metrics["nll_rtn"] > 0  # measured from the downloaded checkpoint
    bad = CliRunner().invoke(cli, ["sweep", "--models", "runs:/0123456789abcdef/checkpoint", "--tracking-uri", uri])
    assert bad.exit_code == 2 and "could not download model runs:/0123456789abcdef/checkpoint" in bad.output


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, tokenizer, docs_text):
    from pipelines.zoo.training import train_size

    preset = ZooPreset("resume", (ZooSize("xs", 32, 1, 2),), max_tokens=16 * 64 * 12, checkpoints=3,
                       vocab_size=512, seq_len=64, batch=16)
    stream = torch.tensor(tokenizer(docs_text[:60_000], add_special_tokens=False)["input_ids"]).numpy()

    def evaluate(model):
        return 1.0, 1.0

    class Stop(Exception):
        pass

    def stop_after_first(folder):
        raise Stop

    with pytest.raises(Stop):
        train_size(preset.sizes[0], preset, tokenizer, stream, evaluate, tmp_path / "a", seed=0,
                   on_checkpoint=stop_after_first, say=lambda m: None)
    resumed = train_size(preset.sizes[0], preset, tokenizer, stream, evaluate, tmp_path / "a", seed=0,
                         say=lambda m: None)
    straight = train_size(preset.sizes[0], preset, tokenizer, stream, evaluate, tmp_path / "b", seed=0,
                          say=lambda m: None)
    assert [p.name for p in resumed] == [p.name for p in straight] == ["step0000003", "step0000006", "step0000012"]
    from safetensors.torch import load_file

    a, b = load_file(resumed[-1] / "model.safetensors"), load_file(straight[-1] / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (resumed[0] / "trainer_state.pt").exists() and (resumed[-1] / "trainer_state.pt").exists()


def test_learning_rate_warms_up_then_decays_to_its_floor():
    preset = PRESETS["cpu-small"]
    steps = preset.total_steps
    rates = [learning_rate(s, preset) for s in range(steps)]
    peak = max(rates)
    assert peak == pytest.approx(preset.lr) and rates[0] < peak / 10
    assert rates[-1] == pytest.approx(preset.lr * preset.min_lr, rel=0.01)
    assert preset.checkpoint_steps()[-1] == steps and len(preset.checkpoint_steps()) == 7


@pytest.mark.parametrize("args, message", [
    (["--dataset", "./no-such-corpus.txt"], "no such file or folder: ./no-such-corpus.txt"),
    (["--device", "tpu"], "--device takes auto, cpu, cuda or cuda:N, not 'tpu'"),
    (["--preset", "huge"], "Invalid value for '--preset'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tracking_uri):
    result = CliRunner().invoke(cli, ["zoo", "--preset", "test", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
