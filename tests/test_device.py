"""--device and --eval-dtype: where measuring runs and how a 16-bit evaluation is checked (CPU only).

No GPU is needed: the device choice is checked against what this machine has, and the 16-bit
path (autocast) runs on the CPU too, so the check and its float32 fallback are exercised here.
"""

import json

import mlflow
import pytest
import torch
from click.testing import CliRunner

from advisor.cli import cli
from pipelines.measure.device import resolve_device, resolve_eval_dtype
from pipelines.measure.features import FeatureSettings
from pipelines.measure.nll import TOLERANCE_NATS, evaluate_nll
from pipelines.sources.model_set import ModelEntry
from pipelines.sources.token_windows import evaluation_windows
from pipelines.sweep.config import SweepConfig
from store.errors import InputError


def test_auto_is_cuda_exactly_when_this_machine_has_it():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", "gpu"])
def test_unknown_devices_are_input_errors(bad):
    with pytest.raises(InputError, match="--device takes auto, cpu, cuda or cuda:N"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(InputError, match="no CUDA device here; use --device cpu"):
        resolve_device("cuda:0")


def test_auto_eval_dtype_is_bfloat16_on_a_gpu_and_float32_on_the_cpu():
    assert resolve_eval_dtype("auto", "cuda:0") == "bfloat16"
    assert resolve_eval_dtype("auto", "cpu") == "float32"
    assert resolve_eval_dtype("float16", "cpu") == "float16"
    with pytest.raises(InputError, match="--eval-dtype takes"):
        resolve_eval_dtype("int8", "cpu")


@pytest.fixture(scope="module")
def trained(trained_model_dir, docs_text):
    from pipelines.sources.model_source import load_model

    model, tok, _ = load_model(str(trained_model_dir))
    return model, evaluation_windows(tok, docs_text[-40000:], 64, max_windows=6)


def test_a_16_bit_evaluation_is_checked_and_kept_where_it_agrees(trained):
    model, windows = trained
    fp32 = evaluate_nll(model, windows)
    bf16 = evaluate_nll(model, windows, dtype="bfloat16", tolerance=1.0)
    assert (fp32.dtype, fp32.gap_nats) == ("float32", None)
    assert bf16.dtype == "bfloat16"
    assert 0 < bf16.gap_nats < 0.05  # measured on the first windows: a real, small difference
    assert bf16.total_nats != fp32.total_nats and abs(bf16.nll - fp32.nll) < 0.05
    assert next(model.parameters()).dtype == torch.float32  # autocast leaves the weights alone


def test_a_16_bit_evaluation_that_disagrees_is_redone_in_float32(trained):
    model, windows = trained
    fp32 = evaluate_nll(model, windows)
    redone = evaluate_nll(model, windows, dtype="float16", tolerance=0.0)
    assert redone.dtype == "float32" and redone.gap_nats > 0
    assert redone.total_nats == fp32.total_nats  # the float32 pass, not a blend


def test_device_and_eval_dtype_do_not_key_runs():
    """A GPU sweep resumes a CPU sweep's runs: neither setting changes what a run is keyed on."""
    base = SweepConfig(models=(), formats=("mxint4_32",), dataset="d")
    gpu = SweepConfig(models=(), formats=("mxint4_32",), dataset="d", device="cuda", eval_dtype="bfloat16")
    assert gpu.result_settings() == base.result_settings()
    assert "device" not in base.result_settings() and "eval_dtype" not in base.result_settings()


def test_landscape_directions_are_the_same_whatever_the_evaluation_dtype(trained):
    """The slope is a difference of nearby losses: it stays float32 even when evaluation is 16-bit."""
    from pipelines.measure.features import measure_rtn
    from pipelines.quantize.formats import parse_format

    model, windows = trained
    fmt = parse_format("mxint4_32")
    fp = evaluate_nll(model, windows)
    a = measure_rtn(model, fmt, windows, windows, fp, settings=FeatureSettings(slope_seeds=(0,)))
    b = measure_rtn(model, fmt, windows, windows, fp, settings=FeatureSettings(slope_seeds=(0,), eval_dtype="bfloat16"))
    assert a["slope_rtn"] == b["slope_rtn"]
    assert a["eval_bits_rtn"] == 32 and "eval_gap_rtn_nats" not in a
    assert b["eval_bits_rtn"] in (16, 32) and b["eval_gap_rtn_nats"] >= 0
    assert (b["eval_bits_rtn"] == 16) == (b["eval_gap_rtn_nats"] <= TOLERANCE_NATS)


def test_cli_refuses_a_bad_device_in_one_line(trained_model_dir):
    result = CliRunner().invoke(cli, ["measure", str(trained_model_dir), "--device", "tpu"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --device takes auto, cpu, cuda or cuda:N, not 'tpu'"


def test_measure_json_says_how_it_evaluated(trained_model_dir, corpus_file):
    result = CliRunner().invoke(cli, ["measure", str(trained_model_dir), "--dataset", str(corpus_file),
                                      "--formats", "mxint8_32", "--seq-len", "64", "--max-windows", "3",
                                      "--device", "cpu", "--eval-dtype", "bfloat16", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["device"], summary["eval_dtype"]) == ("cpu", "bfloat16")
    assert summary["fp"]["eval_dtype"] in ("bfloat16", "float32") and summary["fp"]["eval_gap_nats"] >= 0
    assert summary["variants"][0]["eval_bits_rtn"] in (16, 32)


def test_sweep_runs_record_the_evaluation(trained_model_dir, corpus_file, tracking_uri):
    from pipelines.sweep.runner import run_sweep

    config = SweepConfig(models=(ModelEntry(str(trained_model_dir), family="llama-tiny", name="m"),),
                         formats=("mxint8_32",), dataset=str(corpus_file), methods=("rtn",), seq_len=64,
                         max_windows=3, landscape_step_db=0, eval_dtype="bfloat16", experiment="dev")
    run_sweep(config, tracking_uri, say=lambda m: None)
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("dev").experiment_id
    runs = client.search_runs([exp], "tags.`ptq.kind` = 'variant'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["ptq.eval_dtype"] == "bfloat16"
    assert "logical cores" in run.data.tags["ptq.machine"]
    assert run.data.metrics["eval_bits"] in (16.0, 32.0) and run.data.metrics["eval_gap_nats"] >= 0
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["eval_bits_fp"] in (16.0, 32.0)
