"""Torch-free answers about where Hugging Face Hub files are cached (honours HF_HOME / HF_HUB_CACHE)."""

from __future__ import annotations

from pathlib import Path


def hub_cache_dir() -> Path:
    """The folder huggingface_hub downloads into, as it resolves it right now."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)
