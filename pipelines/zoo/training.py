"""Train a micro-suite of Llama-style models from scratch, with checkpoints along the way.

The design of the Pythia suite that Ouyang et al. fitted the QiD law on, at micro scale: one
architecture at several widths/depths, every size trained on the *same* data in the same order
(one seed), one learning-rate schedule per size over the whole token budget, and checkpoints at
log-spaced token counts D taken mid-schedule — as Pythia's intermediate checkpoints are.

A checkpoint folder is a transformers model + tokenizer (loadable by the sweep) plus
`zoo.json` (what it is: size, tokens seen, losses). The newest checkpoint of a size also keeps
`trainer_state.pt`, so an interrupted run resumes from it with the same batches it would have seen.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from pipelines.zoo.presets import ZooPreset, ZooSize, tokens_label

STATE_FILE = "trainer_state.pt"
INFO_FILE = "zoo.json"


def build_model(size: ZooSize, preset: ZooPreset, tokenizer):
    """An untrained LlamaForCausalLM of `size`, transformers' own class."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=size.hidden, num_hidden_layers=size.layers,
                         num_attention_heads=size.heads, num_key_value_heads=size.heads,
                         intermediate_size=size.intermediate, max_position_embeddings=preset.seq_len,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def parameter_counts(model) -> tuple[int, int]:
    """(total, non-embedding) parameters; tied input/output embeddings counted once."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    return total, total - embedding


def learning_rate(step: int, preset: ZooPreset, peak: float | None = None) -> float:
    """Linear warmup, then cosine decay to min_lr·peak at the last step (step counts from 0).

    `peak`: the size's own peak rate (default the preset's).
    """
    peak = preset.lr if peak is None else peak
    warm = max(1, round(preset.warmup * preset.total_steps))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, preset.total_steps - warm)
    return peak * (preset.min_lr + (1 - preset.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_starts(generator: torch.Generator, preset: ZooPreset, stream_len: int) -> torch.Tensor:
    """Random window starts of one batch; the generator state is the data order."""
    return torch.randint(0, stream_len - preset.seq_len - 1, (preset.batch,), generator=generator)


def checkpoint_dir(out: Path, preset: ZooPreset, size: ZooSize, step: int) -> Path:
    return out / size.name / f"step{step:07d}"


def read_info(folder: Path) -> dict | None:
    path = folder / INFO_FILE
    return json.loads(path.read_text()) if path.exists() else None


def completed_checkpoints(out: Path, size: ZooSize) -> list[Path]:
    """Checkpoint folders of one size that were fully written, oldest first."""
    root = out / size.name
    return sorted(p for p in root.glob("step*") if p.is_dir() and read_info(p)) if root.exists() else []


def _save(model, tokenizer, folder: Path, info: dict, state: dict | None) -> None:
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
    tmp.rename(folder)  # atomic: zoo.json inside means the checkpoint is complete


def train_size(size: ZooSize, preset: ZooPreset, tokenizer, stream: np.ndarray, evaluate, out: Path,
               seed: int, device: str = "cpu", on_checkpoint=None, say=print) -> list[Path]:
    """Train one size to preset.max_tokens, saving each checkpoint; resumes from the newest one.

    `evaluate(model) -> (nll nats/token, bits/byte)` on validation windows. Returns checkpoint
    folders, oldest first; `on_checkpoint(folder)` is called for each new one.
    """
    from transformers import set_seed

    set_seed(seed)
    model = build_model(size, preset, tokenizer).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr, betas=(0.9, 0.95), weight_decay=0.1)
    generator = torch.Generator().manual_seed(seed)  # same data order for every size, as in Pythia
    step, losses = 0, []
    done = completed_checkpoints(out, size)
    if done and (done[-1] / STATE_FILE).exists():
        state = torch.load(done[-1] / STATE_FILE, weights_only=False)
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(done[-1]).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr, betas=(0.9, 0.95), weight_decay=0.1)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, losses = state["step"], state["losses"]
        torch.set_rng_state(state["torch_rng"])
        say(f"{size.name}: resuming at step {step} ({tokens_label(step * preset.tokens_per_step)} tokens)")
    total, non_embedding = parameter_counts(model)
    ids = torch.from_numpy(stream.astype(np.int64))
    pending = [s for s in preset.checkpoint_steps() if s > step]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
    model.train()
    started = time.time()
    while pending:
        starts = batch_starts(generator, preset, ids.numel())
        batch = torch.stack([ids[s:s + preset.seq_len] for s in starts.tolist()]).to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, preset, size.peak_lr(preset))
        if autocast:
            with autocast:
                loss = model(input_ids=batch, labels=batch).loss
        else:
            loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step != pending[0]:
            continue
        pending.pop(0)
        model.eval()
        nll, bpb = evaluate(model)
        model.train()
        tokens = step * preset.tokens_per_step
        recent = losses[-max(1, min(len(losses), 20)):]
        info = {"preset": preset.name, "size": asdict(size) | {"intermediate": size.intermediate},
                "step": step, "train_tokens": tokens, "train_loss": float(np.mean(recent)),
                "nll_val": nll, "bpb_val": bpb, "total_params": total,
                "non_embedding_params": non_embedding, "seed": seed, "lr_now": learning_rate(step - 1, preset, size.peak_lr(preset)),
                "train_seconds": time.time() - started, "device": device}
        state = {"optimizer": optimizer.state_dict(), "generator": generator.get_state(), "step": step,
                 "losses": losses, "torch_rng": torch.get_rng_state()}
        folder = checkpoint_dir(out, preset, size, step)
        _save(model, tokenizer, folder, info, state)
        for older in completed_checkpoints(out, size)[:-1]:
            (older / STATE_FILE).unlink(missing_ok=True)  # only the newest is needed to resume
        say(f"{size.name}: {tokens_label(tokens)} tokens, train loss {info['train_loss']:.3f}, "
            f"validation {nll:.3f} nats/token ({bpb:.3f} bits/byte)")
        if on_checkpoint:
            on_checkpoint(folder)
    return completed_checkpoints(out, size)


def losses_curve(folder: Path) -> list[float]:
    """Training loss per step stored with a size's newest checkpoint ([] when not kept)."""
    path = folder / STATE_FILE
    return torch.load(path, weights_only=False)["losses"] if path.exists() else []
