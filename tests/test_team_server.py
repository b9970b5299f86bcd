"""The team tracking server (team/tracking-server.sh): real PostgreSQL, real MLflow server, basic auth.

No mocks: every test talks to a server the script started on free ports in a temporary folder.
Without PostgreSQL the server tests skip (fail with PTQ_REQUIRE_TEAM_SERVICES=1, as in CI).
"""

import json
import os
import secrets
import subprocess
import sys
import time

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

from advisor.cli import cli
from tests.team_services import (
    SCRIPT,
    deadline,
    free_port,
    script_env,
    team_server_fixture,
)
from tests.test_gate import FAST as EXPORT_FAST
from tests.test_ray_executor import ray_sweep_matches_local
from tests.test_sweep import FAST as SWEEP_FAST
from tests.test_sweep import ROOT, sweep_args
from tests.test_sweep_reliability import (
    _start,
    _variants,
    assert_exactly_once,
    kill_at_random_points_then_resume,
    two_overlapping_sweeps_at_once,
)

pytestmark = pytest.mark.team

team = team_server_fixture()

FORMATS = "mxint4_32,int4_chan"


def server_client(uri):
    """A client whose registry is the server too: module-scoped fixtures run before the autouse one that
    clears MLflow's process-wide registry URI, which an earlier test module may have left pointing elsewhere."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def login(monkeypatch, credentials):
    """Make MLflow's client send these credentials (None: none at all)."""
    if credentials is None:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", credentials[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials[1])


def refused_start(tmp_path, admin_password, **settings) -> str:
    """`start` with these settings must exit 2 with one line on stderr, before touching anything; that line."""
    state = tmp_path / "state"
    env = script_env(state, pg_port=free_port(), mlflow_port=free_port(), admin_password=admin_password)
    done = subprocess.run(["bash", str(SCRIPT), "start"], env=env | settings, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert not state.exists()  # refused before touching anything
    return done.stderr


@pytest.mark.parametrize("password", [None, "", "password1234"])
def test_the_script_refuses_a_missing_or_published_admin_password(password, tmp_path):
    stderr = refused_start(tmp_path, password)
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in stderr and "Traceback" not in stderr
    if password == "password1234":
        assert "password1234" in stderr


@pytest.mark.parametrize(("variable", "value"), [("PTQ_AUTH_CACHE_TTL", "1m"), ("PTQ_AUTH_CACHE_TTL", "-5"),
                                               ("PTQ_MLFLOW_WORKERS", "0"), ("PTQ_PG_PORT", "70000")])
def test_the_script_refuses_a_bad_setting_in_one_line(variable, value, tmp_path):
    stderr = refused_start(tmp_path, f"admin-{secrets.token_hex(8)}", **{variable: value})
    assert variable in stderr and f"'{value}'" in stderr


def test_the_script_is_bash_n_clean():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def guarded(team):
    """Registered model `guarded` (version 1, alias production) and user `reader` with READ on it only.

    Returns the reader's credentials and the (source, run id) a version of `guarded` is made from.
    """
    uri, (user, password) = team
    reader = ("reader", f"reader-{secrets.token_hex(8)}")
    with pytest.MonkeyPatch.context() as mp, deadline(120, "setting up the guarded model"):
        login(mp, (user, password))
        client = server_client(uri)
        run = client.create_run(client.create_experiment("guarded"))
        client.log_text(run.info.run_id, "a stand-in model", "model/README.txt")  # through the proxy
        client.set_terminated(run.info.run_id)
        client.create_registered_model("guarded")
        source = (f"{run.info.artifact_uri}/model", run.info.run_id)
        client.create_model_version("guarded", *source)
        client.set_registered_model_alias("guarded", "production", "1")
        auth = get_app_client("basic-auth", tracking_uri=uri)
        auth.create_user(*reader)
        auth.grant_user_permission(reader[0], "registered_model", "guarded", "READ")
        assert auth.get_user_permission(reader[0], "registered_model", "guarded").permission == "READ"
    return reader, source


def test_an_unauthenticated_client_is_refused_with_401(team, guarded, monkeypatch):
    login(monkeypatch, None)
    client = server_client(team.uri)
    with deadline(60):
        for attempt in (lambda: client.create_model_version("guarded", *guarded[1]),
                        lambda: client.set_registered_model_alias("guarded", "production", "1"),
                        lambda: client.get_registered_model("guarded")):
            with pytest.raises(MlflowException) as refused:
                attempt()
            assert refused.value.error_code == "UNAUTHENTICATED"
            assert "401" in str(refused.value) and "not authenticated" in str(refused.value)


def test_a_wrong_password_is_refused_after_the_right_one_was_cached(team, guarded, monkeypatch):
    """The server caches verified credentials (PTQ_AUTH_CACHE_TTL): the cache must key on the password too."""
    assert "auth_cache_ttl_seconds = 60" in (team.state_dir / "auth.ini").read_text()
    client = server_client(team.uri)
    with deadline(60):
        login(monkeypatch, team.admin)
        for _ in range(4):  # every worker has now verified and cached the admin's password
            assert client.get_registered_model("guarded").name == "guarded"
        login(monkeypatch, (team.admin[0], team.admin[1] + "x"))
        with pytest.raises(MlflowException) as refused:
            client.get_registered_model("guarded")
        assert refused.value.error_code == "UNAUTHENTICATED" and "401" in str(refused.value)


def test_a_reader_can_read_but_not_add_versions_or_move_the_alias(team, guarded, monkeypatch):
    login(monkeypatch, guarded[0])
    client = server_client(team.uri)
    with deadline(60):
        assert client.get_registered_model("guarded").aliases == {"production": "1"}
        for attempt in (lambda: client.create_model_version("guarded", *guarded[1]),
                        lambda: client.set_registered_model_alias("guarded", "production", "1"),
                        lambda: client.delete_registered_model_alias("guarded", "production")):
            with pytest.raises(MlflowException) as refused:
                attempt()
            assert refused.value.error_code == "PERMISSION_DENIED" and "403" in str(refused.value)
        login(monkeypatch, team.admin)
        assert [v.version for v in client.search_model_versions("name = 'guarded'")] == ["1"]


def test_the_admin_can_add_a_version_and_move_the_alias(team, guarded, monkeypatch):
    login(monkeypatch, team.admin)
    client = server_client(team.uri)
    with deadline(60):
        version = client.create_model_version("guarded", *guarded[1])
        assert version.version == "2"
        client.set_registered_model_alias("guarded", "production", version.version)
        assert client.get_registered_model("guarded").aliases == {"production": version.version}
        client.delete_registered_model_alias("guarded", "production")  # leave the other tests' state
        client.set_registered_model_alias("guarded", "production", "1")


def test_restarting_only_mlflow_keeps_users_grants_models_and_artifacts(team, guarded, monkeypatch, tmp_path):
    (reader, (source, run_id)) = guarded
    postgres_pid = (team.state_dir / "pids" / "postgres.pid").read_text()
    mlflow_pid = (team.state_dir / "pids" / "mlflow.pid").read_text()
    with deadline(300):
        team.restart_mlflow()
        assert (team.state_dir / "pids" / "mlflow.pid").read_text() != mlflow_pid
        assert (team.state_dir / "pids" / "postgres.pid").read_text() == postgres_pid  # untouched
        status = team.run("status")
        assert status.returncode == 0 and status.stdout.count(": running") == 2, status.stdout
        client = server_client(team.uri)
        login(monkeypatch, reader)
        with pytest.raises(MlflowException, match="403"):
            client.set_registered_model_alias("guarded", "production", "1")
        login(monkeypatch, team.admin)
        assert client.get_registered_model("guarded").aliases == {"production": "1"}
        path = client.download_artifacts(run_id, "model/README.txt", str(tmp_path))
        assert open(path).read() == "a stand-in model"


@pytest.fixture
def models_file(tmp_path, trained_model_dir, tiny_gpt2, tokenizer):
    """Two tiny models of two families (leave-one-family-out needs two): the trained Llama and a GPT-2."""
    gpt2 = tmp_path / "tiny-gpt2"
    tiny_gpt2.save_pretrained(gpt2)
    tokenizer.save_pretrained(gpt2)
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  - id: {trained_model_dir}\n    family: llama-tiny\n    name: llama-64\n"
                    f"  - id: {gpt2}\n    family: gpt2-tiny\n    name: gpt2-64\n")
    return path


def test_sweep_fit_recommend_export_gate_through_the_server(team, models_file, trained_model_dir, corpus_file,
                                                            tmp_path, monkeypatch):
    """The whole job against the team server as admin; artifacts go through its proxy into artifacts/."""
    login(monkeypatch, team.admin)
    uri = team.uri
    at = ["--tracking-uri", uri]

    def advisor(*args):
        return CliRunner().invoke(cli, [*args, *at])

    with deadline(1500, "sweep → fit → recommend → export → gate"):
        swept = advisor("sweep", "--models-file", str(models_file), "--formats", FORMATS, "--dataset",
                        str(corpus_file), "--experiment", "ptq-sweep", *SWEEP_FAST, "--json")
        assert swept.exit_code == 0, swept.output
        assert len(json.loads(swept.stdout)) == 2  # one entry per model

        fitted = advisor("fit-predictor", "--kind", "rf", "--json")
        assert fitted.exit_code == 0, fitted.output
        (fit,) = json.loads(fitted.stdout)
        assert fit["name"] == "ptq-loss-predictor" and fit["version"] == "1"

        recommended = advisor("recommend", "--memory", "1GB", "--models", "measured", "--formats", FORMATS,
                              "--top", "1000", "--json")
        assert recommended.exit_code == 0, recommended.output
        report = json.loads(recommended.stdout)
        assert report["schema"] == "ptq-advisor/recommendation/v1"
        assert report["winner"]["model"] in {"llama-64", "gpt2-64"}
        assert report["versions"]["ptq-loss-predictor"] == "1"

        out = tmp_path / "export"
        exported = advisor("export", str(trained_model_dir), "--format", "mxint4_32", "--out", str(out),
                           "--dataset", str(corpus_file), *EXPORT_FAST)
        assert exported.exit_code == 0, exported.output
        name = trained_model_dir.name.lower()

        gated = advisor("gate", f"{name}/1", "--max-nll", "100", "--max-bytes", "1GB", "--promote", "production",
                        "--json")
        assert gated.exit_code == 0, gated.output
        verdict = json.loads(gated.stdout)
        assert verdict["passed"]

    client = server_client(uri)
    version = client.get_model_version(name, "1")
    assert version.tags["gate.verdict"] == "pass" and version.aliases == ["production"]
    # every run's artifacts went through the server's proxy, into the state folder's artifacts/
    runs = {"recommend": report["run_id"], "export": version.run_id, "gate": version.tags["gate.run_id"]}
    for kind, run_id in runs.items():
        assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:"), kind
    stored = {p.name for p in team.artifacts_dir.rglob("*") if p.is_file()}
    assert {"recommendation.json", "gate_report.json"} <= stored, sorted(stored)
    assert any(n.endswith(".onnx") for n in stored), sorted(stored)
    path = mlflow.artifacts.download_artifacts(run_id=runs["gate"], artifact_path="gate_report.json",
                                               dst_path=str(tmp_path / "download"), tracking_uri=uri)
    logged = json.loads(open(path).read())
    assert logged["passed"] and logged["checks"] == verdict["checks"]


def test_json_output_stays_json_on_a_server(team, monkeypatch):
    """MLflow prints "View run … at: URL" on stdout when a run on an http(s) server ends: --json hides it."""
    login(monkeypatch, team.admin)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    with deadline(300):
        result = CliRunner().invoke(cli, ["recommend", "--memory", "8GB", "--formats", "mxint4_32", "--json",
                                          "--tracking-uri", team.uri])
        plain = CliRunner().invoke(cli, ["recommend", "--memory", "8GB", "--formats", "mxint4_32",
                                         "--tracking-uri", team.uri])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["schema"] == "ptq-advisor/recommendation/v1"
    assert plain.exit_code == 0 and "★" in plain.stdout, plain.output
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ  # restored after the command


def test_two_overlapping_sweeps_at_once_against_the_server(team, trained_model_dir, corpus_file, tmp_path,
                                                           monkeypatch):
    login(monkeypatch, team.admin)
    with deadline(900, "two overlapping sweeps"):
        two_overlapping_sweeps_at_once(trained_model_dir, corpus_file, team.uri, tmp_path, experiment="overlap")


def test_a_sweep_killed_at_random_points_resumes_against_the_server(team, trained_model_dir, corpus_file, tmp_path,
                                                                    monkeypatch):
    login(monkeypatch, team.admin)
    with deadline(900, "killed and resumed sweeps"):
        kill_at_random_points_then_resume(trained_model_dir, corpus_file, team.uri, tmp_path, experiment="killed",
                                          kills=2, seed=20261201, window=(4.0, 16.0))


def test_ray_tasks_log_their_runs_to_the_server_under_the_right_parent(team, trained_model_dir, corpus_file,
                                                                      monkeypatch):
    pytest.importorskip("ray")
    login(monkeypatch, team.admin)  # the Ray executor forwards the credentials to its workers
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with deadline(900, "local and Ray sweeps against the server"):
        # resuming a Ray sweep is checked on sqlite (test_ray_executor.py); a cluster start costs minutes here
        ray_sweep_matches_local(trained_model_dir, corpus_file, team.uri, team.uri, ("ray-local", "ray"), resume=False)


def test_a_sweep_survives_the_server_restarting_under_it(team, trained_model_dir, corpus_file, tmp_path,
                                                         monkeypatch):
    """restart-mlflow while variants are being measured: the client retries with backoff and the sweep
    completes, or it exits 2 with one line and a re-run completes; no run is left RUNNING either way."""
    login(monkeypatch, team.admin)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "8")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    uri, experiment = team.uri, "restarted"
    formats = "mxint4_32,int4_chan"  # an MX and a classic-int format; 3 variants still to go at the restart
    cmd = [sys.executable, "-m", "advisor", *sweep_args(trained_model_dir, corpus_file, uri, formats, experiment)]
    server_client(uri).create_experiment(experiment)
    with deadline(900, "a sweep across a server restart"):
        proc = _start(cmd, tmp_path, "sweep.log")
        finished = 0
        while proc.poll() is None and finished < 1:
            time.sleep(0.5)
            variants, _ = _variants(uri, experiment)
            finished = sum(r.info.status == "FINISHED" for r in variants)
        assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
        team.restart_mlflow()
        code = proc.wait(timeout=600)
        log = (tmp_path / "sweep.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        if code != 0:  # gave up during the outage: one line, exit 2, and a re-run finishes the rest
            assert code == 2 and log.rstrip().splitlines()[-1].startswith("Error: the tracking store"), log[-3000:]
            again = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   capture_output=True, text=True, timeout=600)
            assert again.returncode == 0, again.stderr[-3000:]
        assert_exactly_once(uri, 4, experiment)


@pytest.mark.parametrize("required", ["1", None])
def test_a_missing_postgresql_skips_or_fails_when_required(required, monkeypatch):
    from tests import team_services

    monkeypatch.setattr(team_services, "postgres_bin", lambda: None)  # as on a machine without it
    if required:
        monkeypatch.setenv("PTQ_REQUIRE_TEAM_SERVICES", required)
    else:
        monkeypatch.delenv("PTQ_REQUIRE_TEAM_SERVICES", raising=False)
    outcome = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(outcome, match="PostgreSQL not installed: apt-get install postgresql"):
        with team_services.team_server():
            pass
