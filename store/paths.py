"""Where this machine keeps what it builds or fetches (models, corpora, answers): one root."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$PTQ_ADVISOR_CACHE, else ~/.cache/ptq-advisor."""
    root = os.environ.get("PTQ_ADVISOR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "ptq-advisor"
