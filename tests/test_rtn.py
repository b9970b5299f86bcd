import torch

from pipelines.quantize.formats import parse_format
from pipelines.quantize.mx import quantize_mx
from pipelines.quantize.rtn import apply_rtn, count_params, find_weights, rtn_quantized


def test_llama_targets_are_the_block_linears(tiny_llama):
    names = [t.name for t in find_weights(tiny_llama)]
    assert len(names) == 2 * 7  # q k v o gate up down per layer
    assert all(n.startswith("model.layers.") for n in names)
    assert "lm_head" not in names
    with_head = find_weights(tiny_llama, include_embeddings=True, include_lm_head=True)
    # the tied lm_head shares the embedding tensor: quantized once
    assert len(with_head) == len(names) + 1
    assert with_head[0].name == "model.embed_tokens"


def test_gpt2_conv1d_is_quantized_along_its_input_dim(tiny_gpt2):
    targets = find_weights(tiny_gpt2)
    assert [t.name.split(".")[-1] for t in targets[:4]] == ["c_attn", "c_proj", "c_fc", "c_proj"]
    assert all(t.input_axis == 0 for t in targets)
    attn = targets[0]
    w = attn.param.data.clone()  # Conv1D weight is [in, out]
    fmt = parse_format("mxint4_32")
    with rtn_quantized(tiny_gpt2, fmt, targets):
        assert torch.equal(attn.param.data, quantize_mx(w.t(), fmt).t())
    assert torch.equal(attn.param.data, w)


def test_rtn_is_reversible_and_reports_d_bytes_and_pooled_sqnr(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    fmt = parse_format("mxfp4_e2m1_32")
    with rtn_quantized(tiny_llama, fmt) as report:
        changed = [k for k, v in tiny_llama.state_dict().items() if not torch.equal(v, before[k])]
        assert len(changed) == 14 and all(k.endswith("proj.weight") for k in changed)
    assert all(torch.equal(v, before[k]) for k, v in tiny_llama.state_dict().items())
    targets = find_weights(tiny_llama)
    d = sum(t.param.numel() for t in targets)
    assert report.quantized_params == d
    assert report.total_params == count_params(tiny_llama)
    expected_bytes = sum(fmt.storage_bytes(*t.as_out_in().shape) for t in targets) \
        + (count_params(tiny_llama) - d) * 2
    assert report.total_bytes == expected_bytes
    # pooled SQNR = over the concatenation, not the mean of per-layer dB
    w = torch.cat([t.param.data.reshape(-1) for t in targets]).double()
    q = torch.cat([quantize_mx(t.param.data, fmt).reshape(-1) for t in targets]).double()
    pooled = 20 * torch.log10(w.norm() / (q - w).norm())
    assert abs(report.sqnr_db - float(pooled)) < 1e-9
    assert len(report.layer_table()) == 14


def test_apply_rtn_twice_changes_nothing_more(tiny_llama):
    fmt = parse_format("mxint4_32")
    with rtn_quantized(tiny_llama, fmt):
        snapshot = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
        report = apply_rtn(tiny_llama, fmt)
        assert all(torch.equal(v, snapshot[k]) for k, v in tiny_llama.state_dict().items())
        assert report.sqnr_db == float("inf")
