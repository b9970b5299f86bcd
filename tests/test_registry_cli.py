"""`advisor fit-predictor` and `advisor registry` through Click's runner on a real sweep store."""

import json

from click.testing import CliRunner

from advisor.cli import cli


def test_fit_predictor_registers_rf_and_xgb_and_lineage_traces_the_runs(swept_uri):
    result = CliRunner().invoke(cli, ["fit-predictor", "--json"])
    assert result.exit_code == 0, result.output
    fits = json.loads(result.stdout)
    # the default target is the one with the lowest held-out error on the real models
    assert [(f["version"], f["kind"], f["base"]) for f in fits] == [("1", "rf", "nll_fp"),
                                                                    ("2", "xgb", "nll_fp")]
    assert fits[0]["decision"].startswith("champion: first version")
    assert fits[1]["decision"].split(":")[0] in ("champion", "challenger")
    assert fits[0]["rows"] == 12 and fits[0]["metrics"]["lofo_mae"] > 0

    listed = CliRunner().invoke(cli, ["registry", "versions", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [r["version"] for r in rows] == ["2", "1"]
    assert sum("champion" in r["aliases"] for r in rows) == 1

    text = CliRunner().invoke(cli, ["registry", "lineage", "ptq-loss-predictor/1"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].startswith("ptq-loss-predictor/1 (aliases: ")
    assert "experiment ptq-registry" in lines[1]
    # 3 parent runs + 12 RTN + 12 GPTQ runs
    assert lines[2] == "  trained on 27 runs; source: these runs"


def test_fit_predictor_human_output_and_bad_inputs(swept_uri):
    result = CliRunner().invoke(cli, ["fit-predictor", "--kind", "rf", "--base", "none"])
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    assert first.startswith("ptq-loss-predictor/1 (rf, base none, 12 rows): LOFO MAE ")
    assert second.startswith("  champion: first version")
    cases = {
        ("--experiment", "nope"): "Error: no experiment 'nope' in",
        ("--family", "gpt2-tiny"): "Error: leave-one-family-out needs runs of at least 2 model families",
        ("--holdout", "opt-125m"): "Error: held-out model(s) ['opt-125m'] have no GPTQ rows",
        ("--tracking-uri", "http://127.0.0.1:9"): "Error: ",
    }
    for args, start in cases.items():
        bad = CliRunner().invoke(cli, ["fit-predictor", *args])
        assert bad.exit_code == 2 and bad.output.startswith(start) and bad.output.count("\n") == 1, bad.output
    for args in (["registry", "lineage", "ptq-loss-predictor@nope"], ["registry", "versions", "qid"],
                 ["registry", "lineage", "nonsense"]):
        bad = CliRunner().invoke(cli, args)
        assert bad.exit_code == 2 and bad.output.startswith("Error: ") and bad.output.count("\n") == 1, bad.output


def test_fit_qid_registers_a_law_fitted_on_the_sweep(swept_uri):
    result = CliRunner().invoke(cli, ["fit-qid", "--bootstrap", "20", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["name"] == "qid-law" and report["version"] == "2"  # 1 = the published law
    assert {"rtn/mxint", "gptq/mxint"} <= set(report["fits"])
    for law in report["fits"].values():
        assert law["k"] > 0 and law["n_rows"] >= 3
        lo, hi = law["intervals"]["gamma"]
        assert lo <= law["gamma"] <= hi
    listed = json.loads(CliRunner().invoke(cli, ["registry", "versions", "qid-law", "--json"]).stdout)
    assert [(r["version"], r["aliases"]) for r in listed] == [("2", ["current"]), ("1", [])]
    assert "Ouyang" in listed[1]["tags"]["source"]
