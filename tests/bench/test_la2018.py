"""benchmarks/la2018.py: the h5 → NIfTI conversion and the per-case scores, with known answers."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="h5py (the dev extra) writes the stand-in h5 files")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "la2018.py"


@pytest.fixture(scope="module")
def la2018() -> ModuleType:
    spec = importlib.util.spec_from_file_location("la2018", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["la2018"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _write_uamt(root: Path, train: list[str], test: list[str]) -> dict[str, np.ndarray]:
    """UA-MT's layout: data/train.list, data/test.list, data/2018LA_Seg_Training Set/<ID>/."""
    data = root / "data"
    arrays = {}
    for index, case in enumerate(train + test):
        folder = data / "2018LA_Seg_Training Set" / case
        folder.mkdir(parents=True)
        image = np.random.default_rng(index).normal(size=(12, 10, 8)).astype(np.float32)
        label = np.zeros((12, 10, 8), np.uint8)
        label[3:6, 2:5, 1 + index : 4 + index] = 1
        with h5py.File(folder / "mri_norm2.h5", "w") as handle:
            handle["image"], handle["label"] = image, label
        arrays[case] = image
    (data / "train.list").write_text("\n".join(train) + "\n\n")
    (data / "test.list").write_text("\n".join(test) + "\n")
    return arrays


def test_convert_writes_msd_folders_on_the_challenge_grid(la2018, tmp_path: Path) -> None:
    arrays = _write_uamt(tmp_path / "uamt", ["A1", "B2"], ["C3"])
    splits = la2018.convert(tmp_path / "uamt", tmp_path / "out")
    assert splits == {"train": ["A1", "B2"], "test": ["C3"]}
    assert json.loads((tmp_path / "out" / "splits.json").read_text()) == splits
    image = nib.load(tmp_path / "out" / "test" / "imagesTr" / "C3.nii.gz")
    label = nib.load(tmp_path / "out" / "test" / "labelsTr" / "C3.nii.gz")
    assert image.shape == label.shape == (12, 10, 8)
    np.testing.assert_array_equal(image.affine, np.diag([0.625, 0.625, 0.625, 1.0]))
    np.testing.assert_array_equal(np.asarray(image.dataobj), arrays["C3"])
    assert np.asarray(label.dataobj).sum() == 27 and nib.aff2axcodes(label.affine) == (
        "R",
        "A",
        "S",
    )
    dataset = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())
    assert dataset["labels"] == {"0": "background", "1": "left_atrium"}
    assert dataset["numTraining"] == 2


def test_scores_have_known_answers(la2018) -> None:
    reference = np.zeros((20, 20, 20), np.uint8)
    reference[5:15, 5:15, 5:15] = 1
    same = la2018.score_case("a", reference, reference)
    assert (same.dice, same.jaccard, same.hd95_mm, same.asd_mm, same.pieces) == (1, 1, 0, 0, 1)
    # half the cube plus a far-away speck: Dice 2·500/(501+1000), two pieces
    half = np.zeros_like(reference)
    half[5:10, 5:15, 5:15] = 1
    half[0, 0, 0] = 1
    score = la2018.score_case("b", half, reference)
    assert score.dice == pytest.approx(1000 / 1501) and score.pieces == 2
    assert score.jaccard == pytest.approx(500 / 1001)
    assert score.hd95_mm > 0 and score.asd_mm > 0
    empty = la2018.score_case("c", np.zeros_like(reference), reference)
    assert empty.dice == 0 and math.isnan(empty.hd95_mm) and empty.pieces == 0


def _eight_bit_uamt(root: Path, train: list[str], test: list[str]) -> None:
    """Stand-in h5 files whose images are z-scored 8-bit data, as UA-MT's are."""
    data = root / "data"
    for index, case in enumerate(train + test):
        folder = data / "2018LA_Seg_Training Set" / case
        folder.mkdir(parents=True)
        raw = np.random.default_rng(index).integers(0, 200, size=(12, 10, 8)).astype(np.float32)
        image = ((raw - raw.mean()) / raw.std()).astype(np.float32)
        label = (raw > 150).astype(np.uint8)
        with h5py.File(folder / "mri_norm2.h5", "w") as handle:
            handle["image"], handle["label"] = image, label
    (data / "train.list").write_text("\n".join(train) + "\n")
    (data / "test.list").write_text("\n".join(test) + "\n")


def test_pack_then_unpack_gives_convert_output_bit_for_bit(la2018, tmp_path: Path) -> None:
    train, test = [f"T{i}" for i in range(10)], ["X1", "X2"]
    _eight_bit_uamt(tmp_path / "uamt", train, test)
    la2018.convert(tmp_path / "uamt", tmp_path / "converted")
    parts = la2018.pack(tmp_path / "uamt", tmp_path / "packed", 3)
    assert [p.name for p in parts] == [f"part-{i}-of-3.npz.xz" for i in (1, 2, 3)]
    # 4 cases a part in labelled-first order: T0-T3 | T4-T7 | X1, X2, T8, T9
    counts = la2018.unpack(parts[:1], tmp_path / "unpacked")
    assert counts == {"train": 4, "test": 0}
    counts = la2018.unpack(parts[1:], tmp_path / "unpacked")
    assert counts == {"train": 10, "test": 2}
    for split, cases in (("train", train), ("test", test)):
        for case in cases:
            for kind in ("imagesTr", "labelsTr"):
                ours = nib.load(tmp_path / "unpacked" / split / kind / f"{case}.nii.gz")
                theirs = nib.load(tmp_path / "converted" / split / kind / f"{case}.nii.gz")
                assert ours.get_data_dtype() == theirs.get_data_dtype()
                np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
                np.testing.assert_array_equal(ours.affine, theirs.affine)
    assert (tmp_path / "unpacked" / "splits.json").read_text() == (
        tmp_path / "converted" / "splits.json"
    ).read_text()


def test_pack_refuses_images_that_are_not_eight_bit(la2018, tmp_path: Path) -> None:
    _write_uamt(tmp_path / "uamt", ["A1"], ["C3"])  # normal noise: 960 distinct values
    with pytest.raises(SystemExit, match=r"A1/mri_norm2\.h5: 960 distinct intensities"):
        la2018.pack(tmp_path / "uamt", tmp_path / "packed", 1)


@pytest.mark.parametrize(
    ("method", "pretrained"),
    [("pretrained+semi", None), ("sal+semi", "runs/pretrain-x"), ("scratch+mixup", None)],
)
def test_run_refuses_a_method_it_cannot_start(
    la2018, tmp_path: Path, method: str, pretrained: str | None
) -> None:
    # "pretrained" needs the run folder of `salign pretrain` (--from); no other start or
    # unlabelled use is known. The refusal comes before any fine-tuning.
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    with pytest.raises(SystemExit, match="scratch or pretrained"):
        la2018.run_one(
            tmp_path, tmp_path / "ws", tmp_path / "out", method=method, k=1, seed=0,
            validation=0, overrides={}, pretrained=pretrained,
        )  # fmt: skip
