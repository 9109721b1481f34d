"""Fixtures for the Hub, registry and bundle tests: the loopback Hub and a tiny real bundle."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from hub_server import loopback_hub, write_tiny_bundle

__all__ = ["block_all_sockets", "loopback_hub", "tiny_bundle"]


@pytest.fixture(scope="session")
def _tiny_bundle_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture
def tiny_bundle(_tiny_bundle_master: Path, tmp_path: Path) -> Path:
    """A fresh copy of a width-8 bundle (3 classes, MR) that a test may modify."""
    return Path(shutil.copytree(_tiny_bundle_master, tmp_path / "bundle"))


@pytest.fixture
def block_all_sockets(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuse every connection, loopback included: proves a code path needs no network.

    huggingface_hub's pooled keep-alive connections are closed first, as a real outage would.
    """
    from huggingface_hub.utils import close_session

    close_session()
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"all sockets blocked in this test (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts
