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


# format → (kernel, bits per stored code): MatMulNBits where the codes fit 2/4/8 bits and the scales
# its blocks (a power of two ≥ 16; channel and tensor scales repeated), DequantizeLinear otherwise
KERNELS = {"mxint4_32": ("MatMulNBits", 4), "mxint8_32": ("MatMulNBits", 8), "mxfp4_e2m1_32": ("MatMulNBits", 8),
           "mxint3_128": ("MatMulNBits", 4), "int4_g128": ("MatMulNBits", 4), "mxint2_32": ("MatMulNBits", 2),
           "int4_chan": ("MatMulNBits", 4), "int8_tens": ("MatMulNBits", 8),
           "mxint4_8": ("DequantizeLinear", 4), "mxfp6_e3m2_32": ("DequantizeLinear", 16)}
GPTQ = {("llama", "mxint4_32"), ("llama", "int4_g128"), ("gpt2", "mxint3_128"), ("gpt2", "mxfp4_e2m1_32")}
CODE_TYPES = {4: onnx.TensorProto.INT4, 16: onnx.TensorProto.INT16}


@pytest.mark.parametrize("arch, fmt, method", [
    (arch, fmt, "gptq" if (arch, fmt) in GPTQ else "rtn")
    for arch in ("llama", "gpt2") for fmt in KERNELS if arch == "llama" or KERNELS[fmt][0] == "MatMulNBits"])
def test_export_stores_low_bit_weights_that_reproduce_pytorch(arch, fmt, method, trained_model_dir,
                                                              gpt2_dir, corpus_file, tmp_path):
    model = trained_model_dir if arch == "llama" else gpt2_dir
    out = tmp_path / "onnx"
    result = export(model, out, fmt, method, corpus_file, "--no-register", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["logits_max_abs_diff"] < 1e-5  # tiny models: float32 summation noise only
    assert abs(record["nll_onnx"] - record["nll_torch"]) <= 1e-4  # under the default session
    assert record["generation"] == {"prompt_tokens": 16, "tokens": 20, "identical_prefix": 20, "identical": True}
    assert record["onnx_quantized_bytes"] == record["stored_bytes"]  # the layout the memory model charges
    op, bits = KERNELS[fmt]
    assert record["kernel"]["op"] == op and record["kernel"]["bits"] == bits
    graph = onnx.load(str(out / "model.onnx")).graph
    kernels = [n for n in graph.node if n.op_type == op]
    assert len(kernels) == (14 if arch == "llama" else 8)  # one per quantized Linear
    codes = {i.data_type for i in graph.initializer if i.name.endswith("_codes")}
    if op == "MatMulNBits":
        assert codes == {onnx.TensorProto.UINT8}
        assert {a.name: a.i for a in kernels[0].attribute}["accuracy_level"] == 0  # float32 in any session
    else:
        assert codes == {CODE_TYPES[bits]}
    # the token embedding: one float16 table, no float32 copy, no transposed copy
    tables = [i for i in graph.initializer if len(i.dims) == 2 and i.dims[0] == 512]
    assert [(t.data_type, t.name.endswith("_fp16")) for t in tables] == [(onnx.TensorProto.FLOAT16, True)]
    assert record["embeddings"]["output_layer"] == "tied" and record["embeddings"]["in_measured_loss"]
    assert any(n.op_type == "FusedMatMul" for n in graph.node)
    assert not [n for n in graph.node if n.op_type == "Transpose" and n.input[0] in {t.name for t in tables}]
    assert record["measured_peak_bytes"] > 0 and record["estimated_runtime_bytes"] > 0
    assert record["runtime"] == {"name": "onnxruntime-cpu", "context": 128, "batch": 1}  # capped: 4096 > 128
    assert json.loads((out / "quantization.json").read_text())["format"] == fmt
    assert {"config.json", "tokenizer.json", "model.onnx"} <= {p.name for p in out.iterdir()}


def test_default_session_and_bare_inference_session_run_the_verified_path_and_the_export_is_registered(
        trained_model_dir, corpus_file, tmp_path, tracking_uri):
    import numpy as np
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.export.embeddings import round_embeddings
    from pipelines.quantize.formats import parse_format
    from pipelines.quantize.rtn import apply_rtn

    out = tmp_path / "onnx"
    result = export(trained_model_dir, out, "mxfp4_e2m1_32", "rtn", corpus_file, "--context", "96")
    assert result.exit_code == 0, result.output
    assert "registered as " in result.stdout and "peak" in result.stdout
    tokenizer = AutoTokenizer.from_pretrained(trained_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(trained_model_dir).eval()
    apply_rtn(reference, parse_format("mxfp4_e2m1_32"))
    round_embeddings(reference)
    prompt = tokenizer("def main(", return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        expected = reference.generate(**prompt, max_new_tokens=12, do_sample=False)
        logits = reference(**prompt).logits.numpy()
    plain = ORTModelForCausalLM.from_pretrained(out)  # no session options: the default is the verified path
    assert torch.equal(plain.generate(**prompt, max_new_tokens=12, do_sample=False), expected)
    bare = ort.InferenceSession(str(out / "model.onnx"))
    ids = prompt["input_ids"].numpy()
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None]}
    feeds |= {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
              for i in bare.get_inputs() if i.name.startswith("past_key_values")}
    assert np.abs(bare.run(["logits"], feeds)[0] - logits).max() < 1e-5
    record = json.loads((out / "quantization.json").read_text())
    assert record["runtime"]["context"] == 96
    name = trained_model_dir.name.lower()
    version = mlflow.MlflowClient().get_model_version(name, "1")
    assert version.tags["format"] == "mxfp4_e2m1_32" and version.tags["method"] == "rtn"
    assert float(version.tags["nll_measured"]) == pytest.approx(record["nll_onnx"])
    assert int(version.tags["measured_peak_bytes"]) == record["measured_peak_bytes"]
    assert int(version.tags["estimated_runtime_bytes"]) == record["estimated_runtime_bytes"]
    assert version.tags["runtime_context"] == "96"
    served = mlflow.pyfunc.load_model(f"models:/{name}/1")
    text = served.predict({"prompt": ["def main("]}, params={"max_new_tokens": 12})["text"][0]
    assert text == tokenizer.decode(expected[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    passed = CliRunner().invoke(cli, ["gate", f"{name}/1", "--max-memory", "100GB", "--json"])
    assert passed.exit_code == 0, passed.output
    check = json.loads(passed.stdout)["checks"][0]
    assert (check["metric"], check["value"]) == ("memory", record["measured_peak_bytes"])
    failed = CliRunner().invoke(cli, ["gate", f"{name}/1", "--max-memory", "1MB"])
    assert failed.exit_code == 1 and "FAIL  memory = " in failed.stdout
    mlflow.MlflowClient().delete_model_version_tag(name, "1", "measured_peak_bytes")
    missing = CliRunner().invoke(cli, ["gate", f"{name}/1", "--max-memory", "100GB"])
    assert missing.exit_code == 2 and "measured_peak_bytes" in missing.output
    bad = CliRunner().invoke(cli, ["gate", f"{name}/1", "--max-memory", "lots"])
    assert bad.exit_code == 2 and "--max-memory 'lots' is not a size" in bad.output


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
    # refused when chosen, before the (here missing) model is looked at: its codes need > 32 bits
    wide = export(tmp_path / "nope", tmp_path / "o", "mxfp8_e5m2_32", "rtn", corpus_file, "--no-register")
    assert wide.exit_code == 2 and wide.output.startswith("Error: mxfp8_e5m2_32 cannot be exported: its codes")
    (tmp_path / "a-file").write_text("x")
    under_file = export(trained_model_dir, tmp_path / "a-file" / "o", "mxint4_32", "rtn", corpus_file, "--no-register")
    assert under_file.exit_code == 2 and f"{tmp_path / 'a-file'} is a file" in under_file.output
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
