"""The team server's request latency with and without its basic-auth credential cache.

  .venv/bin/python bench/bench_team_auth.py --write bench/RESULTS.md

Starts team/tracking-server.sh (PostgreSQL + MLflow + basic auth, 2 workers) once per setting of
PTQ_AUTH_CACHE_TTL and times authenticated `get_experiment` calls. Without the cache every request
verifies the admin's scrypt password hash, which costs ~0.1 s of CPU on a small machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from bench.results_file import machine, write_section  # noqa: E402
from tests.team_services import team_server  # noqa: E402


def request_seconds(ttl: int, requests: int) -> list[float]:
    """Wall seconds of each of `requests` authenticated calls against a fresh server with this TTL."""
    from mlflow import MlflowClient

    os.environ["PTQ_AUTH_CACHE_TTL"] = str(ttl)
    with team_server() as server:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = server.admin
        client = MlflowClient(server.uri, registry_uri=server.uri)
        experiment = client.create_experiment("bench")
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            client.get_experiment(experiment)
            times.append(time.perf_counter() - start)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--write", help="the RESULTS.md to update")
    args = parser.parse_args()
    rows = []
    for ttl in (0, 60):
        times = request_seconds(ttl, args.requests)
        rows.append((ttl, statistics.median(times), sum(times)))
        print(f"PTQ_AUTH_CACHE_TTL={ttl}: median {rows[-1][1]:.3f} s, total {rows[-1][2]:.2f} s")
    base = rows[0][1]
    body = "\n".join([
        "## Team server: authenticated request latency (`bench/bench_team_auth.py`)", "",
        f"Machine: {machine()}. team/tracking-server.sh with 2 workers, PostgreSQL, basic auth; "
        f"{args.requests} `get_experiment` calls as admin per setting, one fresh server each.", "",
        "Command: `python bench/bench_team_auth.py --write bench/RESULTS.md`", "",
        "| PTQ_AUTH_CACHE_TTL (s) | median request s | total s | median vs no cache |",
        "|---|---|---|---|",
        *(f"| {ttl} | {median:.3f} | {total:.2f} | {median / base:.2f}x |" for ttl, median, total in rows)])
    if args.write:
        write_section(args.write, "team-auth", body)


if __name__ == "__main__":
    main()
