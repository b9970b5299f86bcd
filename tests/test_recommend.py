"""`advisor recommend` on a store built by a real tiny sweep + fit, through Click's runner."""

import json

import mlflow
import pytest
from click.testing import CliRunner

from advisor.cli import cli

MEASURED = ["--models", "measured", "--formats", "mxint3_32,mxint4_32,mxfp4_e2m1_32,int4_chan"]


@pytest.fixture
def fitted_uri(swept_uri):
    result = CliRunner().invoke(cli, ["fit-predictor", "--kind", "rf"])
    assert result.exit_code == 0, result.output
    return swept_uri


def recommend(*args):
    return CliRunner().invoke(cli, ["recommend", *args])


def test_recommendation_fits_the_budget_and_is_the_predicted_best(fitted_uri):
    result = recommend("--memory", "52MB", "--json", "--top", "1000", *MEASURED)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "ptq-advisor/recommendation/v1"
    assert report["budget"] == {"text": "52MB", "bytes": 52_000_000, "unit": "MB"}
    rows, winner = report["rows"], report["winner"]
    assert len(rows) == report["fitting"] < report["candidates"]  # some candidates are too big
    assert all(r["bytes"] <= 52_000_000 for r in rows)
    assert winner == rows[0] and winner["bpb"] == min(r["bpb"] for r in rows)
    gptq = [r for r in rows if r["method"] == "gptq"]
    predicted = [r for r in gptq if r["source"] == "predictor"]
    measured = [r for r in gptq if r["source"] == "measured"]  # measured GPTQ ranks by its measurement
    assert gptq and len(predicted) + len(measured) == len(gptq)
    assert all(r["cite"] == "models:/ptq-loss-predictor/1" and r["nll_lower"] < r["nll"] < r["nll_upper"]
               for r in predicted)
    assert all(r["nll"] == r["measured_nll"] and r["predicted_nll"] is not None and r["cite"].startswith("runs:/")
               for r in measured)
    rtn = [r for r in rows if r["method"] == "rtn"]
    assert all(r["source"] == "measured" and r["nll"] == r["measured_nll"] for r in rtn)
    assert report["versions"]["ptq-loss-predictor"] == "1"
    # logged for audit: inputs, versions and the rows, under the winner's name
    run = mlflow.get_run(report["run_id"])
    assert run.data.params["memory"] == "52MB" and run.data.params["version.ptq-loss-predictor"] == "1"
    assert run.info.run_name == f"52MB: {winner['model']} · {winner['format']} · {winner['method']}"
    logged = mlflow.artifacts.load_dict(f"runs:/{report['run_id']}/recommendation.json")
    assert logged["rows"][0] == json.loads(json.dumps(winner))


def test_catalog_models_answer_through_the_laws_and_the_table_marks_the_winner(fitted_uri, tmp_path):
    plot = tmp_path / "frontier.png"
    result = recommend("--memory", "8GB", "--formats", "mxint4_32,int8_chan", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Best under 8GB (8,000,000,000 bytes" in out and "★" in out
    assert "answered with ptq-candidate-catalog/1, ptq-loss-predictor/1, qid-law/1, loss16-law/1" in out
    flat = " ".join(out.split())  # rich wraps long lines at the console width
    assert "[law: qid-law/1" in flat or "[catalog: ptq-candidate-catalog/1" in flat  # the cite survives rich markup
    assert plot.stat().st_size > 10_000
    report = json.loads(recommend("--memory", "8GB", "--formats", "mxint4_32,int8_chan", "--json").stdout)
    winner = report["winner"]
    assert winner["source"] in ("law", "catalog") and winner["bytes"] <= 8e9
    assert "qid-law/1" in winner["cite"] or winner["method"] == "none"
    assert set(report["versions"]) == {"ptq-loss-predictor", "qid-law", "loss16-law", "ptq-candidate-catalog"}


def test_memory_is_the_runtime_peak_at_a_serving_context(fitted_uri):
    def winner(*args):
        result = recommend("--memory", "1TB", "--models", "llama-3.1-8b,opt-1.3b", "--formats", "mxint4_32",
                           "--methods", "gptq", "--json", *args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        return report, {r["model"]: r for r in report["rows"] if r["format"] == "mxint4_32"}

    report, rows = winner()
    assert report["memory_plan"] == {"runtime": "onnxruntime-cpu", "context": None, "default_context": 4096,
                                     "batch": 1}
    # 4096 tokens by default, capped at OPT's 2048
    assert rows["llama-3.1-8b"]["memory"]["context"] == 4096 and rows["opt-1.3b"]["memory"]["context"] == 2048
    asked, longer = winner("--context", "8192", "--batch", "2")
    big = longer["llama-3.1-8b"]["memory"]
    # the export's KV cache is float32: 32 layers × 8 KV heads × 128 × 2 (K, V) × 4 bytes = 262144 per token
    assert big["kv_cache"] == 262144 * 8192 * 2 and big["context"] == 8192 and big["batch"] == 2
    assert big["total"] > rows["llama-3.1-8b"]["memory"]["total"]
    assert big["total"] == max(big["load_peak"], big["weights"] + big["overhead"] + big["kv_cache"] + big["logits"]
                               - big["logits_reused"] + big["activations"])
    assert "opt-1.3b" not in longer  # asked for more context than OPT has: skipped, and said so
    assert "opt-1.3b: context 8192 exceeds its 2048 tokens" in asked["notes"]


def test_nothing_fits_names_the_smallest_candidate(fitted_uri):
    result = recommend("--memory", "1KB", *MEASURED)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: no candidate fits 1KB: the smallest is ")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    ([], "Missing option '--memory'"),
    (["--memory", "0GB"], "Error: --memory '0GB' must be at least one byte"),
    (["--memory", "-8GB"], "Error: --memory '-8GB' is not a size"),
    (["--memory", "8XB"], "Error: --memory '8XB': unknown unit 'XB'"),
    (["--memory", "banana"], "Error: --memory 'banana' is not a size"),
    (["--memory", "1e400GB"], "Error: --memory '1e400GB' is too large"),
    (["--memory", "8GB", "--models", "llama-3-8"], "Error: unknown model 'llama-3-8'; did you mean"),
    (["--memory", "8GB", "--formats", "mxint4-32"], "Error: unknown format 'mxint4-32'; did you mean 'mxint4_32'?"),
    (["--memory", "8GB", "--methods", "awq"], "Error: --methods takes rtn, gptq or both"),
    (["--memory", "8GB", "--runtime", "pytorch-cuda-fp16"],
     "Error: --runtime pytorch-cuda-fp16: not measured: no accelerator"),
    (["--memory", "8GB", "--context", "0"], "Invalid value for '--context'"),
    (["--memory", "８GB"], "Error: --memory '８GB' has characters other than ASCII digits and letters: did you mean '8GB'?"),
    (["--memory", "8GB", "--plot", "/no/such/folder/p.png"], "Error: --plot /no/such/folder/p.png: the folder "
                                                            "/no/such/folder does not exist"),
    (["--memory", "8GB", "--tracking-uri", "http://127.0.0.1:9"],
     "Error: tracking server http://127.0.0.1:9 does not answer"),
])
def test_bad_input_is_one_line_and_exit_2(fitted_uri, args, message):
    result = recommend(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output.splitlines()[-1] or message in result.output
    assert "Traceback" not in result.output


def test_without_a_predictor_measured_gptq_still_answers_and_unmeasured_gptq_is_counted(swept_uri):
    import mlflow

    result = recommend("--memory", "8GB", *MEASURED, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    gptq = [r for r in rows if r["method"] == "gptq"]
    assert gptq and all(r["source"] == "measured" and r["measured_nll"] == r["nll"] for r in gptq)
    # a GPTQ run lost: that variant is no candidate without a predictor, and the table says so
    client = mlflow.MlflowClient()
    (lost,) = [r for r in client.search_runs([client.get_experiment_by_name("ptq-sweep").experiment_id],
                                               "params.method = 'gptq' and params.format = 'mxint3_32'")][:1]
    client.delete_run(lost.info.run_id)
    again = recommend("--memory", "8GB", *MEASURED)
    assert again.exit_code == 0, again.output
    assert "1 × GPTQ of a measured model, not measured, and no loss predictor" in again.output


def strict_json(text: str):
    """Parse as JSON proper: NaN and Infinity are Python's extension, which jq and browsers refuse."""
    def refuse(constant):
        raise AssertionError(f"{constant} in --json output")
    return json.loads(text, parse_constant=refuse)


def test_an_interval_without_bounds_is_null_in_the_json_and_infinite_in_the_table(fitted_uri):
    import mlflow

    # an unmeasured 3-bit GPTQ variant: the tiny table has 3 rows at 3 bits, too few for a 90 % width
    client = mlflow.MlflowClient()
    (lost,) = client.search_runs([client.get_experiment_by_name("ptq-sweep").experiment_id],
                                 "params.method = 'gptq' and params.format = 'mxint3_32' and "
                                 "tags.`mlflow.runName` LIKE 'llama-64%'")
    client.delete_run(lost.info.run_id)
    args = ["--memory", "1GB", "--models", "llama-64", "--formats", "mxint3_32", "--methods", "gptq"]
    result = recommend(*args, "--json")
    assert result.exit_code == 0, result.output
    (row,) = [r for r in strict_json(result.stdout)["rows"] if r["method"] == "gptq"]
    assert row["source"] == "predictor" and row["nll"] > row["nll_fp"]
    assert (row["nll_lower"], row["nll_upper"], row["lower"], row["upper"]) == (None, None, None, None)
    text = recommend(*args)
    assert text.exit_code == 0 and "± ∞" in text.stdout, text.output
    fits = CliRunner().invoke(cli, ["fit-predictor", "--kind", "rf", "--json"])
    assert fits.exit_code == 0, fits.output
    assert strict_json(fits.stdout)[0]["halfwidths"]["p<=2"] is None


def test_empty_store_is_seeded_saying_so(tracking_uri):
    result = recommend("--memory", "8GB", "--formats", "mxint4_32")
    assert result.exit_code == 0, result.output
    assert "seeded qid-law/1 from the published coefficients" in result.stderr
    assert "seeded ptq-candidate-catalog/1" in result.stderr
    again = recommend("--memory", "8GB", "--formats", "mxint4_32")
    assert again.exit_code == 0 and "seeded " not in again.stderr
    assert "note: no measured candidates (no experiment 'ptq-sweep'" in again.stderr


def test_explain_adds_up_to_the_prediction(fitted_uri):
    result = CliRunner().invoke(cli, ["explain", "llama-64", "mxint4_32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    total = report["base"] + report["bias"] + sum(c["contribution"] for c in report["contributions"])
    rows = json.loads(recommend("--memory", "1GB", "--models", "llama-64", "--formats", "mxint4_32",
                                "--methods", "gptq", "--json").stdout)["rows"]
    served = next(r for r in rows if r["method"] == "gptq")
    prediction = served["predicted_nll"] if served["source"] == "measured" else served["nll"]  # beside a measurement
    assert abs(total - prediction) < 1e-9 and report["prediction"] == pytest.approx(total)
    assert [c["feature"] for c in report["contributions"]][:2] == ["quantized_params", "nll_fp"]
    assert abs(sum(c["importance"] for c in report["contributions"]) - 1) < 1e-6
    text = CliRunner().invoke(cli, ["explain", "llama-64", "mxint4_32"])
    assert text.exit_code == 0 and text.stdout.startswith("llama-64 · mxint4_32 · gptq by models:/ptq-loss-predictor/1")
    bad = CliRunner().invoke(cli, ["explain", "llama-64", "mxint8_32"])
    assert bad.exit_code == 2 and bad.output.startswith("Error: no swept variant llama-64 · mxint8_32; swept: ")


def test_explain_of_an_rtn_fraction_predictor_adds_up_in_nats(swept_uri):
    fitted = CliRunner().invoke(cli, ["fit-predictor", "--kind", "rf", "--base", "rtn_fraction"])
    assert fitted.exit_code == 0, fitted.output
    report = json.loads(CliRunner().invoke(cli, ["explain", "llama-64", "mxint3_32", "--json"]).stdout)
    rtn = json.loads(recommend("--memory", "1GB", "--models", "llama-64", "--formats", "mxint3_32",
                               "--json").stdout)["rows"]
    served = {r["method"]: r["predicted_nll"] if r["method"] == "gptq" and r["source"] == "measured" else r["nll"]
              for r in rtn}
    fp = next(c["value"] for c in report["contributions"] if c["feature"] == "nll_fp")
    assert (report["base_column"], report["scale_column"]) == ("nll_fp", "nll_rtn")
    assert report["scale"] == pytest.approx(served["rtn"] - fp) and report["scale"] > 0.005
    total = report["base"] + report["bias"] + sum(c["contribution"] for c in report["contributions"])
    assert abs(total - served["gptq"]) < 1e-9 and fp < served["gptq"] < served["rtn"] + 0.05
    text = CliRunner().invoke(cli, ["explain", "llama-64", "mxint3_32"])
    assert text.exit_code == 0 and f"(trees' fraction × nll_rtn − nll_fp {report['scale']:.4f})" in text.stdout


def test_a_share_predictor_fits_serves_and_explains_its_high_bit_rows_by_the_share(swept_uri):
    fitted = CliRunner().invoke(cli, ["fit-predictor", "--kind", "rf", "--share-from-bits", "4", "--json"])
    assert fitted.exit_code == 0, fitted.output
    (fit,) = json.loads(fitted.stdout)
    assert fit["share_from_bits"] == 4 and set(fit["share"]) == {"p>=4"} and 0 < fit["share"]["p>=4"] < 2
    report = json.loads(CliRunner().invoke(cli, ["explain", "llama-64", "mxint4_32", "--json"]).stdout)
    rows = json.loads(recommend("--memory", "1GB", "--models", "llama-64", "--formats", "mxint4_32",
                                "--json").stdout)["rows"]
    served = {r["method"]: r["predicted_nll"] if r["method"] == "gptq" and r["source"] == "measured" else r["nll"]
              for r in rows}
    assert report["answered_by"] == "share" and report["share"] == pytest.approx(fit["share"]["p>=4"])
    assert report["band"] == "p>=4"
    assert report["scale"] == pytest.approx(max(served["rtn"] - report["base"], 0.005))
    assert report["prediction"] == pytest.approx(served["gptq"], abs=1e-9) and report["contributions"] == []
    text = CliRunner().invoke(cli, ["explain", "llama-64", "mxint4_32"])
    assert text.exit_code == 0, text.output
    assert f"= nll_fp {report['base']:.4f} + share {report['share']:.4f} × RTN's loss increase" in text.stdout
    three = json.loads(CliRunner().invoke(cli, ["explain", "llama-64", "mxint3_32", "--json"]).stdout)
    assert three["answered_by"] == "trees" and len(three["contributions"]) == 8  # below 4 bits: the forest
    human = CliRunner().invoke(cli, ["fit-predictor", "--kind", "rf", "--share-from-bits", "4"])
    assert human.exit_code == 0 and "(rf, base nll_fp, share of RTN's increase 0." in human.stdout, human.output
    assert " at p>=4, " in human.stdout
    bad = CliRunner().invoke(cli, ["fit-predictor", "--share-from-bits", "1"])
    assert bad.exit_code == 2 and "--share-from-bits" in bad.output


def test_models_and_pareto_browse_the_catalog_and_frontier(fitted_uri):
    listed = CliRunner().invoke(cli, ["models", "--json"])
    assert listed.exit_code == 0, listed.output
    names = {m["name"] for m in json.loads(listed.stdout)["models"]}
    assert {"llama-3.1-8b", "llama-64", "gpt2-64"} <= names  # curated + swept
    human = CliRunner().invoke(cli, ["models"])
    assert human.exit_code == 0 and "e+" not in human.stdout  # counts read 1B, never 1e+03M
    front = CliRunner().invoke(cli, ["pareto", "--formats", "mxint4_32,int8_chan", "--json"])
    assert front.exit_code == 0, front.output
    frontier = json.loads(front.stdout)
    rows = frontier["frontier"]
    assert [r["bytes"] for r in rows] == sorted(r["bytes"] for r in rows)
    # the frontier charges what recommend charges: the runtime peak at the same plan
    assert frontier["memory_plan"]["runtime"] == "onnxruntime-cpu" and all(r["context"] >= 1 for r in rows)
    answer = json.loads(recommend("--memory", "1TB", "--formats", "mxint4_32,int8_chan", "--top", "1000",
                                  "--json").stdout)
    charged = {(r["model"], r["format"], r["method"]): r["bytes"] for r in answer["rows"]}
    assert all(charged[(r["model"], r["format"], r["method"])] == r["bytes"] for r in rows)
    assert all(a["bpb"] > b["bpb"] for a, b in zip(rows, rows[1:]))  # bigger must be better


ROW_KEYS = {"model", "format", "method", "bits_per_weight", "bytes", "size", "budget_fraction", "memory", "nll",
            "nll_lower", "nll_upper", "nll_fp", "delta_nll", "lower", "upper", "bpb", "bpb_lower", "bpb_upper",
            "measured_nll", "predicted_nll", "source", "cite", "fp_source", "bytes_per_token_assumed", "pareto",
            "notes", "spec"}


def test_json_follows_the_documented_schema_and_incomplete_catalog_entries_are_skipped(tracking_uri):
    from registry.catalog.entries import load_seed
    from registry.catalog.registered import register_catalog

    entries = load_seed()
    broken = entries[0].__class__(**{**entries[0].to_dict(), "name": "mystery-7b", "layers": None,
                                     "aliases": (), "hub_id": None})
    register_catalog(entries + [broken], description="with an incomplete entry", source="test")
    result = recommend("--memory", "8GB", "--formats", "mxint4_32", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"schema", "budget", "memory_plan", "versions", "candidates", "fitting", "winner",
                           "rows", "notes", "run_id", "recommendation_id"}
    assert all(set(row) == ROW_KEYS for row in report["rows"])
    assert set(report["memory_plan"]) == {"runtime", "context", "default_context", "batch"}
    assert "mystery-7b: catalog entry lacks layers, so its size is unknown" in report["notes"]


def test_recommend_exports_the_winner_with_its_prediction(fitted_uri, tmp_path, corpus_file):
    out = tmp_path / "winner"
    result = recommend("--memory", "52.2MB", "--models", "llama-64", "--formats", "mxint4_32", "--methods", "gptq",
                       "--export", str(out), "--dataset", str(corpus_file), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    record = json.loads((out / "quantization.json").read_text())
    winner = report["winner"]
    assert (record["format"], record["method"]) == (winner["format"], winner["method"]) == ("mxint4_32", "gptq")
    assert record["nll_predicted"] == winner["nll"] and record["registry_versions"] == report["versions"]
    assert record["registered"] == report["export"]["registered"]


def test_recommend_imports_no_torch_transformers_or_sklearn(tracking_uri):
    import os
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from advisor.cli import cli; "
            "r = CliRunner().invoke(cli, ['recommend', '--memory', '8GB', '--json']); "
            "print(r.exit_code, sorted(m for m in ('torch', 'transformers', 'sklearn', 'skops', 'mlflow') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "0 ['mlflow']", done.stderr[-2000:]
    # a repeat on the unchanged store answers from the answer cache, without even MLflow
    env = {**os.environ, "PTQ_ADVISOR_ANSWER_CACHE": "on"}
    from advisor.answer_cache import refresh
    from advisor.candidates import gather_inputs

    assert refresh(mlflow.MlflowClient(tracking_uri), tracking_uri, ["ptq-sweep"],
                   lambda c: gather_inputs(c, ["ptq-sweep"]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]


def _wait_for(predicate, timeout=300.0):  # a detached logger on a loaded 2-core machine: minutes
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _recommendation_runs(uri):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("ptq-recommendations")
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


def _logger_idle() -> bool:
    import fcntl

    from advisor.answer_cache import answers_dir

    with open(answers_dir() / "logger.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_repeat_answers_from_the_cache_until_the_store_changes(fitted_uri, monkeypatch, tmp_path):
    from advisor.answer_cache import answers_dir, snapshot_file

    monkeypatch.setenv("PTQ_ADVISOR_ANSWER_CACHE", "on")
    first = recommend("--memory", "52MB", "--json", *MEASURED)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["run_id"]  # read the store, logged at once
    snapshot = snapshot_file(f"sqlite:///{tmp_path / 'mlflow.db'}", ["ptq-sweep"])
    assert _wait_for(snapshot.exists), (answers_dir() / "logger.log").read_text()  # the logger fills it

    again = recommend("--memory", "52MB", "--json", *MEASURED)
    assert again.exit_code == 0, again.output
    cached = json.loads(again.stdout)
    assert cached["run_id"] is None and cached["recommendation_id"] != report["recommendation_id"]
    assert {k: v for k, v in cached.items() if k not in ("run_id", "recommendation_id")} == \
        {k: v for k, v in report.items() if k not in ("run_id", "recommendation_id")}
    # the detached logger logs it (tagged with its id) and empties the spool
    assert _wait_for(lambda: any(r.data.tags.get("ptq.recommendation_id") == cached["recommendation_id"]
                                 for r in _recommendation_runs(fitted_uri))), \
        (answers_dir() / "logger.log").read_text()
    assert _wait_for(lambda: not list((answers_dir() / "spool").glob("*.json")))
    # the logged run did not expire the snapshot: answers that come back to back all answer from it
    third = recommend("--memory", "52MB", "--json", *MEASURED)
    assert third.exit_code == 0 and json.loads(third.stdout)["run_id"] is None, third.output

    # any write to the store invalidates the cache: here a reviewer tags the champion in the UI
    # after the logger is done: one still refreshing would rightly cache the moved alias
    client = mlflow.MlflowClient(fitted_uri)
    assert _wait_for(_logger_idle)
    client.set_model_version_tag("ptq-loss-predictor", "1", "reviewed", "yes")
    moved = recommend("--memory", "52MB", *MEASURED)
    assert moved.exit_code == 0, moved.output
    assert "logged as run" in moved.stdout and "answered from the answer cache" not in moved.stdout


def test_a_recommendation_a_dead_logger_left_behind_is_logged_by_the_next_one(fitted_uri, monkeypatch, tmp_path):
    import os

    from advisor.recommendation_log import new_id, spool

    monkeypatch.setenv("PTQ_ADVISOR_ANSWER_CACHE", "on")
    record = {"id": new_id(), "budget": {"text": "1MB", "bytes": 10**6},
              "plan": {"runtime": "onnxruntime-cpu", "context": None, "default_context": 4096, "batch": 1},
              "inputs": {"memory": "1MB"}, "versions": {}, "rows": [], "winner": None}
    path = spool(f"sqlite:///{tmp_path / 'mlflow.db'}", ["ptq-sweep"], record)
    os.utime(path, (1, 1))  # long ago: its logger is gone
    result = recommend("--memory", "52MB", *MEASURED)
    assert result.exit_code == 0, result.output
    assert not path.exists()
    assert [r.info.run_name for r in _recommendation_runs(fitted_uri)
            if r.data.tags.get("ptq.recommendation_id") == record["id"]] == ["1MB: nothing fits"]
