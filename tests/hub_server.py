"""A loopback stand-in for the Hugging Face Hub, so Hub code is tested without any network.

It speaks the part of the protocol ``huggingface_hub.hf_hub_download`` uses (checked against
huggingface_hub 2.4 by logging what it sends): ``HEAD`` and ``GET`` on
``/{org}/{name}/resolve/{revision}/{path}`` answered with ``ETag`` (the sha256 of the content,
as the Hub does for LFS files), ``X-Repo-Commit`` and ``Content-Length``; errors carry the
Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the client
raises the same exceptions it raises against huggingface.co. Private repos require
``Authorization: Bearer <token>``. Every request is recorded in ``FakeHub.requests``.

Uploads are not served: ``salign weights push`` is tested against a stubbed ``HfApi``.

Use from any test folder::

    from hub_server import loopback_hub, publish_bundle, write_tiny_bundle  # noqa: F401
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # set => private: this bearer token is required


@dataclass
class FakeHub:
    """The server's state; tests add commits and read ``requests``."""

    url: str = ""
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        refs: tuple[str, ...] = ("main",),
        token: str | None = None,
    ) -> str:
        """Store ``files`` as a new commit, point ``refs`` (branches/tags) at it, return its id."""
        repo = self.repos.setdefault(repo_id, FakeRepo())
        repo.token = token or repo.token
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        digest.update(str(len(repo.commits)).encode())
        commit = digest.hexdigest()
        repo.commits[commit] = dict(files)
        for ref in refs:
            repo.refs[ref] = commit
        return commit

    def resolve_paths(self) -> list[str]:
        """The ``/resolve/`` paths requested so far (method + path), for assertions."""
        return [f"{method} {path}" for method, path, _ in self.requests]


def _answer(hub: FakeHub, method: str, raw_path: str, authorization: str | None):
    """(status, headers, body) for one request, following the Hub's conventions."""
    parts = [unquote(p) for p in urlsplit(raw_path).path.strip("/").split("/")]
    if len(parts) < 5 or parts[2] != "resolve":
        return 404, {"X-Error-Code": "EntryNotFound"}, b"unknown endpoint"
    repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
    repo = hub.repos.get(repo_id)
    if repo is None or (repo.token and authorization != f"Bearer {repo.token}"):
        return 401, {"X-Error-Code": "RepoNotFound"}, b"Repository not found"
    commit = revision if revision in repo.commits else repo.refs.get(revision)
    if commit is None:
        return 404, {"X-Error-Code": "RevisionNotFound"}, b"Revision not found"
    content = repo.commits[commit].get(filename)
    if content is None:
        return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"Entry not found"
    headers = {
        "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
        "X-Repo-Commit": commit,
        "Content-Type": "application/octet-stream",
    }
    return 200, headers, content


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the Hub

        def _serve(self, send_body: bool) -> None:
            authorization = self.headers.get("Authorization")
            hub.requests.append((self.command, self.path, authorization))
            status, headers, body = _answer(hub, self.command, self.path, authorization)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def do_GET(self) -> None:
            self._serve(send_body=True)

        def log_message(self, format: str, *args: object) -> None:
            """Silence the default stderr log; ``hub.requests`` records everything."""

    return Handler


@pytest.fixture
def loopback_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake Hub; ``HF_ENDPOINT`` points at it and ``HF_HUB_CACHE`` at a fresh folder."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


def write_tiny_bundle(folder: Path, seed: int = 0, kind: str = "finetuned") -> Path:
    """A real, loadable bundle with a width-8, depth-2 U-Net (about 30k weights, ~0.1 s)."""
    import torch

    from salign_cli.bundles.contract import BundleContract
    from salign_cli.bundles.store import save_bundle
    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.model.unet import UNet2D, UNetConfig

    torch.manual_seed(seed)
    config = UNetConfig(in_channels=1, num_classes=3, width=8, depth=2)
    contract = BundleContract(
        kind=kind,
        architecture=config,
        modality="MR",
        classes={"0": "background", "1": "anterior", "2": "posterior"},
        preprocessing=PreprocessConfig(modality="MR", target_spacing_mm=(1.0, 1.0)),
        pretraining={"method": "SAL", "steps": 10, "data": "tiny synthetic"},
        finetuning={"labelled_case_ids": ["hippocampus_001"], "seed": seed},
        evaluation={"per_class_dice": {"anterior": 0.5, "posterior": 0.25}},
    )
    return save_bundle(folder, UNet2D(config).state_dict(), contract)


def publish_bundle(hub: FakeHub, repo_id: str, folder: Path, **kwargs: object) -> str:
    """Put the files of a bundle folder on the fake Hub as one commit; returns the commit id."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    return hub.add_commit(repo_id, files, **kwargs)  # type: ignore[arg-type]
