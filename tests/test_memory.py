"""Budgets as typed, the Linear shapes against the real quantized tensors, and the serving context."""

import dataclasses

import pytest

from advisor.memory import (
    Architecture,
    BudgetError,
    MemoryPlan,
    parse_memory,
)
from pipelines.quantize.formats import parse_format
from pipelines.quantize.rtn import count_params, rtn_quantized
from pipelines.sources.architecture import architecture
from registry.catalog.params import kv_bytes


@pytest.mark.parametrize("text, expected, unit", [
    ("8GB", 8 * 10**9, "GB"), ("8gb", 8 * 10**9, "gb"), ("8GiB", 8 * 2**30, "GiB"),
    ("7.5G", 7_500_000_000, "GB"), ("512MB", 512 * 10**6, "MB"), (" 1.5 TiB ", int(1.5 * 2**40), "TiB"),
    ("1e3MB", 10**9, "MB"), (".5GB", 5 * 10**8, "GB"),
])
def test_budgets_in_decimal_and_binary_units(text, expected, unit):
    budget = parse_memory(text)
    assert (budget.bytes, budget.unit) == (expected, unit)


@pytest.mark.parametrize("text, message", [
    ("", "is not a size"), ("banana", "is not a size"), ("-8GB", "is not a size"),
    ("8XB", "unknown unit 'XB'"), ("0GB", "at least one byte"), ("1e400GB", "too large"),
    ("8", "is not a size"),
])
def test_bad_budgets_say_what_to_write(text, message):
    with pytest.raises(BudgetError, match=message):
        parse_memory(text)


@pytest.mark.parametrize("fmt", ["mxint4_32", "mxfp6_e3m2_64", "int4_g128", "int8_chan", "int3_tens", None])
@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_memory_model_matches_the_quantized_tensors(model, fmt, request):
    model = request.getfixturevalue(model)
    facts = architecture(model)
    arch = Architecture(layers=facts["layers"], hidden_size=facts["hidden_size"],
                        intermediate_size=facts["intermediate_size"], heads=facts["heads"],
                        kv_heads=facts["kv_heads"], head_dim=facts["head_dim"], total_params=count_params(model),
                        gated_mlp=model.config.model_type != "gpt2", fused_qkv=model.config.model_type == "gpt2")
    # the Linear shapes the runtime memory model charges are the ones RTN quantizes, scales and all
    if fmt is None:
        assert arch.quantized_params < count_params(model)
        return
    fmt = parse_format(fmt)
    with rtn_quantized(model, fmt) as report:
        real = report.total_bytes  # quantized Linears with every scale + the other parameters at 16 bits
    assert arch.quantized_params == report.quantized_params
    linears = sum(fmt.storage_bytes(o, i) * n for (o, i), n in arch.shape_counts.items())
    assert linears + (count_params(model) - arch.quantized_params) * 2 == pytest.approx(real, rel=1e-9)


def test_kv_cache_and_the_serving_context():
    # Llama-3-8B: 32 layers × 8 KV heads × 128 dims × 2 (K and V) × 2 bytes = 131072 bytes per token
    assert kv_bytes(32, 8, 128, context=1, batch=1, bytes_per_element=2) == 131072
    llama = Architecture(layers=32, hidden_size=4096, intermediate_size=14336, heads=32, kv_heads=8, head_dim=128,
                         total_params=8_030_261_248, vocab_size=128256, tied_embeddings=False, context_length=8192)
    fmt = parse_format("mxint4_32")
    default, asked = MemoryPlan().total(llama, fmt), MemoryPlan(context=4096, batch=2).total(llama, fmt)
    assert default["context"] == 4096 and default["batch"] == 1
    assert asked["kv_cache"] == 2 * default["kv_cache"] == 2 * 131072 * 2 * 4096  # the export's KV is float32
    assert MemoryPlan(context=16384).total(llama, fmt)["context"] == 16384  # as asked (the caller skips it)
    short = dataclasses.replace(llama, context_length=2048)
    assert MemoryPlan().total(short, fmt)["context"] == 2048  # the default is capped at the model's
    assert MemoryPlan().total(llama, None)["total"] > default["total"]  # unquantized: float32 Linears


@pytest.mark.parametrize("typed, suggestion", [("８GB", "8GB"), ("８ＧＢ", "8GB"), ("٨GB", None)])
def test_budgets_in_other_scripts_are_refused_with_the_ascii_spelling(typed, suggestion):
    with pytest.raises(BudgetError, match="other than ASCII") as err:
        parse_memory(typed)
    assert (f"did you mean {suggestion!r}?" in str(err.value)) == (suggestion is not None)
