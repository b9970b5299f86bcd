"""Every store fault a user can hit ends in one clear line and exit 2, never a traceback.

Fault cases tried (add the next one here, with its test):
- the store's folder does not exist                 -> "store folder … does not exist"
- a text file given as the store                    -> "… is not an SQLite database"
- a truncated store file                            -> "store file … is damaged"
- `sqlite://mlflow.db` (two slashes)                -> "is misspelt: write sqlite:///mlflow.db"
- a bare path `mlflow.db` as the URI                -> "is a file path: write sqlite:///mlflow.db"
- a folder given as the store file                  -> "is a folder, not an SQLite store file"
- an unreachable tracking server                    -> "does not answer" (test_recommend, test_gate)
- three first commands at once on a fresh file      -> all succeed (schema created under a lock, seeded)
- tables a killed schema migration left behind      -> removed; the store works
- a store folder copied elsewhere (file + artifacts) -> works on its own, never writes into the original
- an unexpected error                               -> one line, exit 1; `--debug` shows the traceback
Faults past the store, tested beside their commands:
- `--plot` into a missing folder                    -> "the folder … does not exist" (test_recommend)
- `--report` into a missing folder or onto a folder -> refused before any alias moves (test_gate)
- `export --out` under a file, or not writable      -> "… is a file" / "is not writable" (test_export)
- `mxfp8_e5m2_32` chosen for export                 -> refused before the model is read (test_export)
- `８GB` (full-width digits)                         -> refused with "did you mean '8GB'?" (test_memory)
- a Gemma-3 tokenizer built wrongly, in a folder    -> refused by export and gate (test_offline_models)
- a command killed while its short run was RUNNING  -> marked KILLED by the next command (test_crash_safety)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from advisor.cli import cli


def versions(uri, *extra):
    return CliRunner().invoke(cli, [*extra, "registry", "versions", "--tracking-uri", uri])


def one_line_exit_2(result, message):
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and message in last, last
    assert "Traceback" not in result.output


def test_a_missing_folder(tmp_path):
    one_line_exit_2(versions(f"sqlite:///{tmp_path}/nope/mlflow.db"), "does not exist")
    assert not (tmp_path / "nope").exists()


def test_a_text_file_a_folder_and_a_truncated_store(tmp_path, _migrated_store):
    text = tmp_path / "notes.db"
    text.write_text("these are my notes, not a database\n")
    one_line_exit_2(versions(f"sqlite:///{text}"), "is not an SQLite database")
    (tmp_path / "dir.db").mkdir()
    one_line_exit_2(versions(f"sqlite:///{tmp_path / 'dir.db'}"), "is a folder, not an SQLite store file")
    truncated = tmp_path / "truncated.db"
    data = _migrated_store.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    one_line_exit_2(versions(f"sqlite:///{truncated}"), "is damaged")
    assert truncated.read_bytes() == data[: len(data) // 3]  # refused, not "repaired"


@pytest.mark.parametrize("uri, message", [
    ("sqlite://mlflow.db", "is misspelt: write sqlite:///mlflow.db"),
    ("sqlite:/mlflow.db", "is misspelt: write sqlite:///mlflow.db"),
    ("mlflow.db", "is a file path: write sqlite:///mlflow.db"),
])
def test_misspelt_uris(uri, message):
    one_line_exit_2(versions(uri), message)


def test_simultaneous_first_commands_on_a_fresh_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = [subprocess.Popen([sys.executable, "-m", "advisor", "models", "--json", "--tracking-uri", uri],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    outcomes = [(p.communicate(timeout=300), p.returncode) for p in procs]
    assert [code for _, code in outcomes] == [0, 0, 0], [err[-2000:] for (_, err), _ in outcomes]
    assert all(json.loads(out) for (out, _), _ in outcomes)
    with sqlite3.connect(tmp_path / "fresh.db") as db:
        leftovers = db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp_%'").fetchall()
    assert leftovers == []


def test_tables_left_by_a_killed_migration_are_removed(tmp_path, _migrated_store):
    path = tmp_path / "mlflow.db"
    path.write_bytes(_migrated_store.read_bytes())
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE _alembic_tmp_runs (run_uuid TEXT)")
    result = CliRunner().invoke(cli, ["registry", "versions", "qid-law", "--tracking-uri", f"sqlite:///{path}"])
    assert result.exit_code == 2 and "no registered model 'qid-law'" in result.output  # the store answered
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = '_alembic_tmp_runs'").fetchone() == (0,)


def test_an_unexpected_error_is_one_line_exit_1_and_debug_shows_it(tmp_path, monkeypatch):
    import advisor.registry_commands

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug, not the user's input")

    monkeypatch.setattr(advisor.registry_commands, "list_versions", broken)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = versions(uri)
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ZeroDivisionError: a bug, not the user's input") and "--debug" in last
    assert "Traceback" not in result.output
    debug = versions(uri, "--debug")
    assert debug.exit_code == 1 and isinstance(debug.exception, ZeroDivisionError)


def test_a_copied_store_folder_works_on_its_own(tmp_path):
    import shutil

    from mlflow import MlflowClient

    original = tmp_path / "a" / "store.db"
    original.parent.mkdir()
    seeded = CliRunner().invoke(cli, ["seed", "--measured-data", "none", "--no-fit", "--tracking-uri",
                                      f"sqlite:///{original}"])
    assert seeded.exit_code == 0, seeded.output
    copy = tmp_path / "b" / "store.db"
    shutil.copytree(original.parent, copy.parent)
    before = sorted(p.relative_to(original.parent) for p in original.parent.rglob("*"))
    # the copy answers from its own artifacts and writes into its own folder
    listed = CliRunner().invoke(cli, ["models", "--json", "--tracking-uri", f"sqlite:///{copy}"])
    assert listed.exit_code == 0, listed.output
    client = MlflowClient(tracking_uri=f"sqlite:///{copy}", registry_uri=f"sqlite:///{copy}")
    locations = [e.artifact_location for e in client.search_experiments() if e.name != "Default"]
    assert locations and all(loc.startswith(str(copy.parent / "store-artifacts")) for loc in locations)
    law = client.get_model_version_by_alias("qid-law", "current")
    assert str(copy.parent) in client.get_model_version_download_uri("qid-law", law.version)
    again = CliRunner().invoke(cli, ["seed", "--measured-data", "none", "--no-fit", "--tracking-uri",
                                     f"sqlite:///{copy}"])
    assert again.exit_code == 0, again.output
    assert sorted(p.relative_to(original.parent) for p in original.parent.rglob("*")) == before
