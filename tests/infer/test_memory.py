"""The in-memory API: an image in, the mask ``salign segment`` writes for it back, same grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from salign_cli import api
from salign_cli.errors import InputError
from salign_cli.infer.predictor import Predictor

CASE = "hippocampus_001"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped 'hippocampus' model must resolve with the Hub switched off."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.usefixtures("offline")
def test_an_image_gets_the_mask_the_cli_writes(cli, hippocampus_dir: Path, tmp_path: Path):
    path = hippocampus_dir / "imagesTr" / f"{CASE}.nii.gz"
    image = nib.load(path)

    mask = api.segment(image, model="hippocampus", device="cpu", workspace=tmp_path / "ws")

    assert isinstance(mask, nib.Nifti1Image)
    assert mask.shape == image.shape
    np.testing.assert_array_equal(mask.affine, image.affine)
    assert mask.get_data_dtype() == np.uint8
    shutil.copy(path, tmp_path / f"{CASE}.nii.gz")
    result = cli(
        "segment", str(tmp_path / f"{CASE}.nii.gz"), "--model", "hippocampus",
        "--device", "cpu", "-w", str(tmp_path / "ws"), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = np.asarray(nib.load(tmp_path / f"{CASE}_seg.nii.gz").dataobj)
    labels = np.asarray(mask.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2}  # both hippocampus parts found: not a blank mask
    np.testing.assert_array_equal(labels, written)

    # An array and its affine are the same scan without the file: the same mask.
    from_array = api.segment(
        np.asarray(image.dataobj), affine=image.affine, model="hippocampus", device="cpu",
        workspace=tmp_path / "ws",
    )  # fmt: skip
    assert from_array.shape == image.shape
    np.testing.assert_array_equal(from_array.affine, image.affine)
    np.testing.assert_array_equal(np.asarray(from_array.dataobj), written)


@pytest.mark.usefixtures("offline")
def test_a_loaded_predictor_is_reused_and_counts_slices(hippocampus_dir: Path):
    image = nib.load(hippocampus_dir / "imagesTr" / f"{CASE}.nii.gz")
    predictor = Predictor.from_bundle("hippocampus", device="cpu", batch_size=8)
    assert predictor.origin is not None and predictor.origin.contract.kind == "finetuned"
    calls: list[tuple[int, int]] = []
    mask = api.segment(image, model=predictor, on_progress=lambda d, t: calls.append((d, t)))
    assert mask.shape == image.shape
    # The bundle slices along the canonical axis it was trained on; its length is the total.
    total = calls[-1][1]
    assert total in image.shape
    expected = [(min(done, total), total) for done in range(8, total + 8, 8)]
    assert calls == expected


def test_a_run_folder_stands_for_its_bundle(tmp_path: Path, make_bundle):
    run = tmp_path / "runs" / "finetune-20250101T000000Z"
    run.mkdir(parents=True)
    shutil.move(make_bundle(), run / "bundle")
    predictor = Predictor.from_bundle(str(run), device="cpu")
    assert predictor.origin is not None
    assert predictor.origin.resolved.folder == (run / "bundle").resolve()


def test_a_pretrained_bundle_is_refused_by_name(tmp_path: Path, make_bundle):
    with pytest.raises(InputError, match="no trained segmentation head"):
        Predictor.from_bundle(str(make_bundle(kind="pretrained")), device="cpu")


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        (np.zeros((6, 7, 8, 3), np.float32), {"affine": np.eye(4)}, "4D image with 3 frames"),
        (np.zeros((6, 7, 8), np.float32), {}, "affine must be a finite, invertible 4x4"),
        (np.zeros((6, 7, 8), np.float32), {"affine": np.zeros((4, 4))}, "invertible 4x4"),
        (np.array([["a"]]), {"affine": np.eye(4)}, "numeric numpy array"),
        (42, {}, "cannot segment a int; pass a nibabel image"),
        ([1, 2], {}, "cannot segment a list"),
    ],
)
def test_bad_inputs_are_one_line_input_errors(source, kwargs, message, make_bundle):
    with pytest.raises(InputError, match=message) as raised:
        api.segment(source, model=str(make_bundle()), device="cpu", **kwargs)
    assert "\n" not in str(raised.value)


def test_an_image_with_an_extra_affine_is_refused(make_bundle):
    image = nib.Nifti1Image(np.zeros((6, 7, 8), np.float32), np.eye(4))
    with pytest.raises(InputError, match="carries its own affine"):
        api.segment(image, affine=np.eye(4), model=str(make_bundle()))


def test_nan_voxels_are_refused_before_the_model_loads(tmp_path: Path):
    array = np.zeros((6, 7, 8), np.float32)
    array[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="<memory>: 1 voxels are NaN"):
        api.segment(array, affine=np.eye(4), model=str(tmp_path / "no-such-bundle"))


def test_paths_still_run_the_file_batch(tmp_path: Path, make_bundle):
    scan = tmp_path / "a.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.normal(size=(8, 9, 3)).astype(np.float32), np.eye(4)), scan)
    summary = api.segment(scan, model=str(make_bundle()), options=api.SegmentOptions(device="cpu"))
    assert [r.status for r in summary.results] == ["written"]
    assert (tmp_path / "a_seg.nii.gz").is_file()
