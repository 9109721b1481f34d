"""Hub settings are read from the environment at call time, with huggingface_hub's precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from salign_cli.bundles import hub_paths

HF_VARIABLES = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "XDG_CACHE_HOME",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in HF_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_cache_dir_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("HOME", str(tmp_path / "home"))
    assert hub_paths.hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_paths.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    clean_env.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_paths.hub_cache_dir() == tmp_path / "hf" / "hub"
    clean_env.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_paths.hub_cache_dir() == tmp_path / "cache"


def test_endpoint_offline_and_token(clean_env: pytest.MonkeyPatch) -> None:
    assert hub_paths.hub_endpoint() == "https://huggingface.co"
    clean_env.setenv("HF_ENDPOINT", "http://mirror.local:8080/")
    assert hub_paths.hub_endpoint() == "http://mirror.local:8080"
    assert hub_paths.hub_offline() is False
    for value, expected in (("1", True), ("YES", True), ("true", True), ("0", False)):
        clean_env.setenv("HF_HUB_OFFLINE", value)
        assert hub_paths.hub_offline() is expected, value
    assert hub_paths.hub_token() is None
    clean_env.setenv("HF_TOKEN", "hf_abc")
    assert hub_paths.hub_token() == "hf_abc"
