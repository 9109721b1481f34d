"""The hippocampus model that ships inside salign: offline by name, in an nnU-Net round trip.

`weights/build_hippocampus.py` trains it on the 150 non-test cases; these cases are from the
test split (the last 50 ids), which it never saw.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from salign_cli.bench.few_label import fixed_test_split
from salign_cli.bundles.registry import load_registry


def test_the_registry_names_the_shipped_bundle_and_its_hub_repository() -> None:
    registry = load_registry()
    entry = registry.get("hippocampus")
    assert entry is not None and entry.bundled_folder is not None
    assert entry.repo_id == "salign/unet2d-hippocampus-msd"  # where `salign weights push` sends it
    assert (entry.bundled_folder / "model.safetensors").stat().st_size <= 10 * 2**20
    card = registry.card_path(entry)
    assert card is not None and "license: cc-by-sa-4.0" in card.read_text(encoding="utf-8")


def test_the_shipped_card_is_hub_metadata_generated_from_its_contract() -> None:
    from huggingface_hub import ModelCard

    from salign_cli.bundles.files import read_contract

    entry = load_registry().get("hippocampus")
    assert entry is not None and entry.bundled_folder is not None
    card = ModelCard.load(entry.bundled_folder / "README.md")
    evaluation = read_contract(entry.bundled_folder).evaluation
    assert card.data.license == "cc-by-sa-4.0"
    assert card.data.datasets == ["msd-task04-hippocampus"]
    dice = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert dice == {f"Dice {k}": v for k, v in evaluation["per_class_dice"].items()}
    assert evaluation["held_out_cases"] == 50 and min(dice.values()) > 0.8


def test_segment_by_name_offline_then_evaluate_an_nnunet_layout(
    cli, hippocampus_dir: Path, tmp_path: Path, block_all_sockets: list[object], monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dataset = tmp_path / "Dataset004_Hippocampus"
    (dataset / "imagesTs").mkdir(parents=True)
    (dataset / "labelsTs").mkdir()
    ids = [p.name.removesuffix(".nii.gz") for p in (hippocampus_dir / "labelsTr").iterdir()]
    cases = fixed_test_split(ids, 50)[-3:]
    for case in cases:  # nnU-Net names: the image carries the _0000 channel suffix
        shutil.copy(
            hippocampus_dir / "imagesTr" / f"{case}.nii.gz",
            dataset / "imagesTs" / f"{case}_0000.nii.gz",
        )
        shutil.copy(hippocampus_dir / "labelsTr" / f"{case}.nii.gz", dataset / "labelsTs")

    segmented = cli(
        "segment", str(dataset / "imagesTs"), "-o", str(tmp_path / "preds"),
        "--model", "hippocampus", "--device", "cpu", "-w", str(tmp_path / "ws"),
    )  # fmt: skip
    assert segmented.exit_code == 0, segmented.output
    assert block_all_sockets == []
    for case in cases:
        mask = nib.load(tmp_path / "preds" / f"{case}_seg.nii.gz")
        image = nib.load(hippocampus_dir / "imagesTr" / f"{case}.nii.gz")
        assert mask.shape == image.shape
        np.testing.assert_array_equal(mask.affine, image.affine)

    evaluated = cli("evaluate", str(tmp_path / "preds"), str(dataset / "labelsTs"))
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((tmp_path / "preds" / "summary.json").read_text())
    assert summary["n_cases"] == 3
    assert summary["overall"]["dice"]["mean"] > 0.8
