"""Measured runs exported as a versioned data file and seeded into a fresh store (`advisor seed`)."""

import gzip
import json

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from advisor.cli import cli
from registry.measured_data import DATA_TAG, MeasuredDataError, export, load
from registry.predictor.feature_table import TableQuery, build_feature_table
from store.keys import use_store


def _export(uri, path):
    return export(MlflowClient(uri), ("ptq-sweep",), path, note="test")


def test_a_sweep_exported_and_seeded_elsewhere_gives_the_same_feature_table(sweep_store, tmp_path, tracking_uri):
    swept_uri = f"sqlite:///{sweep_store}"  # only read; tracking_uri is a fresh store, MLflow's default
    data_file = tmp_path / "measured.json.gz"
    header = _export(swept_uri, data_file)
    assert header["models"] == 3 and header["variants"] == 24
    assert {p["family"] for p in header["provenance"].values()} == {"llama-tiny", "gpt2-tiny"}
    assert all(p["fingerprint"] and p["dataset_digest"] and p["code_version"] for p in header["provenance"].values())
    assert _export(swept_uri, tmp_path / "again.json.gz")["data_version"] == header["data_version"]
    assert (tmp_path / "again.json.gz").read_bytes() == data_file.read_bytes()  # reproducible bytes
    variants = [v for m in load(data_file)["runs"] for v in m["variants"]]
    assert all("logical cores" in v["tags"]["ptq.machine"] for v in variants)  # their seconds' machine

    seeded = CliRunner().invoke(cli, ["seed", "--measured-data", str(data_file), "--tracking-uri", tracking_uri])
    assert seeded.exit_code == 0, seeded.output
    assert f"measured data {header['data_version']} (3 models, 24 variants): imported 3 model runs " \
           "and 24 variant runs, 0 already here" in seeded.output
    # the paper's target and the RTN-anchored one, each held out by family; the better is champion
    assert "ptq-loss-predictor/1 (rf, base nll_fp) fitted on" in seeded.output
    assert "ptq-loss-predictor/2 (rf, base nll_rtn) fitted on" in seeded.output
    assert "ptq-loss-predictor/3 (rf, base rtn_fraction) fitted on" in seeded.output
    assert "ptq-loss-predictor/4 (rf, base nll_fp, share from 3 bits) fitted on" in seeded.output
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions = {str(v.version): v for v in client.search_model_versions("name = 'ptq-loss-predictor'")}
    assert set(versions) == {"1", "2", "3", "4"}
    champion = str(client.get_model_version_by_alias("ptq-loss-predictor", "champion").version)
    maes = {k: float(v.tags["lofo_mae"]) for k, v in versions.items() if "lofo_mae" in v.tags}
    if len(maes) == 4:
        assert maes[champion] == min(maes.values())
    from bench.study_real import (
        deployed_chooser,  # the study's goal table names the champion
    )

    assert deployed_chooser(client) == {"1": "rf", "2": "rf_rtn", "3": "rf_frac", "4": "rf_share"}[champion]

    columns = ["model", "format", "nll_fp", "sqnr_rtn_db", "nll_rtn", "slope_rtn", "nll_gptq"]

    def table(uri):
        use_store(uri)  # the feature table reads through MLflow's current store
        return build_feature_table(TableQuery(), MlflowClient(uri))[columns].sort_values(["model", "format"])

    source, copy = table(swept_uri), table(tracking_uri)
    assert source.reset_index(drop=True).equals(copy.reset_index(drop=True))
    runs = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("ptq-sweep").experiment_id], max_results=100)
    assert {r.data.tags[DATA_TAG] for r in runs} == {header["data_version"]}
    # the seeded store exported again is the same data: same version, same source run ids
    assert _export(tracking_uri, tmp_path / "re-export.json.gz")["data_version"] == header["data_version"]

    # importing again adds nothing; the recommendation cites the data its predictor was fitted on
    again = CliRunner().invoke(cli, ["seed", "--measured-data", str(data_file), "--tracking-uri", tracking_uri])
    assert again.exit_code == 0 and "imported 0 model runs and 0 variant runs, 24 already here" in again.output
    answer = CliRunner().invoke(cli, ["recommend", "--memory", "60MB", "--models", "measured", "--json",
                                      "--tracking-uri", tracking_uri])
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout)["versions"]["measured-data"] == header["data_version"]
    human = CliRunner().invoke(cli, ["recommend", "--memory", "60MB", "--models", "measured",
                                     "--tracking-uri", tracking_uri])
    assert human.exit_code == 0 and f"measured data {header['data_version']}" in human.stdout, human.output


def test_an_altered_data_file_is_refused_in_one_line(sweep_store, tmp_path, tracking_uri):
    data_file = tmp_path / "measured.json.gz"
    _export(f"sqlite:///{sweep_store}", data_file)
    data = json.loads(gzip.decompress(data_file.read_bytes()))
    data["runs"][0]["variants"][0]["metrics"]["nll"] -= 0.5  # a "better" number slipped in
    data_file.write_bytes(gzip.compress(json.dumps(data).encode()))
    result = CliRunner().invoke(cli, ["seed", "--measured-data", str(data_file), "--tracking-uri", tracking_uri])
    assert result.exit_code == 2 and "does not match its data version" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(cli, ["seed", "--measured-data", str(tmp_path / "nope.json.gz"),
                                       "--tracking-uri", tracking_uri])
    assert missing.exit_code == 2 and "no measured-data file at" in missing.output


def test_the_embedded_data_file_loads_and_names_its_provenance():
    from registry.measured_data import DEFAULT_FILE

    data = load(DEFAULT_FILE)  # written by `bench/study_real.py --export` (make study)
    assert data["variants"] == sum(len(m["variants"]) for m in data["runs"]) > 0
    assert all(p["fingerprint"] and p["code_version"] for p in data["provenance"].values())
    # every model run of every experiment is named, none overwritten by another experiment's
    assert set(data["provenance"]) == {f"{m['experiment']}/{m['name']}" for m in data["runs"]}


def test_a_store_keeps_its_artifacts_beside_its_database_not_in_the_working_directory(
        sweep_store, tmp_path, _migrated_store, monkeypatch):
    import shutil

    data_file = tmp_path / "measured.json.gz"
    _export(f"sqlite:///{sweep_store}", data_file)
    (tmp_path / "stores").mkdir()
    shutil.copyfile(_migrated_store, tmp_path / "stores" / "team.db")
    uri = f"sqlite:///{tmp_path / 'stores' / 'team.db'}"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)  # a user seeding from a throwaway folder
    seeded = CliRunner().invoke(cli, ["seed", "--measured-data", str(data_file), "--tracking-uri", uri])
    assert seeded.exit_code == 0, seeded.output
    assert list(scratch.iterdir()) == []
    beside = tmp_path / "stores" / "team-artifacts"
    assert any((beside / "ptq-registry").rglob("MLmodel"))  # the registered predictors
    for name in ("ptq-sweep", "ptq-registry"):
        assert MlflowClient(uri).get_experiment_by_name(name).artifact_location == str(beside / name)

    monkeypatch.chdir(tmp_path)
    shutil.rmtree(scratch)  # the registered predictors (artifacts) must survive it
    answer = CliRunner().invoke(cli, ["recommend", "--memory", "60MB", "--models", "measured", "--json",
                                      "--tracking-uri", uri])
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout)["versions"]["measured-data"]


def test_a_partial_re_measurement_replaces_exactly_what_it_measured(sweep_store, tmp_path):
    import copy

    from registry.measured_data import collect, merge, write

    older = collect(MlflowClient(f"sqlite:///{sweep_store}"), ("ptq-sweep",))
    # a later store that re-measured GPTQ only (say, after a change to GPTQ's code): one number moved
    newer = copy.deepcopy(older)
    for model in newer:
        model["params"]["code_version"] = "0.1.0+newer"
        model["variants"] = [v for v in model["variants"] if v["params"]["method"] == "gptq"]
        for v in model["variants"]:
            v["params"]["code_version"], v["source_run_id"] = "0.1.0+newer", "new-" + v["source_run_id"]
    moved = newer[0]["variants"][0]
    before = moved["metrics"]["delta_nll"]
    moved["metrics"]["delta_nll"] = before + 0.25
    for v in older[0]["variants"]:
        v["params"].pop("code_version", None)  # as the first real-model sweep logged them

    models, report = merge([older, newer])
    n_gptq = sum(len(m["variants"]) for m in newer)
    assert [(m["experiment"], m["name"]) for m in models] == [(m["experiment"], m["name"]) for m in older]
    assert sum(len(m["variants"]) for m in models) == sum(len(m["variants"]) for m in older)
    assert report["replaced"] == n_gptq and report["identical"] == n_gptq - 1
    assert report["changed"] == [f"{moved['name']}: {before} -> {before + 0.25}"]
    for model in models:
        assert model["params"]["code_version"] == "0.1.0+newer"  # the newest parent
        for v in model["variants"]:
            newest = v["params"]["method"] == "gptq"
            assert v["source_run_id"].startswith("new-") == newest
            # a kept RTN row still names the code that measured it: its own parent's
            assert v["params"]["code_version"] == ("0.1.0+newer" if newest else
                                                   next(o for o in older if o["name"] == model["name"])
                                                   ["params"]["code_version"])
    header = write(models, ("ptq-sweep",), tmp_path / "merged.json.gz")
    counts = header["provenance"][f"ptq-sweep/{older[0]['name']}"]["variant_code_versions"]
    assert counts["0.1.0+newer"] == len(newer[0]["variants"]) and sum(counts.values()) == len(older[0]["variants"])
    assert load(tmp_path / "merged.json.gz")["data_version"] == header["data_version"]

    twice = older + [copy.deepcopy(older[0])]
    with pytest.raises(MeasuredDataError, match="two parent runs of one model"):
        merge([twice])  # an ambiguous store is refused, not silently resolved
