"""Resolving --model against a loopback Hub: download, pins, tampering, offline, import."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hub_server import FakeHub, publish_bundle, write_tiny_bundle

import salign_cli.bundles.registry
from salign_cli.bundles.cache import cached_bundles, import_bundle
from salign_cli.bundles.resolve import open_bundle
from salign_cli.bundles.spec import parse_spec
from salign_cli.bundles.store import load_bundle
from salign_cli.errors import InputError, SalignError


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _use_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bundles: dict) -> None:
    path = tmp_path / "registry" / "registry.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"schema_version": 1, "bundles": bundles}))
    monkeypatch.setattr(salign_cli.bundles.registry, "registry_path", lambda: path)


def _published(repo_id: str, commit: str, sha256: str) -> dict:
    return {
        "repo_id": repo_id,
        "revision": commit,
        "sha256": sha256,
        "published": True,
        "kind": "finetuned",
        "modality": "MR",
        "classes": {"0": "background", "1": "anterior", "2": "posterior"},
    }


def test_parse_spec(tmp_path: Path) -> None:
    assert parse_spec(str(tmp_path)).folder == tmp_path.resolve()
    spec = parse_spec("org/name@v1.0")
    assert (spec.repo_id, spec.revision) == ("org/name", "v1.0")
    assert parse_spec("org/name").revision is None
    with pytest.raises(InputError, match="not published on the Hub yet"):
        parse_spec("salign/sal-unet2d-mri-base")
    with pytest.raises(InputError, match="not a bundle folder, a registry name"):
        parse_spec("just-a-name")
    with pytest.raises(InputError, match="no such bundle folder"):
        parse_spec("./missing/folder")
    with pytest.raises(InputError, match="not a tag, branch or 40-hex commit"):
        parse_spec("org/name@../../etc")


def test_download_lands_in_the_standard_cache(
    loopback_hub: FakeHub, tiny_bundle: Path, tmp_path: Path
) -> None:
    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle)
    resolved = open_bundle("org/name")
    expected = tmp_path / "hf-cache" / "models--org--name" / "snapshots" / commit
    assert (resolved.folder, resolved.source, resolved.commit) == (expected, "hub", commit)
    assert _sha256(expected / "model.safetensors") == _sha256(tiny_bundle / "model.safetensors")
    assert (tmp_path / "hf-cache" / "models--org--name" / "refs" / "main").read_text() == commit


def test_pinned_revision_wins_over_main(loopback_hub: FakeHub, tmp_path: Path) -> None:
    old = write_tiny_bundle(tmp_path / "old", seed=1)
    new = write_tiny_bundle(tmp_path / "new", seed=2)
    old_commit = publish_bundle(loopback_hub, "org/name", old, refs=("main", "v1"))
    publish_bundle(loopback_hub, "org/name", new, refs=("main",))
    for spec in (f"org/name@{old_commit}", "org/name@v1"):
        weights = open_bundle(spec).folder / "model.safetensors"
        assert _sha256(weights) == _sha256(old / "model.safetensors"), spec
    latest = open_bundle("org/name").folder / "model.safetensors"
    assert _sha256(latest) == _sha256(new / "model.safetensors")


def test_tampered_weights_on_the_hub_are_refused(loopback_hub: FakeHub, tiny_bundle: Path) -> None:
    weights = tiny_bundle / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle)
    with pytest.raises(
        InputError, match=rf"tampered.*salign weights download org/name@{commit} --force"
    ):
        load_bundle(f"org/name@{commit}")


def test_tampered_cache_is_refused_and_force_repairs_it(
    loopback_hub: FakeHub, tiny_bundle: Path
) -> None:
    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle)
    spec = f"org/name@{commit}"
    cached = open_bundle(spec).folder / "model.safetensors"
    blob = cached.resolve()
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(InputError, match="do not match the sha256"):
        load_bundle(spec)
    open_bundle(spec, force=True)
    assert load_bundle(spec).contract.kind == "finetuned"


def test_pinned_commit_is_reused_offline_with_all_sockets_blocked(
    loopback_hub: FakeHub, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, request
) -> None:
    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle)
    open_bundle(f"org/name@{commit}")
    attempts = request.getfixturevalue("block_all_sockets")
    requests_before = len(loopback_hub.requests)
    # A commit never changes, so even without HF_HUB_OFFLINE no request is needed...
    assert load_bundle(f"org/name@{commit}").contract.num_classes == 3
    # ...and with it, the same.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_bundle(f"org/name@{commit}").folder.name == commit
    assert attempts == [] and len(loopback_hub.requests) == requests_before


def test_unreachable_hub_falls_back_to_cache_and_says_so(
    loopback_hub: FakeHub, tiny_bundle: Path, request
) -> None:
    commit = publish_bundle(loopback_hub, "org/name", tiny_bundle, refs=("main", "v1"))
    open_bundle("org/name@v1")
    request.getfixturevalue("block_all_sockets")
    notes: list[str] = []
    resolved = open_bundle("org/name@v1", notify=notes.append)
    assert (resolved.source, resolved.commit) == ("cache", commit)
    assert len(notes) == 1
    assert "cannot reach" in notes[0] and "using the cached copy of org/name@v1" in notes[0]


def test_no_network_and_no_cache_explains_the_offline_recipe(
    loopback_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request
) -> None:
    request.getfixturevalue("block_all_sockets")
    cache = tmp_path / "hf-cache"
    with pytest.raises(SalignError) as caught:
        open_bundle("org/name@v2")
    message = str(caught.value)
    for needed in (
        "org/name@v2",
        "cannot reach",
        str(cache),
        "salign weights download org/name@v2",
    ):
        assert needed in message
    assert "HF_HUB_OFFLINE=1" in message and "salign weights import" in message
    assert "\n" not in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SalignError, match=r"HF_HUB_OFFLINE is set, and it is not in the cache"):
        open_bundle("org/name@v2")


def test_hub_answers_become_clear_input_errors(loopback_hub: FakeHub, tiny_bundle: Path) -> None:
    publish_bundle(loopback_hub, "org/name", tiny_bundle)
    with pytest.raises(InputError, match="no such model repository"):
        open_bundle("org/other")
    with pytest.raises(InputError, match="no such revision"):
        open_bundle("org/name@v9")
    loopback_hub.add_commit("org/notabundle", {"README.md": b"hi"})
    with pytest.raises(InputError, match="not a complete salign bundle"):
        open_bundle("org/notabundle")


def test_private_repo_needs_hf_token_read_at_call_time(
    loopback_hub: FakeHub, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_bundle(loopback_hub, "org/private", tiny_bundle, token="hf_secret")
    with pytest.raises(InputError, match="set HF_TOKEN"):
        open_bundle("org/private")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert open_bundle("org/private").source == "hub"
    assert loopback_hub.requests[-1][2] == "Bearer hf_secret"


def test_registry_name_fetches_its_pinned_commit_and_checks_its_hash(
    loopback_hub: FakeHub, tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = publish_bundle(loopback_hub, "org/model", tiny_bundle)
    publish_bundle(loopback_hub, "org/model", write_tiny_bundle(tmp_path / "later", seed=5))
    sha = _sha256(tiny_bundle / "model.safetensors")
    _use_registry(
        monkeypatch,
        tmp_path,
        {
            "good/name": _published("org/model", pinned, sha),
            "bad/name": _published("org/model", pinned, "0" * 64),
        },
    )
    assert open_bundle("good/name").commit == pinned
    with pytest.raises(InputError, match="sha256 in the salign registry for bad/name"):
        open_bundle("bad/name")


def test_import_makes_a_registry_name_work_offline(
    loopback_hub: FakeHub,
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request,
) -> None:
    commit = "c" * 40
    _use_registry(
        monkeypatch,
        tmp_path,
        {"lab/hippo": _published("lab/hippo", commit, _sha256(tiny_bundle / "model.safetensors"))},
    )
    attempts = request.getfixturevalue("block_all_sockets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    imported = import_bundle(tiny_bundle)  # identified by its weights' sha256
    assert imported.folder == tmp_path / "hf-cache" / "models--lab--hippo" / "snapshots" / commit
    bundle = load_bundle("lab/hippo")
    assert bundle.folder == imported.folder and bundle.contract.num_classes == 3
    assert attempts == []


def test_import_with_explicit_target_and_refusals(tiny_bundle: Path, loopback_hub: FakeHub) -> None:
    commit = "d" * 40
    import_bundle(tiny_bundle, f"org/usb@{commit}")
    assert load_bundle(f"org/usb@{commit}").folder.name == commit
    with pytest.raises(InputError, match="match no published registry entry"):
        import_bundle(tiny_bundle)
    with pytest.raises(InputError, match="40-hex commit"):
        import_bundle(tiny_bundle, "org/usb@v1")
    (tiny_bundle / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(InputError, match="tampered"):
        import_bundle(tiny_bundle, f"org/usb@{commit}")


def test_cached_bundles_lists_what_huggingface_hub_cached(
    loopback_hub: FakeHub, tiny_bundle: Path, tmp_path: Path
) -> None:
    assert cached_bundles() == []  # no cache folder at all yet
    full = publish_bundle(loopback_hub, "org/full", tiny_bundle, refs=("main", "v1"))
    contract_only = publish_bundle(loopback_hub, "org/peek", tiny_bundle)
    not_a_bundle = loopback_hub.add_commit("org/other", {"config.json": b"{}"})
    open_bundle("org/full@v1")
    open_bundle("org/peek", contract_only=True)
    from huggingface_hub import hf_hub_download

    hf_hub_download(
        "org/other", "config.json", cache_dir=tmp_path / "hf-cache", endpoint=loopback_hub.url
    )
    imported = "e" * 40
    import_bundle(tiny_bundle, f"org/usb@{imported}")
    listed = [(b.repo_id, b.commit, b.refs, b.complete) for b in cached_bundles()]
    assert listed == [
        ("org/full", full, ("v1",), True),
        ("org/peek", contract_only, ("main",), False),
        ("org/usb", imported, (), True),
    ]
    assert not_a_bundle not in {commit for _, commit, _, _ in listed}
    snapshot = tmp_path / "hf-cache" / "models--org--usb" / "snapshots" / imported
    assert [b.folder for b in cached_bundles() if b.repo_id == "org/usb"] == [snapshot]
