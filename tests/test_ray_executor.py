"""`advisor sweep --executor ray`: one Ray task per variant on a real local Ray cluster."""

import json

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from advisor.cli import cli
from tests.test_sweep import runs, sweep_args

FORMATS = "mxint4_32,int4_chan"


def _by_name(uri, experiment="t"):
    _, all_runs = runs(uri, experiment)
    return {r.info.run_name: r for r in all_runs}


def ray_sweep_matches_local(model_dir, corpus_file, local_uri, ray_uri, experiments=("t", "t"), resume=True):
    """Sweep locally and with Ray: same variants, keys and numbers, children under the parent; Ray resumes."""
    local_exp, ray_exp = experiments
    local = CliRunner().invoke(cli, [*sweep_args(model_dir, corpus_file, local_uri, FORMATS, local_exp), "--json"])
    assert local.exit_code == 0, local.output
    ray_cmd = [*sweep_args(model_dir, corpus_file, ray_uri, FORMATS, ray_exp), "--executor", "ray", "--json"]
    swept = CliRunner().invoke(cli, ray_cmd)
    assert swept.exit_code == 0, swept.output
    ray_result, local_result = (next(iter(json.loads(r.stdout).values())) for r in (swept, local))
    assert set(ray_result) == set(local_result) and len(ray_result) == 4
    ray_runs, local_runs = _by_name(ray_uri, ray_exp), _by_name(local_uri, local_exp)
    parent = next(r for r in ray_runs.values() if r.data.tags.get("ptq.kind") == "model")
    assert parent.info.status == "FINISHED" and "nll_fp" in parent.data.metrics
    client = MlflowClient(ray_uri)
    assert "plots/nll_vs_sqnr_and_bytes.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    for name, metrics in ray_result.items():
        run, twin = ray_runs[name], local_runs[name]
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # the same variant key: a Ray-measured variant and a local one are interchangeable
        assert run.data.tags["ptq.variant_key"] == twin.data.tags["ptq.variant_key"]
        assert run.data.tags["ptq.owner"] != twin.data.tags["ptq.owner"]  # measured by a Ray worker
        for metric in ("nll", "sqnr_db", "bytes", "bits_per_weight"):
            assert metrics[metric] == pytest.approx(local_result[name][metric], rel=1e-5, abs=1e-5), (name, metric)

    if not resume:
        return
    # resumable like the local sweep: a second Ray sweep reuses every variant, logging nothing new
    again = CliRunner().invoke(cli, ray_cmd)
    assert again.exit_code == 0, again.output
    assert ({n: r.info.run_id for n, r in _by_name(ray_uri, ray_exp).items()}
            == {n: r.info.run_id for n, r in ray_runs.items()})


def test_ray_sweep_logs_each_variant_under_its_parent_with_the_local_numbers(trained_model_dir, corpus_file,
                                                                             tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    local_uri, ray_uri = (f"sqlite:///{tmp_path / name}" for name in ("local.db", "ray.db"))
    ray_sweep_matches_local(trained_model_dir, corpus_file, local_uri, ray_uri)


@pytest.mark.parametrize("extra, message", [
    (["--executor", "ray", "--workers", "2"], "--workers is for --executor local"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--ray-address", "ray://127.0.0.1:1"], "cannot reach the local store"),
])
def test_ray_flag_conflicts_are_one_line_errors(trained_model_dir, corpus_file, tmp_path, extra, message):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, [*sweep_args(trained_model_dir, corpus_file, uri, FORMATS), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
