"""`advisor export`: real low-bit ONNX weights, verified against PyTorch, registered in MLflow."""

import json

import mlflow
import onnx
import pytest
import torch
from click.testing import CliRunner

from advisor.cli import cli

FAST = ["--seq-len", "64", "--max-windows", "3", "--calibration-size", "4"]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tiny_gpt2, tokenizer):
    folder = tmp_path_factory.mktemp("gpt2")
    tiny_gpt2.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def export(model, out, fmt, method, corpus_file, *extra):
    return CliRunner().invoke(cli, ["export", str(model), "--format", fmt, "--method", method, "--out", str(out),
                                    "--dataset", str(corpus_file), *FAST, *extra])


CONTAINERS = {"mxint4_32": 4, "mxint8_32": 8, "mxfp4_e2m1_32": 8, "mxint3_128": 4, "int4_g128": 4}
GPTQ = {("llama", "mxint4_32"), ("llama", "int4_g128"), ("gpt2", "mxint3_128"), ("gpt2", "mxfp4_e2m1_32")}


@pytest.mark.parametrize("arch, fmt, method, container", [
    (arch, fmt, "gptq" if (arch, fmt) in GPTQ else "rtn", bits)
    for arch in ("llama", "gpt2") for fmt, bits in CONTAINERS.items()])
def test_export_stores_low_bit_weights_that_reproduce_pytorch(arch, fmt, method, container, trained_model_dir,
                                                              gpt2_dir, corpus_file, tmp_path):
    model = trained_model_dir if arch == "llama" else gpt2_dir
    out = tmp_path / "onnx"
    result = export(model, out, fmt, method, corpus_file, "--no-register", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["logits_max_abs_diff"] < 1e-5  # tiny models: float32 summation noise only
    assert abs(record["nll_onnx"] - record["nll_torch"]) <= 0.005 * record["nll_torch"]
    assert record["onnx_quantized_bytes"] == pytest.approx(record["container_bytes"], rel=0.01)
    assert record["container_bits"] == [container]
    if container == 4 and fmt != "mxint3_128":  # the element width is the container: no overhead
        assert record["container_bytes"] == record["format_bytes"]
    graph = onnx.load(str(out / "model.onnx")).graph
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == (14 if arch == "llama" else 8)  # one per quantized Linear
    types = {i.data_type for i in graph.initializer if i.name.endswith("_codes")}
    assert types == {onnx.TensorProto.INT4 if container == 4 else onnx.TensorProto.INT8}
    assert json.loads((out / "quantization.json").read_text())["format"] == fmt
    assert {"config.json", "tokenizer.json", "model.onnx"} <= {p.name for p in out.iterdir()}


def test_ort_generation_matches_pytorch_greedy_and_the_export_is_registered(trained_model_dir, corpus_file,
                                                                              tmp_path, tracking_uri):
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.export.export_model import session_options
    from pipelines.quantize.formats import parse_format
    from pipelines.quantize.rtn import apply_rtn

    out = tmp_path / "onnx"
    result = export(trained_model_dir, out, "mxint4_32", "rtn", corpus_file)
    assert result.exit_code == 0, result.output
    assert "registered as " in result.stdout
    tokenizer = AutoTokenizer.from_pretrained(trained_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    apply_rtn(reference, parse_format("mxint4_32"))
    prompt = tokenizer("def main(", return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        expected = reference.generate(**prompt, max_new_tokens=12, do_sample=False)
    onnx_model = ORTModelForCausalLM.from_pretrained(out, session_options=session_options())
    assert torch.equal(onnx_model.generate(**prompt, max_new_tokens=12, do_sample=False), expected)
    plain = ORTModelForCausalLM.from_pretrained(out)  # the default session loads and generates too
    assert plain.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 4
    name = trained_model_dir.name.lower()
    version = mlflow.MlflowClient().get_model_version(name, "1")
    assert version.tags["format"] == "mxint4_32" and version.tags["method"] == "rtn"
    assert float(version.tags["nll_measured"]) == pytest.approx(json.loads((out / "quantization.json").read_text())["nll_onnx"])
    served = mlflow.pyfunc.load_model(f"models:/{name}/1")
    text = served.predict({"prompt": ["def main("]}, params={"max_new_tokens": 12})["text"][0]
    assert text == tokenizer.decode(expected[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True)


def test_gptq_hessians_are_chosen_recorded_and_change_the_weights(trained_model_dir, corpus_file, tmp_path):
    records = {}
    for hessians in ("fp", "sequential"):
        result = export(trained_model_dir, tmp_path / hessians, "mxint4_32", "gptq", corpus_file,
                        "--hessians", hessians, "--no-register", "--json")
        assert result.exit_code == 0, result.output
        records[hessians] = json.loads(result.stdout)
        assert records[hessians]["calibration"]["hessians"] == hessians
        assert abs(records[hessians]["nll_onnx"] - records[hessians]["nll_torch"]) <= 0.005 * records[hessians]["nll_torch"]
    # layers after the first see quantized inputs in sequential mode, so the weights (and NLL) differ
    assert records["fp"]["nll_torch"] != records["sequential"]["nll_torch"]
    rtn = export(trained_model_dir, tmp_path / "rtn", "mxint4_32", "rtn", corpus_file, "--no-register", "--json")
    assert "hessians" not in json.loads(rtn.stdout)["calibration"]
    bad = export(trained_model_dir, tmp_path / "bad", "mxint4_32", "gptq", corpus_file, "--hessians", "exact")
    assert bad.exit_code == 2 and "Invalid value for '--hessians'" in bad.output and not (tmp_path / "bad").exists()


def test_export_refuses_a_non_empty_destination_and_missing_models(trained_model_dir, corpus_file, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = export(trained_model_dir, out, "mxint4_32", "rtn", corpus_file, "--no-register")
    assert result.exit_code == 2
    assert result.output == f"Error: {out} exists and is not empty: choose another --out or pass --force\n"
    assert (out / "keep.txt").read_text() == "mine"
    missing = export(tmp_path / "nope", tmp_path / "o", "mxint4_32", "rtn", corpus_file, "--no-register")
    assert missing.exit_code == 2 and missing.output.startswith("Error: ") and "Traceback" not in missing.output
    bad = export(trained_model_dir, tmp_path / "o", "mxint4-32", "rtn", corpus_file, "--no-register")
    assert bad.exit_code == 2 and "did you mean 'mxint4_32'" in bad.output
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no half-written folder


def test_a_failed_verification_leaves_no_folder_and_exits_1(trained_model_dir, corpus_file, tmp_path, monkeypatch):
    import pipelines.export.export_model as export_model

    monkeypatch.setattr(export_model, "LOGITS_ATOL", -1.0)  # no export can pass: the check must bite
    out = tmp_path / "never"
    result = export(trained_model_dir, out, "mxint4_32", "rtn", corpus_file, "--no-register")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: verification failed: logits differ by ")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never.")]


def test_an_architecture_the_exporter_lacks_is_named_with_the_supported_ones(tokenizer, corpus_file, tmp_path):
    from transformers import MambaConfig, MambaForCausalLM

    folder = tmp_path / "mamba"
    MambaForCausalLM(MambaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                 state_size=4)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    result = export(folder, tmp_path / "o", "mxint4_32", "rtn", corpus_file, "--no-register")
    assert result.exit_code == 2
    line = result.output.splitlines()[-1]
    assert line.startswith("Error: optimum cannot export 'mamba' for text-generation-with-past; supported: ")
    assert "llama" in line and "gpt2" in line
