"""Sweeps on a tiny local model into a temporary sqlite store, checked through MlflowClient."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from advisor.cli import cli

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max-windows", "3", "--calibration-size", "4", "--damp", "0.01", "--seq-len", "64",
        "--landscape-step", "20"]


def sweep_args(model_dir, corpus_file, uri, formats="mxint4_32,int4_chan", experiment="t"):
    return ["sweep", "--models", str(model_dir), "--formats", formats, "--dataset", str(corpus_file),
            "--tracking-uri", uri, "--experiment", experiment, *FAST]


def runs(uri, experiment="t"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_sweep_logs_a_parent_per_model_and_a_child_per_variant(trained_model_dir, corpus_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri) + ["--json"])
    assert result.exit_code == 0, result.output
    client, all_runs = runs(uri)
    parents = [r for r in all_runs if r.data.tags.get("ptq.kind") == "model"]
    children = [r for r in all_runs if r.data.tags.get("ptq.kind") == "variant"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dataset_digest"] and parent.data.params["seq_len"] == "64"
    assert parent.data.metrics["nll_fp"] > 0 and parent.data.metrics["quantized_params"] > 0
    assert parent.data.params["arch.layers"] == "2" and parent.data.params["arch.kv_heads"] == "2"
    assert parent.data.params["arch.context_length"] == "128"
    assert parent.data.metrics["quantized_params"] < parent.data.metrics["non_embedding_params"] \
        < parent.data.metrics["total_params"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "plots")] == \
        ["plots/nll_vs_sqnr_and_bytes.png", "plots/variants.csv"]
    landscape = {a.path for a in client.list_artifacts(parent.info.run_id, "landscape")}
    assert {"landscape/profile.csv", "landscape/profile.png"} <= landscape
    names = sorted(r.info.run_name for r in children)
    model = Path(trained_model_dir).name
    assert names == sorted(f"{model} · {f} · {m}" for f in ("mxint4_32", "int4_chan")
                           for m in ("rtn", "gptq"))
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["method"] in ("rtn", "gptq")
        m = child.data.metrics
        assert m["nll"] > 0 and m["sqnr_db"] > 0 and m["bytes"] > 0
        assert abs(m["delta_nll"] - (m["nll"] - parent.data.metrics["nll_fp"])) < 1e-9
        assert "layers_sqnr.json" in [a.path for a in client.list_artifacts(child.info.run_id)]
        seconds = "seconds_rtn" if child.data.params["method"] == "rtn" else "seconds_gptq"
        assert m[seconds] > 0 and "logical cores" in child.data.tags["ptq.machine"]  # timed, and where
    rtn = next(r for r in children if r.info.run_name.endswith("mxint4_32 · rtn"))
    assert rtn.data.params["precision"] == "4" and rtn.data.params["block_size"] == "32"
    assert rtn.data.metrics["slope_rtn"] == rtn.data.metrics["slope_rtn"]  # not NaN
    # a sweep of some of the same formats reuses their runs; the model's plots still show every variant
    again = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri, formats="int4_chan"))
    assert again.exit_code == 0, again.output
    assert again.output.count("reused run") == 2
    plotted = client.download_artifacts(parent.info.run_id, "plots/variants.csv", str(tmp_path))
    lines = Path(plotted).read_text().splitlines()
    assert lines[0] == "format,method,sqnr_db,nll,bytes"
    assert sorted(line.split(",", 2)[1] + " " + line.split(",", 2)[0] for line in lines[1:]) == \
        ["gptq int4_chan", "gptq mxint4_32", "rtn int4_chan", "rtn mxint4_32"]
    # parent, 4 variants, and the run that claimed the fp loss + landscape (timed there)
    _, all_runs = runs(uri)
    setup = [r for r in all_runs if r.data.tags.get("ptq.kind") == "setup"]
    assert len(all_runs) == 6 and len(setup) == 1 and setup[0].info.status == "FINISHED"
    assert setup[0].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert setup[0].data.metrics["seconds_fp"] > 0 and setup[0].data.metrics["seconds_landscape"] > 0
    # the landscape's files lost by hand: the next sweep retires the stale claim and measures it again
    artifacts = Path(client.get_run(parent.info.run_id).info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "mlflow-artifacts")  # beside the store, not in the cwd
    shutil.rmtree(artifacts / "landscape")
    third = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri, formats="int4_chan"))
    assert third.exit_code == 0 and "radial loss landscape" in third.output, third.output
    assert "landscape/profile.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "landscape")}
    _, all_runs = runs(uri)
    setup = sorted((r for r in all_runs if r.data.tags.get("ptq.kind") == "setup"), key=lambda r: r.info.start_time)
    assert [r.info.status for r in setup] == ["KILLED", "FINISHED"] and "ptq.stale" in setup[0].data.tags
    assert "seconds_fp" not in setup[1].data.metrics  # the fp loss was still on the parent


def test_bad_inputs_leave_no_run(trained_model_dir, corpus_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cases = [
        (sweep_args("./missing-model", corpus_file, uri), "no such model file or folder"),
        (sweep_args(trained_model_dir, corpus_file, uri, formats="mxint4_0"), "outside 2-1024"),
        (sweep_args(trained_model_dir, corpus_file, uri)[:-2] + ["--seq-len", "100000"],
         "exceeds the model's context"),
        (sweep_args(trained_model_dir, corpus_file, "http://127.0.0.1:9"), "does not answer"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1].startswith("Error: ")
        assert message in result.output.strip().splitlines()[-1]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("t")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_a_killed_sweep_resumes_without_duplicates_or_losses(trained_model_dir, corpus_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    formats = "mxint4_32,mxint3_32,int4_chan"
    cmd = [sys.executable, "-m", "advisor", *sweep_args(trained_model_dir, corpus_file, uri, formats)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    MlflowClient(tracking_uri=uri).create_experiment("t")  # the schema exists before two processes share it
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 240
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            _, all_runs = runs(uri)
        except Exception:
            continue
        finished = sum(r.info.status == "FINISHED" and r.data.tags.get("ptq.kind") == "variant"
                       for r in all_runs)
        if finished >= 2:
            break
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= finished < 6
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    _, all_runs = runs(uri)
    variants = [r for r in all_runs if r.data.tags.get("ptq.kind") == "variant"]
    done = [r for r in variants if r.info.status == "FINISHED"]
    assert len({r.data.tags["ptq.variant_key"] for r in done}) == len(done) == 6
    assert all(r.info.status in ("FINISHED", "KILLED") for r in variants)
    assert result.stderr.count("reused run") >= 2
    assert sum(r.data.tags.get("ptq.kind") == "model" for r in all_runs) == 1


def test_mlflow_run_sweep_entry_point(trained_model_dir, corpus_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "sweep",
           "--env-manager", "local", "--experiment-name", "t",
           "-P", f"models={trained_model_dir}", "-P", "formats=mxint4_32", "-P", "methods=rtn",
           "-P", f"dataset={corpus_file}", "-P", "max_windows=2", "-P", "experiment=t"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _, all_runs = runs(uri)
    variant = [r for r in all_runs if r.data.tags.get("ptq.kind") == "variant"]
    assert len(variant) == 1 and variant[0].info.status == "FINISHED"
    project = [r for r in all_runs if r.data.tags.get("mlflow.project.entryPoint") == "sweep"]
    assert len(project) == 1


def test_models_file_names_families_and_training_tokens(trained_model_dir, corpus_file, tmp_path):
    from pipelines.sources.model_set import ModelSetError, load_model_set

    (tmp_path / "m.yaml").write_text(f"models:\n  - id: {trained_model_dir}\n    family: tiny\n"
                                     "    train_tokens: 2.5e5\n    name: tiny-a\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["sweep", "--models-file", str(tmp_path / "m.yaml"), "--formats", "mxint4_32",
            "--methods", "rtn", "--dataset", str(corpus_file), "--tracking-uri", uri,
            "--experiment", "t", *FAST]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    _, all_runs = runs(uri)
    parent = next(r for r in all_runs if r.data.tags.get("ptq.kind") == "model")
    assert parent.info.run_name == "tiny-a" and parent.data.params["family"] == "tiny"
    assert parent.data.metrics["train_tokens"] == 2.5e5
    (tmp_path / "bad.yaml").write_text("models:\n  - id: x\n    colour: red\n")
    with pytest.raises(ModelSetError, match="unknown keys"):
        load_model_set(tmp_path / "bad.yaml")
    bad = CliRunner().invoke(cli, ["sweep", "--models-file", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2 and "unknown keys ['colour']" in bad.output


def test_workers_sweep_models_in_parallel_processes(trained_model_dir, tiny_gpt2, tokenizer,
                                                     corpus_file, tmp_path):
    second = tmp_path / "tiny-gpt2"
    tiny_gpt2.save_pretrained(second)
    tokenizer.save_pretrained(second)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("t")
    args = ["sweep", "--models", f"{trained_model_dir},{second}", "--formats", "mxint4_32,int4_chan",
            "--dataset", str(corpus_file), "--tracking-uri", uri, "--experiment", "t",
            "--workers", "2", *FAST]
    result = subprocess.run([sys.executable, "-m", "advisor", *args], cwd=tmp_path, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    _, all_runs = runs(uri)
    parents = [r for r in all_runs if r.data.tags.get("ptq.kind") == "model"]
    variants = [r for r in all_runs if r.data.tags.get("ptq.kind") == "variant"]
    assert len(parents) == 2 and len(variants) == 8
    assert all(r.info.status == "FINISHED" for r in all_runs)
    by_parent = {p.info.run_id: 0 for p in parents}
    for v in variants:
        by_parent[v.data.tags["mlflow.parentRunId"]] += 1
    assert sorted(by_parent.values()) == [4, 4]


def test_a_failing_variant_is_logged_failed_and_the_sweep_goes_on(trained_model_dir, corpus_file,
                                                                 tmp_path, monkeypatch):
    import pipelines.sweep.model_context as model_context

    measure_gptq = model_context.measure_gptq

    def broken_for_int4_chan(model, fmt, *args, **kwargs):  # a fault injected into one variant
        if fmt.name == "int4_chan":
            raise RuntimeError("Hessian is not positive definite")
        return measure_gptq(model, fmt, *args, **kwargs)

    monkeypatch.setattr(model_context, "measure_gptq", broken_for_int4_chan)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: 1 of 4 variants FAILED: mlflow-free · int4_chan · gptq; the FAILED runs hold the error, "
        "re-run the sweep to retry them".replace("mlflow-free", Path(trained_model_dir).name))
    client, all_runs = runs(uri)
    variants = {r.info.run_name.split(" · ", 1)[1]: r for r in all_runs
                if r.data.tags.get("ptq.kind") == "variant"}
    failed = variants.pop("int4_chan · gptq")
    assert failed.info.status == "FAILED"
    assert failed.data.tags["ptq.error"] == "RuntimeError: Hessian is not positive definite"
    assert "error.txt" in [a.path for a in client.list_artifacts(failed.info.run_id)]
    assert len(variants) == 3 and all(r.info.status == "FINISHED" for r in variants.values())
    parent = next(r for r in all_runs if r.data.tags.get("ptq.kind") == "model")
    assert parent.info.status == "FINISHED"  # the model's other variants and plots are kept

    monkeypatch.setattr(model_context, "measure_gptq", measure_gptq)
    again = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri))
    assert again.exit_code == 0, again.output
    assert again.output.count("reused run") == 3
    _, all_runs = runs(uri)
    finished = [r for r in all_runs if r.data.tags.get("ptq.kind") == "variant"
                and r.info.status == "FINISHED"]
    assert len(finished) == 4 and len({r.data.tags["ptq.variant_key"] for r in finished}) == 4


def test_a_model_whose_fp_loss_fails_reports_its_variants_failed_and_resumes(trained_model_dir, corpus_file,
                                                                            tmp_path, monkeypatch):
    import pipelines.sweep.run_tree as run_tree

    evaluate_nll = run_tree.evaluate_nll

    def out_of_memory(*args, **kwargs):  # a fault injected into the model's fp evaluation
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(run_tree, "evaluate_nll", out_of_memory)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri))
    assert result.exit_code == 1, result.output
    assert "fp + landscape: FAILED (RuntimeError: CUDA" in result.output
    assert result.output.splitlines()[-1].startswith("Error: 4 of 4 variants FAILED: ")
    assert result.output.splitlines()[-1].endswith("the FAILED runs hold the error, re-run the sweep to retry them")
    client, all_runs = runs(uri)
    kinds = sorted((r.data.tags.get("ptq.kind"), r.info.status) for r in all_runs)
    assert kinds == [("model", "FINISHED"), ("setup", "FAILED")]  # no variant measured without an fp loss
    setup = next(r for r in all_runs if r.data.tags["ptq.kind"] == "setup")
    assert setup.data.tags["ptq.error"] == "RuntimeError: CUDA out of memory"

    monkeypatch.setattr(run_tree, "evaluate_nll", evaluate_nll)
    again = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri))
    assert again.exit_code == 0, again.output
    _, all_runs = runs(uri)
    kinds = sorted((r.data.tags.get("ptq.kind"), r.info.status) for r in all_runs)
    assert kinds == [("model", "FINISHED"), ("setup", "FAILED"), ("setup", "FINISHED"),
                     *[("variant", "FINISHED")] * 4]
    parent = next(r for r in all_runs if r.data.tags["ptq.kind"] == "model")
    assert parent.data.metrics["nll_fp"] > 0


def test_landscape_command_logs_random_and_rtn_profiles(trained_model_dir, corpus_file, tracking_uri):
    import json

    args = ["landscape", str(trained_model_dir), "--dataset", str(corpus_file), "--formats", "mxint3_32",
            "--seeds", "0,1", "--step", "10", "--max-db", "30", "--max-windows", "2", "--seq-len", "64",
            "--experiment", "land", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["points"]) == 3 * 4  # random-0, random-1, rtn mxint3_32 × {0, 10, 20, 30} dB
    client, all_runs = runs(tracking_uri, "land")
    (run,) = all_runs
    assert run.info.status == "FINISHED" and run.data.tags["ptq.kind"] == "landscape"
    assert run.data.metrics["sqnr_rtn_db.mxint3_32"] == report["sqnr_rtn_db"]["mxint3_32"] > 0
    assert {a.path for a in client.list_artifacts(run.info.run_id, "landscape")} == \
        {"landscape/profile.csv", "landscape/profile.json", "landscape/profile.png"}
    by = {(p["direction"], p["snr_db"]): p["nll"] for p in report["points"]}
    # 0 dB noise is as large as the weights: clearly worse than fp; 30 dB is close to fp
    assert by[("random-0", 0.0)] > by[("random-0", 10.0)] > report["nll_fp"]
    assert by[("random-0", 0.0)] > report["nll_fp"] + 0.1
    assert abs(by[("random-0", 30.0)] - report["nll_fp"]) < 0.05
    bad = CliRunner().invoke(cli, ["landscape", str(trained_model_dir), "--seeds", "a,b"])
    assert bad.exit_code == 2 and bad.output == "Error: --seeds takes comma-separated integers, not 'a,b'\n"


def test_a_sweep_grows_the_candidate_catalog(sweep_store, tmp_path):
    from registry.catalog.entries import load_seed
    from registry.catalog.registered import load_catalog
    from store.keys import use_store

    use_store(f"sqlite:///{sweep_store}")  # the catalog's artifacts are read through MLflow's globals
    catalog = load_catalog("current")
    swept = {e.name: e for e in catalog.entries if e.measured_fp is not None}
    assert {"llama-64", "llama-48", "gpt2-64"} <= set(swept)
    assert swept["gpt2-64"].architecture == "gpt2" and swept["gpt2-64"].layers == 2
    assert len(catalog.entries) == len(load_seed()) + 3  # the curated seed, plus the three swept models


def test_gptq_keys_only_gptq_and_fp_hessian_runs_do_not_teach_the_predictor(trained_model_dir, corpus_file,
                                                                           tmp_path, monkeypatch):
    import pipelines.sweep.model_context as model_context
    from registry.predictor.feature_table import TableQuery, build_feature_table

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri, formats="mxint4_32"))
    assert first.exit_code == 0, first.output
    # a change to GPTQ's code (a new code version of pipelines/gptq) re-measures GPTQ only
    monkeypatch.setattr(model_context, "method_code_version",
                        lambda method: "changed" if method == "gptq" else None)
    again = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri, formats="mxint4_32"))
    assert again.exit_code == 0, again.output
    assert "mxint4_32 · rtn: reused run" in again.output and "mxint4_32 · gptq: measuring" in again.output
    # the same model swept with fp-network Hessians: a new parent, whose GPTQ loss is no target
    fp = CliRunner().invoke(cli, sweep_args(trained_model_dir, corpus_file, uri, formats="mxint4_32",
                                            experiment="fp") + ["--hessians", "fp"])
    assert fp.exit_code == 0, fp.output
    client = MlflowClient(tracking_uri=uri)
    table = build_feature_table(TableQuery(("fp",)), client)
    assert table["nll_gptq"].isna().all() and table["nll_rtn"].notna().all()
    assert build_feature_table(TableQuery(("fp",), hessians=None), client)["nll_gptq"].notna().all()
    assert build_feature_table(TableQuery(("t",)), client)["nll_gptq"].notna().all()


def test_concurrent_sweeps_share_the_cores(tmp_path, monkeypatch):
    import os

    import torch

    from pipelines.sweep.core_share import fair_share_of_cores, live_sweeps

    folder = tmp_path / "cache" / "running-sweeps"
    folder.mkdir(parents=True)
    (folder / f"{os.getppid()}.sweep").write_text("")  # another live sweep on this machine
    (folder / "999999999.sweep").write_text("")  # a dead one: removed, not counted
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        with fair_share_of_cores() as threads:
            assert threads == 4 and torch.get_num_threads() == 4
            assert live_sweeps(folder) == 2 and not (folder / "999999999.sweep").exists()
        assert torch.get_num_threads() == 8 and not (folder / f"{os.getpid()}.sweep").exists()
    finally:
        torch.set_num_threads(before)
