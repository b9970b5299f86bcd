import math

import pytest
import torch

from pipelines.measure.nll import evaluate_nll
from pipelines.sources.token_windows import (
    calibration_windows,
    evaluation_windows,
    tokenize,
    uses_bos,
)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gpt2"])
def test_nll_equals_hugging_face_labels_loss(request, model_name, tokenizer, docs_text):
    model = request.getfixturevalue(model_name)
    windows = evaluation_windows(tokenizer, docs_text[-20000:], 64, max_windows=6)
    result = evaluate_nll(model, windows, batch_size=4)
    with torch.no_grad():
        hf = model(input_ids=windows.input_ids, labels=windows.input_ids).loss
    assert abs(result.nll - float(hf)) < 1e-5
    assert result.tokens == 6 * 63
    # batch size does not change the answer
    assert abs(evaluate_nll(model, windows, batch_size=1).nll - result.nll) < 1e-6


def test_bits_per_byte_counts_the_bytes_of_predicted_tokens(tokenizer):
    text = "Le café coûte 3€. " * 40  # multi-byte characters
    stream = tokenize(tokenizer, text)
    assert stream.exact_bytes and stream.end_bytes[-1] == len(text.encode())
    windows = evaluation_windows(tokenizer, text, 16, bos=False)
    n = windows.input_ids.shape[0]
    # each window predicts tokens 1..15; their bytes are the text between token 0's end and 15's end
    expected = sum(int(stream.end_bytes[i * 16 + 15] - stream.end_bytes[i * 16]) for i in range(n))
    assert windows.predicted_bytes == expected
    with_bos = evaluation_windows(tokenizer, text, 16, bos=True)
    assert (with_bos.input_ids[:, 0] == tokenizer.bos_token_id).all()
    k = with_bos.input_ids.shape[0]
    assert with_bos.predicted_bytes == int(stream.end_bytes[k * 15 - 1])  # contiguous from the start
    assert with_bos.predicted_tokens == k * 15


def test_bits_per_byte_is_total_nats_over_bytes(tiny_llama, tokenizer, docs_text):
    windows = evaluation_windows(tokenizer, docs_text[:30000], 64, max_windows=4)
    r = evaluate_nll(tiny_llama, windows)
    assert r.bits_per_byte == pytest.approx(r.total_nats / math.log(2) / windows.predicted_bytes)
    assert 0 < windows.predicted_bytes < 30000


def test_windows_are_spread_evenly_and_deterministic(tokenizer, docs_text):
    a = evaluation_windows(tokenizer, docs_text[:50000], 32, max_windows=5)
    b = evaluation_windows(tokenizer, docs_text[:50000], 32, max_windows=5)
    assert torch.equal(a.input_ids, b.input_ids) and a.input_ids.shape == (5, 32)
    c1 = calibration_windows(tokenizer, docs_text[:50000], 32, n=8, seed=3)
    c2 = calibration_windows(tokenizer, docs_text[:50000], 32, n=8, seed=3)
    assert torch.equal(c1, c2) and c1.shape == (8, 32)
    assert not torch.equal(c1, calibration_windows(tokenizer, docs_text[:50000], 32, n=8, seed=4))


def test_auto_bos_follows_the_tokenizer(tokenizer):
    assert uses_bos(tokenizer) is False  # our trained tokenizer adds no BOS by itself
    assert uses_bos(tokenizer, True) is True


def test_too_short_text_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match="fewer than one window"):
        evaluation_windows(tokenizer, "tiny", 64)


def test_bf16_evaluation_is_close_to_fp32(trained_model_dir, docs_text):
    from pipelines.sources.model_source import load_model

    model, tok, _ = load_model(str(trained_model_dir))
    windows = evaluation_windows(tok, docs_text[-40000:], 64, max_windows=8)
    fp32 = evaluate_nll(model, windows).nll
    bf16 = evaluate_nll(model.to(torch.bfloat16), windows).nll
    assert abs(fp32 - bf16) < 0.02
