"""The environment files of the MLflow Project pin exactly what pyproject.toml pins."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_python_env_matches_pyproject():
    env = yaml.safe_load((ROOT / "python_env.yaml").read_text())
    assert env["dependencies"] == pins()


def test_conda_env_matches_pyproject():
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == pins()


def test_mlproject_entry_points_use_the_cli():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert {"demo", "measure", "sweep"} <= set(project["entry_points"])
    assert all(e["command"].startswith("python -m advisor ") for e in project["entry_points"].values())
