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


def _variants(uri):
    _, all_runs = runs(uri)
    return [r for r in all_runs if r.data.tags.get("ptq.kind") == "variant"], all_runs


def assert_exactly_once(uri, expected: int):
    """One FINISHED run per variant key, `expected` keys, and nothing left RUNNING."""
    variants, all_runs = _variants(uri)
    done = [r for r in variants if r.info.status == "FINISHED"]
    keys = [r.data.tags["ptq.variant_key"] for r in done]
    assert len(keys) == len(set(keys)) == expected, sorted(keys)
    assert {r.info.status for r in variants} <= {"FINISHED", "KILLED"}, [r.info.status for r in variants]
    # every FINISHED variant hangs under a live parent that holds the fp loss
    parents = {r.info.run_id: r for r in all_runs if r.data.tags.get("ptq.kind") == "model"}
    for run in done:
        parent = parents[run.data.tags["mlflow.parentRunId"]]
        assert "nll_fp" in parent.data.metrics
        assert abs(run.data.metrics["delta_nll"] - (run.data.metrics["nll"] - parent.data.metrics["nll_fp"])) < 1e-9


def test_a_sweep_killed_at_random_points_resumes_to_exactly_one_run_per_variant(trained_model_dir, corpus_file,
                                                                                 tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    formats = "mxint4_32,mxint3_32,mxfp4_e2m1_32,int4_chan"
    cmd = [sys.executable, "-m", "advisor", *sweep_args(trained_model_dir, corpus_file, uri, formats)]
    MlflowClient(tracking_uri=uri).create_experiment("t")  # the schema exists before processes share it
    rng = random.Random(20261124)
    for attempt in range(3):  # killed while loading, while measuring, between runs: wherever it lands
        proc = _start(cmd, tmp_path, f"killed-{attempt}.log")
        time.sleep(rng.uniform(2.0, 14.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    result = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_exactly_once(uri, 8)


def test_two_sweeps_of_overlapping_variants_at_once_measure_each_once(trained_model_dir, corpus_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("t")
    first = [sys.executable, "-m", "advisor",
             *sweep_args(trained_model_dir, corpus_file, uri, "mxint4_32,mxint3_32,int4_chan")]
    second = [sys.executable, "-m", "advisor",
              *sweep_args(trained_model_dir, corpus_file, uri, "mxint3_32,int4_chan,mxfp4_e2m1_32")]
    procs = [_start([*first, "--json"], tmp_path, "first.log", "first.json"),
             _start([*second, "--json"], tmp_path, "second.json.log", "second.json")]
    for proc, log in zip(procs, ("first.log", "second.json.log")):
        assert proc.wait(timeout=600) == 0, (tmp_path / log).read_text()[-3000:]
    assert_exactly_once(uri, 8)  # 4 formats x 2 methods, the 4 shared ones measured once
    # each sweep answers for all of its variants, and both give the one run's numbers for shared ones
    a, b = ([*json.loads((tmp_path / f).read_text()).values()][0] for f in ("first.json", "second.json"))
    assert len(a) == len(b) == 6 and all(a.values()) and all(b.values())
    shared = set(a) & set(b)
    assert len(shared) == 4 and all(a[n]["nll"] == b[n]["nll"] for n in shared)
