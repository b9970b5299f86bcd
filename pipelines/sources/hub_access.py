"""Fail fast when the Hugging Face Hub cannot be reached, instead of minutes of noisy retries.

The hub clients retry each file five times with back-off when offline (about a minute per model,
with a page of warnings). One short TCP probe decides; when it fails, the clients are switched to
offline mode, so that what the local hub cache holds still loads and the rest fails at once.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse


@lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to the hub endpoint ($HF_ENDPOINT) opens within `timeout_s`."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def use_offline_mode_if_unreachable() -> bool:
    """Switch transformers/datasets to the local cache only when the hub is unreachable; True if so."""
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import huggingface_hub.constants as hub_constants

    hub_constants.HF_HUB_OFFLINE = True  # read at import time by the clients: set it here too
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    return True
