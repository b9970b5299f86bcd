"""The runtime memory model, part by part, against a real tiny export run by onnxruntime."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from advisor.memory import Architecture, MemoryPlan, runtime_bytes, serving_context
from pipelines.export.ort_layout import embedding_file_bytes, linear_layout
from pipelines.export.runtime_memory import (
    ModelShape,
    RuntimeNotMeasuredError,
    estimate,
    kv_cache_bytes,
    resident_weight_bytes,
    stored_bytes,
)
from pipelines.quantize.formats import parse_format

CONTEXT = 64


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, trained_model_dir, corpus_file):
    """The trained tiny Llama exported in mxint4_32 (RTN), its peak measured at CONTEXT tokens."""
    from pipelines.export.export_model import ExportConfig, export_quantized

    out = tmp_path_factory.mktemp("runtime") / "onnx"
    record = export_quantized(ExportConfig(model=str(trained_model_dir), format="mxint4_32", method="rtn",
                                           out=str(out), dataset=str(corpus_file), seq_len=64, max_windows=3,
                                           context=CONTEXT), say=lambda m: None)
    return out, record


def shape_of(record) -> ModelShape:
    data = dict(record["model_shape"])
    data["linear_shapes"] = tuple((tuple(s), n) for s, n in data["linear_shapes"])
    return ModelShape(**data)


def initializer_bytes(init) -> int:
    if init.data_type == onnx.TensorProto.INT4:
        return -(-int(np.prod(init.dims)) // 2)
    return numpy_helper.to_array(init).nbytes


def test_stored_bytes_are_the_initializers_of_the_file(tiny_export):
    out, record = tiny_export
    shape = shape_of(record)
    graph = onnx.load(str(out / "model.onnx")).graph
    weights = sum(initializer_bytes(i) for i in graph.initializer if i.name.startswith("ptq/"))
    tables = sum(initializer_bytes(i) for i in graph.initializer if i.name.endswith("_fp16") and len(i.dims) == 2)
    layout = linear_layout(parse_format("mxint4_32"))
    fmt = parse_format("mxint4_32")
    linears = sum(layout.file_bytes(o, i, fmt) * n for (o, i), n in shape.linear_shapes)
    scalars = sum(initializer_bytes(i) for i in graph.initializer if i.name.endswith(("_offset", "_two")))
    assert weights - scalars == linears  # codes and E8M0 scales, byte for byte
    assert tables == embedding_file_bytes(shape.vocab_size, shape.hidden_size, shape.tied)  # fp16, once
    everything = sum(initializer_bytes(i) for i in graph.initializer) - scalars  # + the norms, float32
    assert stored_bytes(shape, fmt) == everything
    assert record["stored_bytes_estimate"] == stored_bytes(shape, fmt)


def test_kv_cache_and_logits_are_what_onnxruntime_returns(tiny_export):
    import onnxruntime as ort

    out, record = tiny_export
    shape = shape_of(record)
    session = ort.InferenceSession(str(out / "model.onnx"))
    tokens = 40
    feeds = {"input_ids": np.ones((2, tokens), np.int64), "attention_mask": np.ones((2, tokens), np.int64),
             "position_ids": np.tile(np.arange(tokens), (2, 1))}
    feeds |= {i.name: np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32)
              for i in session.get_inputs() if i.name.startswith("past_key_values")}
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    present = sum(v.nbytes for k, v in outputs.items() if k.startswith("present."))
    assert present == kv_cache_bytes(shape, tokens, batch=2)  # float32 keys and values
    parts = estimate(shape, parse_format("mxint4_32"), tokens + 1, batch=2)
    assert outputs["logits"].nbytes == parts["logits"]  # context − 1 prefill tokens × vocab × float32
    assert parts["kv_cache"] == kv_cache_bytes(shape, tokens + 1, batch=2)


def test_resident_weights_count_packed_codes_float32_scales_and_embeddings_once():
    fmt = parse_format("mxint4_32")
    shape = ModelShape(layers=1, hidden_size=64, intermediate_size=128, heads=4, kv_heads=2, head_dim=16,
                       vocab_size=100, tied=True, linear_shapes=(((128, 64), 2), ((64, 128), 1)), rest_params=10)
    codes = 2 * 128 * 64 // 2 + 64 * 128 // 2
    scales = (2 * 128 * (64 // 32) + 64 * (128 // 32)) * 4  # E8M0 bytes widened to float32 once loaded
    table = 100 * 64 * (2 + 4)  # the float16 table for the Gather, the float32 output layer packed once
    assert resident_weight_bytes(shape, fmt) == codes + scales + table + 10 * 4
    assert stored_bytes(shape, fmt) == codes + scales // 4 + 100 * 64 * 2 + 10 * 4
    untied = ModelShape(**{**shape.__dict__, "tied": False})
    assert stored_bytes(untied, fmt) - stored_bytes(shape, fmt) == 100 * 64 * 2  # a second table in the file
    assert resident_weight_bytes(untied, fmt) == resident_weight_bytes(shape, fmt)
    eight = linear_layout(parse_format("mxint8_32"))  # 8-bit B is not prepacked: each call widens it
    assert (eight.op, eight.bits, eight.packed(64), eight.call_bytes(128, 64)) == ("MatMulNBits", 8, False, 128 * 64 * 4)
    assert linear_layout(fmt).call_bytes(128, 64) == 0
    assert linear_layout(parse_format("mxfp6_e3m2_32")).op == "DequantizeLinear"


def test_estimate_grows_with_context_and_batch_and_is_the_advisors_runtime_bytes(tiny_export):
    out, record = tiny_export
    shape = shape_of(record)
    fmt = parse_format("mxint4_32")
    small, large = estimate(shape, fmt, 32), estimate(shape, fmt, 128)
    assert large["kv_cache"] == 4 * small["kv_cache"] and large["total"] > small["total"]
    assert estimate(shape, fmt, 128, batch=2)["kv_cache"] == 2 * large["kv_cache"]
    assert record["estimated_runtime_bytes"] == estimate(shape, fmt, CONTEXT)["total"]
    # the advisor's architecture view (no vocabulary given: derived from the parameter count) agrees
    arch = Architecture(layers=shape.layers, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                        heads=shape.heads, kv_heads=shape.kv_heads, head_dim=shape.head_dim,
                        total_params=sum(o * i * n for (o, i), n in shape.linear_shapes)
                        + shape.vocab_size * shape.hidden_size + shape.rest_params, context_length=128)
    assert runtime_bytes(arch, fmt, CONTEXT) == estimate(shape, fmt, CONTEXT)
    assert serving_context(arch) == 128 and serving_context(arch, 100) == 100
    assert serving_context(Architecture(1, 8, 8, 1, 1, 8, 100)) == 4096
    assert MemoryPlan(context=CONTEXT).total(arch, fmt) == estimate(shape, fmt, CONTEXT)  # what recommend charges


def test_the_export_records_a_measured_peak_from_a_fresh_process(tiny_export):
    from pipelines.export.runtime_peak import measure_peak

    out, record = tiny_export
    assert record["runtime"] == {"name": "onnxruntime-cpu", "context": CONTEXT, "batch": 1}
    assert record["measured_peak_bytes"] == max(record["runtime_measurement"]["runs"]) > 0
    phases = record["runtime_measurement"]["phases"]
    assert phases["session_peak"] <= phases["prefill_peak"] <= phases["decode_peak"] == record["measured_peak_bytes"]
    again = measure_peak(out, 16)
    assert again["context"] == 16 and again["measured_peak_bytes"] > 0
    assert json.loads((out / "quantization.json").read_text())["measured_peak_bytes"] == record["measured_peak_bytes"]


@pytest.mark.parametrize("runtime", ["pytorch-cuda-fp16", "pytorch-cuda-bf16"])
def test_pytorch_on_cuda_is_a_placeholder_that_says_it_was_not_measured(runtime):
    shape = ModelShape(1, 8, 8, 1, 1, 8, 16, True, (((8, 8), 1),), 0)
    with pytest.raises(RuntimeNotMeasuredError, match="not measured: no accelerator"):
        estimate(shape, parse_format("mxint4_32"), 16, runtime=runtime)
    with pytest.raises(Exception, match="unknown runtime 'tpu'"):
        estimate(shape, parse_format("mxint4_32"), 16, runtime="tpu")
