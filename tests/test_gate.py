"""`advisor gate` on a real store holding two exported versions: pass, fail, error — fail closed."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from advisor.cli import cli

FAST = ["--seq-len", "64", "--max-windows", "3", "--calibration-size", "4", "--method", "rtn"]


@pytest.fixture(scope="module")
def export_store(tmp_path_factory, trained_model_dir, corpus_file, _migrated_store):
    """Versions 1 (mxint8_32) and 2 (mxint3_32, worse) of the tiny model, exported and registered."""
    root = tmp_path_factory.mktemp("gate")
    shutil.copyfile(_migrated_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    for fmt in ("mxint8_32", "mxint3_32"):
        result = CliRunner().invoke(cli, ["export", str(trained_model_dir), "--format", fmt, "--out",
                                          str(root / fmt), "--dataset", str(corpus_file),
                                          "--tracking-uri", uri, *FAST])
        assert result.exit_code == 0, result.output
    return root / "mlflow.db", trained_model_dir.name.lower()


@pytest.fixture
def store(export_store, tmp_path, monkeypatch):
    path, name = export_store
    shutil.copyfile(path, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield name
    mlflow.end_run()


def gate(*args):
    return CliRunner().invoke(cli, ["gate", *args])


def test_pass_writes_the_verdict_and_moves_the_alias(store, tmp_path):
    result = gate(f"{store}/1", "--max-nll", "100", "--max-bytes", "1GB", "--min-sqnr", "20",
                  "--promote", "production", "--report", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"{store}/1: PASS; alias production moved here"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] and [c["metric"] for c in report["checks"]] == ["nll", "bytes", "sqnr_db"]
    client = mlflow.MlflowClient()
    version = client.get_model_version(store, "1")
    assert version.tags["gate.verdict"] == "pass" and version.aliases == ["production"]
    logged = mlflow.artifacts.load_dict(f"runs:/{version.tags['gate.run_id']}/gate_report.json")
    assert logged["checks"] == report["checks"]


@pytest.mark.parametrize("args, failing", [
    (["--max-nll", "0.1"], "nll"), (["--max-delta-nll", "0"], "delta_nll"),
    (["--max-bytes", "10KB"], "bytes"), (["--min-sqnr", "99"], "sqnr_db"),
])
def test_each_threshold_can_fail_and_changes_nothing(store, args, failing):
    before = mlflow.MlflowClient().get_model_version(store, "2")
    result = gate(f"{store}/2", *args, "--promote", "production", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["passed"] and [c["metric"] for c in report["checks"] if not c["passed"]] == [failing]
    version = mlflow.MlflowClient().get_model_version(store, "2")
    assert version.tags == before.tags and version.aliases == []  # a failing gate changes nothing
    logged = mlflow.artifacts.load_dict(f"runs:/{report['run_id']}/gate_report.json")  # its verdict is its run's
    assert not logged["passed"] and logged["version"] == f"{store}/2"


def test_baseline_comparison_both_ways(store):
    worse_vs_better = gate(f"{store}/2", "--baseline", f"{store}/1", "--max-nll-increase", "0", "--json")
    assert worse_vs_better.exit_code == 1
    check = json.loads(worse_vs_better.stdout)["checks"][0]
    assert check["value"] > check["baseline"] and check["rule"] == "≤ baseline + 0"
    better_vs_worse = gate(f"{store}/1", "--baseline", f"{store}/2", "--min-nll-improvement", "1e-6", "--json")
    assert better_vs_worse.exit_code == 0, better_vs_worse.output
    assert json.loads(better_vs_worse.stdout)["checks"][0]["min_absolute_change"] == 1e-6
    tolerant = gate(f"{store}/2", "--baseline", f"{store}/1", "--max-nll-increase-rel", "0.5")
    assert tolerant.exit_code == 0, tolerant.output


def test_require_measured_re_evaluates_the_artifact(store):
    result = gate(f"{store}/1", "--max-delta-nll", "0.5", "--require", "measured", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    recorded = float(mlflow.MlflowClient().get_model_version(store, "1").tags["nll_measured"])
    assert report["nll_source"].startswith("re-measured now with onnxruntime")
    assert report["metrics"]["nll"] == pytest.approx(recorded, rel=1e-6)  # the same windows as at export
    fp = float(mlflow.MlflowClient().get_model_version(store, "1").tags["nll_fp"])
    assert report["metrics"]["delta_nll"] == pytest.approx(recorded - fp, abs=1e-6)


def test_errors_fail_closed_with_exit_2(store):
    client = mlflow.MlflowClient()
    client.delete_model_version_tag(store, "2", "sqnr_db")
    client.set_model_version_tag(store, "1", "nll_measured", "nan")
    cases = {
        (f"{store}/9", "--max-nll", "100"): "has no version 9",
        (f"{store}@production", "--max-nll", "100"): "has no alias 'production'",
        ("nonsense", "--max-nll", "100"): "is not a model version",
        (f"{store}/2", "--min-sqnr", "1"): "metric sqnr_db is missing or NaN",
        (f"{store}/1", "--max-nll", "100"): "metric nll is missing or NaN",
        (f"{store}/2",): "no threshold given",
        (f"{store}/2", "--max-bytes", "8XB"): "--max-bytes '8XB': unknown unit",
        (f"{store}/2", "--max-nll-increase", "0.1"): "compare with --baseline",
        (f"{store}/2", "--max-nll", "100", "--require", "predicted"): "has no predicted NLL",
        (f"{store}/2", "--max-nll", "100", "--tracking-uri", "http://127.0.0.1:9"): "does not answer",
        (f"{store}/2", "--max-nll", "nan"): "--max-nll must be a finite number >= 0, not nan",
        (f"{store}/2", "--max-delta-nll", "-0.1"): "--max-delta-nll must be a finite number >= 0",
        (f"{store}/2", "--min-sqnr", "inf"): "--min-sqnr must be a finite number >= 0, not inf",
    }
    for args, message in cases.items():
        result = gate(*args)
        assert result.exit_code == 2, (args, result.output)
        last = result.output.splitlines()[-1]
        assert last.startswith("Error: ") and message in last, (args, last)
        assert "Traceback" not in result.output
    assert client.get_model_version(store, "2").aliases == []


def test_a_report_that_cannot_be_written_stops_the_gate_before_anything_changes(store, tmp_path):
    client = mlflow.MlflowClient()
    before = client.get_model_version(store, "1")
    for target, message in ((tmp_path / "missing" / "r.json", "does not exist"), (tmp_path, "is a directory")):
        result = gate(f"{store}/1", "--max-nll", "100", "--promote", "staging", "--report", str(target))
        assert result.exit_code == 2 and message in result.output.splitlines()[-1], result.output
        assert "Traceback" not in result.output
    after = client.get_model_version(store, "1")
    assert after.tags == before.tags and after.aliases == before.aliases == []


def test_recorded_mode_refuses_a_version_whose_artifacts_are_gone(store):
    client = mlflow.MlflowClient()
    folder = Path(client.get_model_version_download_uri(store, "1").removeprefix("file://"))
    kept = folder.with_name(folder.name + ".kept")
    folder.rename(kept)  # the copied store shares the module store's artifact folder: put it back after
    try:
        result = gate(f"{store}/1", "--max-nll", "100", "--promote", "production")
    finally:
        kept.rename(folder)
    assert result.exit_code == 2, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith(f"Error: {store}/1") and "export it again" in last
    assert client.get_model_version(store, "1").aliases == []
