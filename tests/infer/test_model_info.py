"""`ModelInfo` derives the ``--report`` model entry from where the bundle came from and its contract."""

from __future__ import annotations

from pathlib import Path

from salign_cli.bundles.files import read_contract
from salign_cli.bundles.spec import ResolvedBundle
from salign_cli.infer.predictor import BundleOrigin
from salign_cli.infer.report import ModelInfo

SHIPPED = Path(__file__).resolve().parents[2] / "salign_cli" / "_weights" / "hippocampus"


def test_the_report_entry_keeps_its_keys_and_values() -> None:
    commit = "c" * 40
    resolved = ResolvedBundle("org/name@v1", Path("/cache/snap"), "hub", "org/name", "v1", commit)
    info = ModelInfo(BundleOrigin(resolved, read_contract(SHIPPED)), largest_component=True)
    assert info.to_dict() == {
        "spec": "org/name@v1",
        "folder": "/cache/snap",
        "source": "hub",
        "repo_id": "org/name",
        "revision": "v1",
        "commit": commit,
        "weights_sha256": "a51171836a5e33c13a344d367a0e099779f47da7e685ef0271577ef24660275a",
        "modality": "MR",
        "classes": ["background", "Anterior", "Posterior"],
        "largest_component": True,
    }
    assert list(info.to_dict()) == [  # the order users' JSON readers have seen
        "spec", "folder", "source", "repo_id", "revision", "commit",
        "weights_sha256", "modality", "classes", "largest_component",
    ]  # fmt: skip
