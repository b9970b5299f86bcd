"""A process killed at the worst moment leaves nothing that a resume does not repair.

Each window is hit deterministically: PTQ_ADVISOR_FAULT=<point> ends the process at that exact
step, as a SIGKILL would (store/faults.py), then the same command runs again. Windows covered
(add the next one here, with its fault point and test):
- sweep.parent_created      a model's parent run exists, its params and dataset are not logged yet
- registry.law_registered   `advisor seed` registered qid-law v1, its tags and `current` alias not yet set
- recommendation.logging    a recommendation's run is started and half logged (left RUNNING); the next
                            command that opens the store marks it KILLED (store/short_runs.py)
Concurrency windows (three first commands on a fresh store) are in test_store_faults.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mlflow import MlflowClient

FAST = ["--max-windows", "3", "--calibration-size", "4", "--damp", "0.01", "--seq-len", "64", "--landscape-step", "0"]


def advisor(*args, fault=None, timeout=600):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("PTQ_ADVISOR_FAULT", None)
    if fault:
        env["PTQ_ADVISOR_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_a_sweep_killed_after_creating_a_parent_completes_it_on_resume(trained_model_dir, corpus_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["sweep", "--models", str(trained_model_dir), "--formats", "mxint4_32", "--methods", "rtn",
            "--dataset", str(corpus_file), "--tracking-uri", uri, "--experiment", "t", "--no-catalog", *FAST]
    killed = advisor(*args, fault="sweep.parent_created")
    assert killed.returncode == 137, killed.stderr[-2000:]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("t")
    (half,) = client.search_runs([experiment.experiment_id], "tags.`ptq.kind` = 'model'")
    assert "model" not in half.data.params and not half.inputs.dataset_inputs  # the window was hit
    resumed = advisor(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`ptq.kind` = 'model'")
    assert parent.info.run_id == half.info.run_id  # completed, not replaced
    assert parent.data.params["model"] == str(trained_model_dir) and parent.inputs.dataset_inputs
    assert parent.data.params["setting.hessians"] == "sequential"
    variants = client.search_runs([experiment.experiment_id], "tags.`ptq.kind` = 'variant'")
    assert [v.info.status for v in variants] == ["FINISHED"]
    recommend = advisor("recommend", "--memory", "1GB", "--models", "measured", "--methods", "rtn",
                        "--experiment", "t", "--tracking-uri", uri, "--json")
    assert recommend.returncode == 0, recommend.stderr[-2000:]


def test_a_seed_killed_after_registering_a_law_is_repaired_by_the_next_seed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = advisor("seed", "--measured-data", "none", "--tracking-uri", uri, fault="registry.law_registered")
    assert killed.returncode == 137, killed.stderr[-2000:]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (half,) = client.search_model_versions("name = 'qid-law'")
    half = client.get_model_version("qid-law", half.version)
    assert half.aliases == [] and "kind" not in half.tags  # the window was hit
    again = advisor("seed", "--measured-data", "none", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr[-2000:]
    (law,) = client.search_model_versions("name = 'qid-law'")
    law = client.get_model_version("qid-law", law.version)
    assert law.aliases == ["current"] and law.tags["kind"] == "published"
    assert str(client.get_model_version_by_alias("loss16-law", "current").version) == "1"


def test_a_recommendation_killed_while_logging_is_closed_by_the_next_command(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert advisor("seed", "--measured-data", "none", "--no-fit", "--tracking-uri", uri).returncode == 0
    killed = advisor("recommend", "--memory", "8GB", "--tracking-uri", uri, fault="recommendation.logging")
    assert killed.returncode == 137, killed.stderr[-2000:]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ptq-recommendations").experiment_id
    (half,) = client.search_runs([experiment])
    assert half.info.status == "RUNNING" and "ptq.owner" in half.data.tags  # the window was hit
    again = advisor("recommend", "--memory", "8GB", "--tracking-uri", uri)
    assert again.returncode == 0, again.stderr[-2000:]
    assert client.get_run(half.info.run_id).info.status == "KILLED"
    statuses = sorted(r.info.status for r in client.search_runs([experiment]))
    assert statuses == ["FINISHED", "KILLED"]
