"""Test helpers for the team tracking server (team/tracking-server.sh): PostgreSQL + MLflow + basic auth.

Not a test module. Use the context manager, or make a fixture of it:

    from tests.team_services import team_server_fixture
    team = team_server_fixture()                 # module-scoped; the server stops after the module

    def test_something(team, monkeypatch):
        uri, (user, password) = team             # or team.uri, team.admin
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        ...
        team.restart_mlflow()                    # only the MLflow process; database and artifacts stay

Without PostgreSQL binaries the tests skip, unless PTQ_REQUIRE_TEAM_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "team" / "tracking-server.sh"
MISSING = "PostgreSQL not installed: apt-get install postgresql"
ADMIN = "admin"
# the script's own start is bounded by PTQ_START_TIMEOUT; this bounds the whole call
SCRIPT_TIMEOUT = 300
# credentials and stores a test may have set must not leak into the server's environment
_CLIENT_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME",
               "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_AUTH_CONFIG_PATH")


def postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and psql, searched as the script searches; None if absent."""
    candidates = []
    if os.environ.get("PTQ_PG_BIN"):
        candidates.append(Path(os.environ["PTQ_PG_BIN"]))
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).resolve().parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")],
                         reverse=True)
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "psql")):
            return folder
    return None


def require_postgres() -> None:
    """Skip without PostgreSQL, or fail when PTQ_REQUIRE_TEAM_SERVICES=1 says it must be there."""
    if postgres_bin() is not None:
        return
    if os.environ.get("PTQ_REQUIRE_TEAM_SERVICES") == "1":
        pytest.fail(MISSING, pytrace=False)
    pytest.skip(MISSING)


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_env(state_dir: Path, *, pg_port: int, mlflow_port: int, admin_password: str | None,
               auth: bool = True, workers: int = 2, start_timeout: int = 120) -> dict[str, str]:
    """The environment the script runs with: this interpreter's mlflow, the given ports and state."""
    env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV}
    bin_dir = str(Path(sys.executable).parent)
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PTQ_MLFLOW_BIN": str(Path(bin_dir) / "mlflow"),
            "PTQ_TEAM_DIR": str(state_dir), "PTQ_PG_PORT": str(pg_port), "PTQ_MLFLOW_PORT": str(mlflow_port),
            "PTQ_MLFLOW_HOST": "127.0.0.1", "PTQ_MLFLOW_WORKERS": str(workers), "PTQ_AUTH": "1" if auth else "0",
            "PTQ_START_TIMEOUT": str(start_timeout), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    if admin_password is not None:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password
    return env


def run_script(command: str, env: dict[str, str], timeout: float = SCRIPT_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@dataclass
class TeamServer:
    """A running server: unpacks as (uri, (admin user, admin password))."""

    uri: str
    admin: tuple[str, str] | None
    state_dir: Path
    env: dict[str, str] = field(repr=False)

    def __iter__(self):
        return iter((self.uri, self.admin))

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def log(self) -> str:
        path = self.state_dir / "logs" / "mlflow.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run(self, command: str, timeout: float = SCRIPT_TIMEOUT) -> subprocess.CompletedProcess:
        """Run `tracking-server.sh COMMAND` against this server's state."""
        return run_script(command, self.env, timeout)

    def restart_mlflow(self) -> subprocess.CompletedProcess:
        """Stop and start only the MLflow server process: same database, artifacts, users and port."""
        done = self.run("restart-mlflow")
        if done.returncode != 0:
            pytest.fail(f"restart-mlflow failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
        return done

    def stop(self) -> subprocess.CompletedProcess:
        return self.run("stop")


@contextlib.contextmanager
def team_server(*, auth: bool = True, workers: int = 2, start_timeout: int = 120, keep: bool = False):
    """Start the team server in a fresh folder on free ports; always stop it (and remove the folder).

    The folder is made under the system temp dir with mode 0711, because as root PostgreSQL runs as
    the `postgres` user, which must traverse it (pytest's tmp_path sits in a 0700 folder).
    """
    require_postgres()
    state_dir = Path(tempfile.mkdtemp(prefix="ptq-team-"))
    state_dir.chmod(0o711)
    password = f"admin-{secrets.token_hex(12)}" if auth else None
    pg_port, mlflow_port = free_port(), free_port()
    while mlflow_port == pg_port:
        mlflow_port = free_port()
    env = script_env(state_dir, pg_port=pg_port, mlflow_port=mlflow_port, admin_password=password, auth=auth,
                     workers=workers, start_timeout=start_timeout)
    server = TeamServer(f"http://127.0.0.1:{mlflow_port}", (ADMIN, password) if auth else None, state_dir, env)
    try:
        started = server.run("start", timeout=start_timeout + 120)
        if started.returncode != 0:
            pytest.fail(f"team/tracking-server.sh start failed ({started.returncode}):\n{started.stdout}\n"
                        f"{started.stderr}", pytrace=False)
        yield server
    finally:
        stopped = server.stop()
        if not keep and stopped.returncode == 0:
            shutil.rmtree(state_dir, ignore_errors=True)


def team_server_fixture(scope: str = "module", **options):
    """A pytest fixture running `team_server(**options)` for `scope`."""

    @pytest.fixture(scope=scope)
    def _team_server():
        with team_server(**options) as server:
            yield server

    return _team_server


@contextlib.contextmanager
def deadline(seconds: float, what: str = "the test"):
    """Raise TimeoutError in the main thread when the block runs longer than `seconds` (SIGALRM)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"{what} ran past its {seconds:.0f} s bound")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
