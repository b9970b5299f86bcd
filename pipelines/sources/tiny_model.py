"""Small causal LMs built and trained here, for the demo and the tests (no hub, no downloads).

The corpus is CPython's own documentation (`pydoc_data.topics`, in every CPython): real English
prose and code, 0.47 M characters. A byte-level BPE tokenizer is trained on it with `tokenizers`,
and a Llama (or GPT-2) of transformers' own classes is trained for a few hundred steps, enough for
a loss well below uniform so that quantization has something to destroy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipelines.sources.offline_corpora import python_docs_text  # noqa: F401  (the tiny models' corpus)
from store.errors import InputError


def train_tokenizer(text: str, vocab_size: int = 1024):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `text` (adds no BOS by itself)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(text.split("\n\n"), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


@dataclass(frozen=True)
class TinySpec:
    """Everything that changes the built model (its hash names the cache folder)."""

    arch: str = "llama"  # "llama" or "gpt2"
    vocab_size: int = 1024
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 344  # not a multiple of 32: exercises ragged MX blocks
    context: int = 256
    steps: int = 300
    batch: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def build_model(spec: TinySpec, vocab_size: int, bos_id: int, eos_id: int):
    """An untrained transformers model of `spec`'s shape."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if spec.arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_embd=spec.hidden, n_layer=spec.layers,
                            n_head=spec.heads, n_inner=spec.intermediate, n_positions=spec.context,
                            bos_token_id=bos_id, eos_token_id=eos_id)
        return GPT2LMHeadModel(config)
    if spec.arch != "llama":
        raise InputError(f"unknown tiny architecture {spec.arch!r}; use llama or gpt2")
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                         num_attention_heads=spec.heads, num_key_value_heads=spec.heads // 2,
                         intermediate_size=spec.intermediate, max_position_embeddings=spec.context,
                         bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def train_lm(model, ids: torch.Tensor, spec: TinySpec) -> list[float]:
    """Train `model` on random windows of the token stream `ids`; returns the loss per step."""
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=max(spec.steps, 1),
                                                pct_start=0.1)
    model.train()
    losses = []
    for _ in range(spec.steps):
        starts = torch.randint(0, ids.numel() - spec.seq_len, (spec.batch,), generator=gen)
        batch = torch.stack([ids[s:s + spec.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def ensure_tiny_model(cache_dir: str | Path, spec: TinySpec = TinySpec(),
                      text: str | None = None) -> Path:
    """Build (or reuse) a model + tokenizer trained on `text` under `cache_dir`; its folder.

    Pass the corpus' train split, so that evaluation on its validation split is honest.
    """
    text = python_docs_text() if text is None else text
    text_key = hashlib.sha256(text.encode()).hexdigest()[:8]
    folder = Path(cache_dir) / f"tiny-{spec.arch}-{spec.key()}-{text_key}"
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return folder
    from transformers import set_seed

    set_seed(spec.seed)
    tokenizer = train_tokenizer(text, spec.vocab_size)
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    model = build_model(spec, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    losses = train_lm(model, ids, spec)
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps({"spec": asdict(spec), "tokens": ids.numel(),
                                                   "final_loss": losses[-1] if losses else None}))
    tmp.rename(folder)  # atomic: a half-written folder is never mistaken for a model
    return folder
