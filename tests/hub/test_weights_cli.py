"""`salign weights ...` end to end against the loopback Hub (push against a stubbed HfApi)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
from hub_server import FakeHub, publish_bundle


def test_list_is_honest_about_unpublished_bundles_and_shows_the_cache(
    cli, loopback_hub: FakeHub, tiny_bundle: Path
) -> None:
    result = cli("weights", "list")
    assert result.exit_code == 0, result.output
    assert "salign/sal-unet2d-mri-base" in result.output
    assert "not published yet" in result.output
    assert "ships with salign" in result.output  # the bundled hippocampus model
    assert "no salign bundles in the Hub cache yet" in result.output
    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle, refs=("main", "v1"))
    assert cli("weights", "download", "org/name@v1").exit_code == 0
    listed = cli("weights", "list").output
    assert "org/name" in listed and commit[:12] in listed and "v1" in listed


def test_download_then_offline_use_by_commit(
    cli, loopback_hub: FakeHub, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, request
) -> None:
    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle)
    result = cli("weights", "download", f"org/name@{commit}")
    assert result.exit_code == 0, result.output
    assert "downloaded" in result.output and commit in result.output

    request.getfixturevalue("block_all_sockets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = cli("weights", "info", f"org/name@{commit}", "--json")
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["classes"]["2"] == "posterior"
    again = cli("weights", "download", f"org/name@{commit}")
    assert again.exit_code == 0 and "already cached" in again.output

    import torch

    from salign_cli.bundles.store import build_model, load_bundle

    model = build_model(load_bundle(f"org/name@{commit}")).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 12, 12)).shape == (1, 3, 12, 12)


def test_segment_offline_with_a_downloaded_bundle(
    cli, loopback_hub: FakeHub, tiny_bundle: Path, tmp_path: Path, monkeypatch, request
) -> None:
    """The issue's "done when": download by commit, then segment with HF_HUB_OFFLINE=1."""
    import nibabel as nib

    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle)
    assert cli("weights", "download", f"org/name@{commit}").exit_code == 0
    scan = tmp_path / "x.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(16, 12, 6)).astype(np.float32), np.eye(4)), scan)
    request.getfixturevalue("block_all_sockets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mask = tmp_path / "mask.nii.gz"
    result = cli("segment", str(scan), "--model", f"org/name@{commit}", "-o", str(mask))
    assert result.exit_code == 0, result.output
    assert nib.load(mask).shape == (16, 12, 6)


def test_tampered_weights_fail_with_one_clear_line(
    cli, loopback_hub: FakeHub, tiny_bundle: Path
) -> None:
    weights = tiny_bundle / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    result = cli("weights", "info", str(tiny_bundle))
    assert result.exit_code == 2
    assert "tampered" in result.output and "Traceback" not in result.output


def test_unpublished_registry_name_cannot_be_downloaded(cli, loopback_hub: FakeHub) -> None:
    result = cli("weights", "download", "salign/sal-unet2d-hippocampus")
    assert result.exit_code == 2
    assert "not published on the Hub yet" in result.output
    shown = cli("weights", "info", "salign/sal-unet2d-hippocampus")
    assert shown.exit_code == 0 and "not published yet" in shown.output
    assert loopback_hub.requests == []


def test_import_cli_then_offline_info(
    cli, loopback_hub: FakeHub, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = "org/usb@" + "e" * 40
    result = cli("weights", "import", str(tiny_bundle), "--as", target)
    assert result.exit_code == 0, result.output
    assert cli("weights", "info", target).exit_code == 0


class _StubHfApi:
    """Records what `push` asks of the Hub. Note: uploads are not served by the loopback Hub."""

    calls: ClassVar[list[tuple[str, tuple, dict]]] = []

    def __init__(self, **kwargs: object) -> None:
        self.calls.append(("init", (), kwargs))

    def create_repo(self, *args: object, **kwargs: object) -> None:
        self.calls.append(("create_repo", args, kwargs))

    def create_commit(self, *args: object, **kwargs: object) -> SimpleNamespace:
        self.calls.append(("create_commit", args, kwargs))
        return SimpleNamespace(oid="f" * 40)

    def create_tag(self, *args: object, **kwargs: object) -> None:
        self.calls.append(("create_tag", args, kwargs))


def test_push_uploads_verified_bundle_as_one_tagged_commit(
    cli, loopback_hub: FakeHub, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _StubHfApi)
    _StubHfApi.calls = []
    run_dir = tmp_path / "runs" / "finetune-1"
    run_dir.mkdir(parents=True)
    tiny_bundle.rename(run_dir / "bundle")
    card = tmp_path / "card.md"
    card.write_text("---\nlibrary_name: salign\n---\n# curated card\n")
    result = cli(
        "weights", "push", str(run_dir), "org/pushed", "--private", "--revision", "v1",
        "--card", str(card),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = [name for name, _, _ in _StubHfApi.calls]
    assert names == ["init", "create_repo", "create_commit", "create_tag"]
    assert _StubHfApi.calls[0][2]["endpoint"] == loopback_hub.url
    assert _StubHfApi.calls[1][2] == {"private": True, "exist_ok": True}
    operations = _StubHfApi.calls[2][2]["operations"]
    uploaded = {op.path_in_repo: Path(op.path_or_fileobj) for op in operations}
    assert uploaded == {
        "salign.json": run_dir / "bundle" / "salign.json",
        "README.md": card,
        "model.safetensors": run_dir / "bundle" / "model.safetensors",
    }
    assert _StubHfApi.calls[3][2] == {"tag": "v1", "revision": "f" * 40}
    assert '"revision": "' + "f" * 40 in result.output


def test_push_refuses_a_tampered_bundle(cli, tiny_bundle: Path, monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _StubHfApi)
    _StubHfApi.calls = []
    (tiny_bundle / "model.safetensors").write_bytes(b"junk")
    result = cli("weights", "push", str(tiny_bundle), "org/pushed")
    assert result.exit_code == 2 and "tampered" in result.output
    assert _StubHfApi.calls == []
