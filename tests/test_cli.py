import json

import pytest
from click.testing import CliRunner

from advisor.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("formats", "measure", "demo"):
        assert command in result.output


def test_formats_table_and_json():
    result = invoke("formats", "mxint4_32", "int4_g128")
    assert result.exit_code == 0
    assert "mxint4_32" in result.output and "4.25" in result.output and "4.125" in result.output
    result = invoke("formats", "--preset", "xu-mx36", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert len(data) == 36 and data[0]["name"] == "mxint2_16" and data[0]["bits_per_weight"] == 2.5


@pytest.mark.parametrize("args, message", [
    (("formats", "mxint4-32"), "did you mean 'mxint4_32'"),
    (("formats",), "give format strings or --preset"),
    (("measure", "./no-model", "--formats", "mxint9_32"), "P=9"),
    (("measure", "./no-model", "--dataset", "./missing.txt"), "no such file or folder: ./missing.txt"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_missing_model_is_one_line(corpus_file):
    result = invoke("measure", "./no-model", "--dataset", str(corpus_file))
    assert result.exit_code == 2
    assert result.output == "Error: no such model file or folder: ./no-model\n"


def test_measure_a_local_model_as_json(trained_model_dir, corpus_file):
    result = CliRunner().invoke(cli, ["measure", str(trained_model_dir), "--dataset", str(corpus_file),
                                      "--formats", "mxint4_32,int8_chan", "--max-windows", "3",
                                      "--seq-len", "64", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["windows"] == 3 and data["seq_len"] == 64 and data["tokens"] == 3 * 63
    assert [v["format"] for v in data["variants"]] == ["mxint4_32", "int8_chan"]
    mx4, int8 = data["variants"]
    assert mx4["sqnr_rtn_db"] < int8["sqnr_rtn_db"] and mx4["slope_rtn"] > 0
    assert abs(int8["nll_rtn"] - int8["nll_fp"]) < 0.01
    assert mx4["bytes"] < int8["bytes"] < data["fp"]["bytes"]
    assert mx4["bpb_rtn"] > 0 and data["fp"]["nll_fp"] > 0


def test_demo_runs_on_embedded_defaults():
    result = CliRunner().invoke(cli, ["demo", "--formats", "mxint4_32,mxfp4_e2m1_32", "--damp", "0.01",
                                      "--max-windows", "2", "--calibration-size", "8"])
    assert result.exit_code == 0, result.output
    assert "mxfp4_e2m1_32" in result.stdout and "fp (16-bit)" in result.stdout
    assert "SQNR gptq" in result.stdout and "ΔNLL gptq" in result.stdout


def test_the_cli_starts_without_heavy_imports():
    import subprocess
    import sys

    code = ("import sys; from advisor.cli import cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
