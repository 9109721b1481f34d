"""`salign evaluate`: exit codes, summary.json content, and the real hippocampus labels against themselves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def save_labels(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a label NIfTI with nibabel directly (not with the code under test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """One case: reference class 1 = 6 voxels, prediction = 4 of which 3 overlap (Dice 0.6);
    class 2 = the same 2 voxels in both (Dice 1); plus one unmatched file on each side."""
    ref = np.zeros((3, 3, 3), np.uint8)
    ref[0, 0, :] = ref[2, 0, :] = 1
    ref[1, 2, 1:] = 2
    pred = np.zeros_like(ref)
    pred[0, 0, :] = pred[1, 1, 1] = 1
    pred[1, 2, 1:] = 2
    preds, labels = tmp_path / "pred", tmp_path / "labels"
    save_labels(preds / "case_seg.nii.gz", pred)
    save_labels(labels / "case.nii.gz", ref)
    save_labels(preds / "stray.nii.gz", pred)
    save_labels(labels / "unlabelled_case.nii.gz", ref)
    return preds, labels


def test_summary_written_in_pred_folder(cli, folders: tuple[Path, Path]) -> None:
    preds, labels = folders
    result = cli("evaluate", str(preds), str(labels))
    assert result.exit_code == 0, result.output
    assert "0.600" in result.output and "1.000" in result.output
    assert "stray.nii.gz" in result.output and "unlabelled_case.nii.gz" in result.output
    payload = json.loads((preds / "summary.json").read_text())
    assert payload["n_cases"] == 1
    assert payload["classes"]["1"]["dice"] == {"mean": pytest.approx(0.6), "sd": None, "n": 1}
    assert payload["classes"]["2"]["dice"]["mean"] == 1.0
    assert payload["overall"]["dice"]["mean"] == pytest.approx(0.8)
    case = payload["metric_per_case"][0]
    assert case["case"] == "case"
    assert case["metrics"]["1"] == {
        "dice": pytest.approx(0.6),
        "tp": 3,
        "fp": 1,
        "fn": 3,
        "tn": 27 - 7,  # voxels in neither class-1 mask
        "n_pred": 4,
        "n_ref": 6,
    }
    assert [Path(p).name for p in payload["unmatched"]["predictions"]] == ["stray.nii.gz"]


def test_hd95_per_case_and_output_option(cli, folders: tuple[Path, Path], tmp_path: Path) -> None:
    preds, labels = folders
    output = tmp_path / "results" / "metrics.json"
    result = cli(
        "evaluate",
        str(preds),
        str(labels),
        "--hd95",
        "--per-case",
        "--classes",
        "2",
        "-o",
        str(output),
    )
    assert result.exit_code == 0, result.output
    assert not (preds / "summary.json").exists()
    payload = json.loads(output.read_text())
    assert list(payload["classes"]) == ["2"]
    assert payload["classes"]["2"]["hd95_mm"]["mean"] == 0.0  # identical masks
    assert payload["classes"]["2"]["n_hd95_undefined"] == 0
    assert "Per case" in result.output and "case" in result.output


def test_nsd_per_class_in_summary_and_tables(cli, folders: tuple[Path, Path]) -> None:
    # Every voxel of these 3×3×3 masks is a surface voxel. Class 1 at 1 mm spacing: the 3
    # shared voxels of each side are 0 mm away; the predicted centre (1, 1, 1) is √2 mm from
    # reference (0, 0, 1); of the reference row (2, 0, :), only (2, 0, 1) is within √2 of the
    # centre, (2, 0, 0) and (2, 0, 2) are √3 away. At 1.5 mm: (4 + 4) / (4 + 6) = 0.8.
    preds, labels = folders
    result = cli("evaluate", str(preds), str(labels), "--nsd", "1.5", "--per-case")
    assert result.exit_code == 0, result.output
    payload = json.loads((preds / "summary.json").read_text())
    assert payload["nsd_tolerance_mm"] == 1.5
    assert payload["classes"]["1"]["nsd"]["mean"] == pytest.approx(0.8)
    assert payload["classes"]["2"]["nsd"]["mean"] == 1.0
    assert payload["overall"]["nsd"]["mean"] == pytest.approx(0.9)
    assert "NSD@1.5 mm" in result.output and "NSD 1" in result.output


def test_negative_nsd_tolerance_exits_2(cli, folders: tuple[Path, Path]) -> None:
    result = cli("evaluate", *map(str, folders), "--nsd=-1")
    assert result.exit_code == 2
    assert "--nsd" in result.output and "Traceback" not in result.output
    assert not (folders[0] / "summary.json").exists()


@pytest.mark.parametrize("classes", ["a,b", "0", ","])
def test_bad_classes_exit_2(cli, folders: tuple[Path, Path], classes: str) -> None:
    result = cli("evaluate", *map(str, folders), "--classes", classes)
    assert result.exit_code == 2
    assert "--classes" in result.output and "Traceback" not in result.output


def test_geometry_mismatch_exits_2_naming_both_files(cli, tmp_path: Path) -> None:
    save_labels(tmp_path / "l" / "c.nii.gz", np.ones((3, 3, 3), np.uint8))
    save_labels(tmp_path / "p" / "c.nii.gz", np.ones((3, 3, 3), np.uint8), np.diag([2, 1, 1, 1]))
    result = cli("evaluate", str(tmp_path / "p"), str(tmp_path / "l"))
    assert result.exit_code == 2
    assert "p/c.nii.gz" in result.output and "l/c.nii.gz" in result.output
    assert not (tmp_path / "p" / "summary.json").exists()


def test_no_matching_case_exits_2(cli, tmp_path: Path) -> None:
    save_labels(tmp_path / "l" / "a.nii.gz", np.ones((2, 2, 2), np.uint8))
    save_labels(tmp_path / "p" / "b.nii.gz", np.ones((2, 2, 2), np.uint8))
    result = cli("evaluate", str(tmp_path / "p"), str(tmp_path / "l"))
    assert result.exit_code == 2
    assert "no prediction matches" in result.output


def test_help_states_the_empty_mask_rule_and_an_example(cli) -> None:
    result = cli("evaluate", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "n_empty_both" in text and "Dice 0" in text
    assert "Example: salign evaluate" in text


def test_real_hippocampus_labels_against_themselves(
    cli, hippocampus_dir: Path, tmp_path: Path
) -> None:
    sources = sorted((hippocampus_dir / "labelsTr").glob("*.nii.gz"))[:5]
    labels, preds = tmp_path / "Task04" / "labelsTr", tmp_path / "predictions"
    labels.mkdir(parents=True)
    preds.mkdir()
    shutil.copy(hippocampus_dir / "dataset.json", tmp_path / "Task04" / "dataset.json")
    for source in sources:
        shutil.copy(source, labels / source.name)
        shutil.copy(source, preds / source.name.replace(".nii.gz", "_seg.nii.gz"))
    result = cli("evaluate", str(preds), str(labels), "--nsd", "1")
    assert result.exit_code == 0, result.output
    payload = json.loads((preds / "summary.json").read_text())
    assert payload["n_cases"] == 5
    assert {k: v["name"] for k, v in payload["classes"].items()} == {
        "1": "Anterior",
        "2": "Posterior",
    }
    for label in ("1", "2"):
        assert payload["classes"][label]["dice"] == {"mean": 1.0, "sd": 0.0, "n": 5}
        assert payload["classes"][label]["nsd"] == {"mean": 1.0, "sd": 0.0, "n": 5}
        assert payload["classes"][label]["n_empty_both"] == 0
