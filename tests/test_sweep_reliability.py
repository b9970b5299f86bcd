"""Nothing is lost or done twice: sweeps SIGKILLed at random points, and sweeps racing each other.

Real subprocesses of `python -m advisor sweep` on a tiny local model and a real sqlite store
(the tracking-server variants of these live in test_team_server.py).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from tests.test_sweep import ROOT, runs, sweep_args


def _start(cmd, cwd: Path, log_name: str, stdout_name: str | None = None):
    log = open(cwd / log_name, "w")
    out = open(cwd / stdout_name, "w") if stdout_name else log
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=log, start_new_session=True)


def _variants(uri, experiment="t"):
    _, all_runs = runs(uri, experiment)
    return [r for r in all_runs if r.data.tags.get("ptq.kind") == "variant"], all_runs


def assert_exactly_once(uri, expected: int, experiment="t"):
    """One FINISHED run per variant key, `expected` keys, and nothing left RUNNING."""
    variants, all_runs = _variants(uri, experiment)
    done = [r for r in variants if r.info.status == "FINISHED"]
    keys = [r.data.tags["ptq.variant_key"] for r in done]
    assert len(keys) == len(set(keys)) == expected, sorted(keys)
    assert {r.info.status for r in variants} <= {"FINISHED", "KILLED"}, [r.info.status for r in variants]
    # every FINISHED variant hangs under a live parent that holds the fp loss
    parents = {r.info.run_id: r for r in all_runs if r.data.tags.get("ptq.kind") == "model"}
    # the fp loss and landscape were measured once per model too: one FINISHED claim per parent
    setups = [r for r in all_runs if r.data.tags.get("ptq.kind") == "setup"]
    assert sorted(r.data.tags["mlflow.parentRunId"] for r in setups if r.info.status == "FINISHED") == \
        sorted(parents), [(r.info.status, r.data.tags.get("mlflow.parentRunId")) for r in setups]
    assert {r.info.status for r in setups} <= {"FINISHED", "KILLED"}
    for run in done:
        parent = parents[run.data.tags["mlflow.parentRunId"]]
        assert "nll_fp" in parent.data.metrics
        assert abs(run.data.metrics["delta_nll"] - (run.data.metrics["nll"] - parent.data.metrics["nll_fp"])) < 1e-9


def kill_at_random_points_then_resume(model_dir, corpus_file, uri, cwd: Path, *, experiment="t", kills=3,
                                      seed=20261124, window=(2.0, 14.0)):
    """SIGKILL `kills` sweeps wherever they are, run one to the end, then check nothing is lost or doubled."""
    formats = "mxint4_32,mxint3_32,mxfp4_e2m1_32,int4_chan"
    cmd = [sys.executable, "-m", "advisor", *sweep_args(model_dir, corpus_file, uri, formats, experiment)]
    MlflowClient(tracking_uri=uri).create_experiment(experiment)  # the schema exists before processes share it
    rng = random.Random(seed)
    for attempt in range(kills):  # killed while loading, while measuring, between runs: wherever it lands
        proc = _start(cmd, cwd, f"killed-{attempt}.log")
        time.sleep(rng.uniform(*window))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    result = subprocess.run(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(uri, 8, experiment)


def two_overlapping_sweeps_at_once(model_dir, corpus_file, uri, cwd: Path, *, experiment="t"):
    """Start two sweeps sharing 4 of their 6 variants in the same instant; each shared one is measured once."""
    MlflowClient(tracking_uri=uri).create_experiment(experiment)
    first = [sys.executable, "-m", "advisor",
             *sweep_args(model_dir, corpus_file, uri, "mxint4_32,mxint3_32,int4_chan", experiment)]
    second = [sys.executable, "-m", "advisor",
              *sweep_args(model_dir, corpus_file, uri, "mxint3_32,int4_chan,mxfp4_e2m1_32", experiment)]
    procs = [_start([*first, "--json"], cwd, "first.log", "first.json"),
             _start([*second, "--json"], cwd, "second.json.log", "second.json")]
    for proc, log in zip(procs, ("first.log", "second.json.log")):
        assert proc.wait(timeout=600) == 0, (cwd / log).read_text()[-3000:]
    assert_exactly_once(uri, 8, experiment)  # 4 formats x 2 methods, the 4 shared ones measured once
    # each sweep answers for all of its variants, and both give the one run's numbers for shared ones
    a, b = ([*json.loads((cwd / f).read_text()).values()][0] for f in ("first.json", "second.json"))
    assert len(a) == len(b) == 6 and all(a.values()) and all(b.values())
    shared = set(a) & set(b)
    assert len(shared) == 4 and all(a[n]["nll"] == b[n]["nll"] for n in shared)


def test_a_sweep_killed_at_random_points_resumes_to_exactly_one_run_per_variant(trained_model_dir, corpus_file,
                                                                                 tmp_path):
    kill_at_random_points_then_resume(trained_model_dir, corpus_file, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


def test_two_sweeps_of_overlapping_variants_at_once_measure_each_once(trained_model_dir, corpus_file, tmp_path):
    two_overlapping_sweeps_at_once(trained_model_dir, corpus_file, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
