"""Load a causal LM and its tokenizer from a hub id, a local folder, or a GGUF file.

GGUF files are dequantized to the requested dtype by transformers (needs `gguf`, `accelerate`).
Remote code runs only when asked. A failed load ends in one `ModelLoadError` line that says what
to try, never a traceback from deep inside the hub client.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipelines.sources.hub_access import use_offline_mode_if_unreachable
from store.errors import InputError

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


class ModelLoadError(InputError, RuntimeError):
    """A model that could not be loaded; the message says why and what to try."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model came from: enough to find it again and to know it is the same one."""

    spec: str
    kind: str  # "hub", "folder" or "gguf"
    path: str  # hub id or local folder
    gguf_file: str | None
    revision: str | None
    fingerprint: str  # sha256 of the weight files (local) or the revision asked for (hub)


def resolve(spec: str, gguf_file: str | None = None) -> tuple[str, str, str | None]:
    """(kind, path, gguf_file) for a spec: `x.gguf`, a folder (+ optional gguf_file), or a hub id."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", str(path.parent), path.name
    if path.is_dir():
        if gguf_file is None and not (path / "config.json").exists():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                gguf_file = ggufs[0]
            elif not ggufs:
                raise ModelLoadError(f"{path} has neither config.json nor a .gguf file")
            else:
                raise ModelLoadError(f"{path} holds several GGUF files; pick one with gguf_file: {ggufs}")
        return ("gguf" if gguf_file else "folder"), str(path), gguf_file
    if spec.startswith((".", "/", "~")) or spec.endswith(".gguf"):
        raise ModelLoadError(f"no such model file or folder: {spec}")
    return "hub", spec, gguf_file


def fingerprint_files(folder: str, gguf_file: str | None) -> str:
    """sha256 over the weight files of a local model (names and contents), hex."""
    root = Path(folder)
    names = [gguf_file] if gguf_file else sorted(
        p.name for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        with open(root / name, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def load_model(spec: str, *, dtype: str = "float32", gguf_file: str | None = None,
               revision: str | None = None, trust_remote_code: bool = False, device: str = "cpu"):
    """(model, tokenizer, ModelSource) for a hub id, local folder or GGUF file; eval mode."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    kind, path, gguf_file = resolve(spec, gguf_file)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = kind == "hub" and use_offline_mode_if_unreachable()
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, DTYPES[dtype]), **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as err:
        where = "the Hugging Face Hub" if kind == "hub" else path
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        if offline:
            reason = "the hub is unreachable and the model is not in the local hub cache"
        hint = " Offline? pass a local folder or a .gguf file." if kind == "hub" else ""
        raise ModelLoadError(f"could not load model {spec!r} from {where}: {reason}.{hint}") from None
    model.to(device).eval()
    fp = fingerprint_files(path, gguf_file) if kind != "hub" else f"revision:{revision or 'main'}"
    return model, tokenizer, ModelSource(spec, kind, path, gguf_file, revision, fp)
