"""The weights registry: honest about what is published, confined to its folder, torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from salign_cli.bundles.registry import load_registry, registry_path, safe_join
from salign_cli.errors import InputError, SalignError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, entry: dict) -> Path:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"schema_version": 1, "bundles": {"org/x": entry}}))
    return path


ENTRY = {
    "repo_id": "org/x",
    "revision": None,
    "sha256": None,
    "published": False,
    "kind": "finetuned",
    "modality": "MR",
    "classes": {"0": "background", "1": "a"},
}


def test_the_registry_has_one_home_inside_the_package() -> None:
    assert registry_path() == REPO_ROOT / "salign_cli" / "_weights" / "registry.json"
    assert not (REPO_ROOT / "weights" / "registry.json").exists()


def test_shipped_entries_are_consistent_and_cards_exist() -> None:
    registry = load_registry()
    assert "salign/sal-unet2d-mri-base" in registry.entries
    for entry in registry.entries.values():
        assert entry.published == (entry.revision is not None) == (entry.sha256 is not None)
        assert registry.card_path(entry) is not None, f"card missing for {entry.name}"


@pytest.mark.parametrize("bad", ["../secrets.md", "/etc/passwd", "cards/../../x.md", "C:/x.md", ""])
def test_paths_may_not_escape(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError, match="must be relative and stay inside"):
        safe_join(tmp_path, bad, "registry.json")
    with pytest.raises(InputError):
        load_registry(_write(tmp_path, {**ENTRY, "card": bad}))


def test_unpublished_entry_may_not_claim_a_revision(tmp_path: Path) -> None:
    path = _write(tmp_path, {**ENTRY, "revision": "a" * 40})
    with pytest.raises(SalignError, match="unpublished entry must not claim"):
        load_registry(path)


def test_published_entry_needs_commit_and_hash(tmp_path: Path) -> None:
    path = _write(tmp_path, {**ENTRY, "published": True, "revision": "main", "sha256": "0" * 64})
    with pytest.raises(SalignError, match="40-hex commit"):
        load_registry(path)
    good = {**ENTRY, "published": True, "revision": "a" * 40, "sha256": "0" * 64}
    entry = load_registry(_write(tmp_path, good)).get("org/x")
    assert entry is not None and entry.spec == "org/x@" + "a" * 40


def test_registry_hub_and_weights_cli_do_not_import_torch() -> None:
    code = (
        "import sys, salign_cli.bundles.registry, salign_cli.bundles.resolve,"
        " salign_cli.bundles.cache, salign_cli.cli.weights;"
        "from salign_cli.bundles.registry import load_registry; load_registry();"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_a_bundled_entry_resolves_to_its_shipped_folder_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_bundle
) -> None:
    import salign_cli.bundles.registry as registry_module
    from salign_cli.bundles.resolve import open_bundle

    shipped = tmp_path / "_weights"
    shipped.mkdir()
    make_bundle(name="bundle").rename(shipped / "tiny")
    monkeypatch.setattr(registry_module, "BUNDLED_DIR", shipped)
    path = _write(tmp_path, {**ENTRY, "bundled": "tiny"})
    path.rename(tmp_path / "registry.json")
    monkeypatch.setattr(registry_module, "registry_path", lambda: tmp_path / "registry.json")
    entry = load_registry().get("org/x")
    assert entry is not None and entry.bundled_folder == shipped / "tiny"
    resolved = open_bundle("org/x")  # unpublished, yet usable: it ships with salign
    assert resolved.source == "local" and resolved.folder == shipped / "tiny"
    registry = load_registry()
    assert registry.card_path(entry) == shipped / "tiny" / "README.md"  # its own card serves
    (shipped / "tiny" / "README.md").unlink()
    assert registry.card_path(entry) is None
    with pytest.raises(InputError, match="must be relative"):
        load_registry(_write(tmp_path, {**ENTRY, "bundled": "../elsewhere"}))
