"""What an export must reproduce, checked on the session every user gets: onnxruntime's default.

The folder is loaded the plain way — `ORTModelForCausalLM.from_pretrained(folder)`, no session
options, which is a bare `onnxruntime.InferenceSession` with defaults — and compared with the
PyTorch-quantized model: logits on evaluation windows, NLL on every validation window, and a
greedy continuation of `GENERATED_TOKENS` tokens (through the KV-cache path), token for token.
"""

from __future__ import annotations

GENERATED_TOKENS = 20
PROMPT_TOKENS = 16


def session_options():
    """onnxruntime SessionOptions for older exports whose 4-bit DequantizeLinear+MatMul onnxruntime
    fuses into MatMulNBits with int8 activations; exports made now carry `accuracy_level=0` in their
    MatMulNBits nodes and need no options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return options


class OrtAsTorch:
    """Lets `evaluate_nll` drive an ORTModelForCausalLM like a PyTorch model."""

    training = False

    def __init__(self, model):
        import torch

        self.model, self._param = model, torch.zeros(1)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def parameters(self):
        yield self._param

    def __call__(self, input_ids, use_cache=False):
        import torch

        return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))


def greedy(model, prompt, tokens: int = GENERATED_TOKENS):
    """`tokens` greedy tokens after `prompt` [1, n] (EOS suppressed so both sides give all of them)."""
    import torch

    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                             max_new_tokens=tokens, min_new_tokens=tokens,
                             pad_token_id=model.config.eos_token_id)
    return out[0, prompt.shape[1]:]


def compare_default_session(folder, torch_model, windows) -> dict:
    """Logits, NLL and greedy generation of `folder` under the default session vs `torch_model`."""
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    from pipelines.measure.nll import evaluate_nll

    ort_model = ORTModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        sample = windows.input_ids[: min(2, len(windows.input_ids))]
        diff = float((ort_model(input_ids=sample, attention_mask=torch.ones_like(sample)).logits
                      - torch_model(input_ids=sample).logits).abs().max())
    nll = evaluate_nll(OrtAsTorch(ort_model), windows)
    prompt = windows.input_ids[:1, :PROMPT_TOKENS]
    expected, got = greedy(torch_model, prompt), greedy(ort_model, prompt)
    same = int((expected == got).cumprod(0).sum()) if len(expected) == len(got) else 0
    return {"logits_max_abs_diff": diff, "nll": nll, "generation": {
        "prompt_tokens": int(prompt.shape[1]), "tokens": GENERATED_TOKENS, "identical_prefix": same,
        "identical": bool(torch.equal(expected, got))}}
