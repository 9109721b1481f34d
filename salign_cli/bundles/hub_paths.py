"""Torch-free, import-free answers about the Hugging Face Hub settings, read at call time.

``huggingface_hub.constants`` freezes ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` when it is first imported. salign reads the environment each time it is asked
instead and passes the answers to ``huggingface_hub`` explicitly, so a variable set after start-up
(a test, a notebook cell) is honoured, and ``salign info`` can answer without importing the Hub
client at all. The precedence rules are the ones ``huggingface_hub`` documents.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE_VALUES = {"1", "on", "yes", "true"}


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def hf_home() -> Path:
    """``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    if os.environ.get("HF_HOME"):
        return _expand(os.environ["HF_HOME"])
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return _expand(os.path.join(xdg_cache, "huggingface"))


def hub_cache_dir() -> Path:
    """The folder ``huggingface_hub`` downloads into: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return _expand(explicit) if explicit else hf_home() / "hub"


def hub_endpoint() -> str:
    """The Hub's base URL: ``$HF_ENDPOINT`` (a mirror or a test server), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """True when ``$HF_HUB_OFFLINE`` (or the older ``$TRANSFORMERS_OFFLINE``) is set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE_VALUES


def hub_token() -> str | None:
    """``$HF_TOKEN`` if set; ``None`` lets ``huggingface_hub`` fall back to its stored login."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
