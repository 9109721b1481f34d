"""Batch segmentation: input expansion, output planning, resume, atomic writes, bad files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti import write_nifti

from salign_cli.errors import InputError
from salign_cli.infer.jobs import SegmentOptions, expand_inputs, plan_jobs
from salign_cli.infer.pipeline import load_predictor, modality_warning, segment
from salign_cli.io.atomic import PARTIAL_MARKER
from salign_cli.io.naming import case_name
from salign_cli.io.volume import read_header, read_volume
from salign_cli.workspace import Workspace

FIXTURES = ("totalseg_example_ct_sm.nii.gz", "totalseg_example_mr_sm.nii.gz", "spleen2_ct.nii.gz")


def write_scan(path: Path, shape=(12, 10, 3), affine=None, value=None) -> Path:
    rng = np.random.default_rng(len(path.name))
    data = rng.normal(100, 20, size=shape).astype(np.float32) if value is None else value
    return write_nifti(path, data, np.diag([1.5, 1.5, 3.0, 1.0]) if affine is None else affine)


def no_partials(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if PARTIAL_MARKER in p.name]


# -- inputs and outputs ---------------------------------------------------------------------------


def test_expand_files_folders_globs_without_duplicates_or_own_outputs(tmp_path: Path):
    a = write_scan(tmp_path / "scans" / "a.nii.gz")
    b = write_scan(tmp_path / "scans" / "b.nrrd.nii.gz")
    write_scan(tmp_path / "scans" / "a_seg.nii.gz")  # a mask from an earlier run
    deep = write_scan(tmp_path / "scans" / "sub" / "c.nii.gz")
    (tmp_path / "scans" / "notes.txt").write_text("not a scan")
    assert expand_inputs([tmp_path / "scans"]) == [a, b]
    assert expand_inputs([tmp_path / "scans"], recursive=True) == [a, b, deep]
    assert expand_inputs([str(tmp_path / "scans" / "*.nii.gz"), a]) == [a, b]
    assert expand_inputs([str(tmp_path / "**" / "c.nii.gz")]) == [deep]
    # What a shell makes of `scans/*`: the earlier mask and its preview are left out.
    (tmp_path / "scans" / "a_seg_preview.png").write_bytes(b"png")
    assert expand_inputs(sorted((tmp_path / "scans").glob("a*"))) == [a]
    with pytest.raises(InputError, match="only salign outputs"):
        expand_inputs([tmp_path / "scans" / "a_seg.nii.gz"])
    with pytest.raises(InputError, match="no scans found"):
        expand_inputs([str(tmp_path / "*.mha")])


def test_a_folder_without_scan_files_is_one_dicom_series(tmp_path: Path):
    series = tmp_path / "series"
    series.mkdir()
    (series / "IM0001.dcm").write_bytes(b"x")
    assert expand_inputs([series]) == [series]


def test_outputs_beside_inputs_in_a_folder_or_one_file(tmp_path: Path):
    a, b = tmp_path / "x" / "a.nii.gz", tmp_path / "y" / "b.nrrd"
    assert [j.output for j in plan_jobs([a, b])] == [
        tmp_path / "x" / "a_seg.nii.gz",
        tmp_path / "y" / "b_seg.nii.gz",
    ]
    assert [j.output for j in plan_jobs([a, b], tmp_path / "out", suffix="_mask")] == [
        tmp_path / "out" / "a_mask.nii.gz",
        tmp_path / "out" / "b_mask.nii.gz",
    ]
    assert plan_jobs([a], tmp_path / "m.nrrd")[0].output == tmp_path / "m.nrrd"
    job = plan_jobs([a])[0]
    assert job.probabilities_path == tmp_path / "x" / "a_seg_probabilities.nii.gz"
    assert job.preview_path == tmp_path / "x" / "a_seg_preview.png"


def test_unsafe_output_plans_are_refused(tmp_path: Path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    with pytest.raises(InputError, match="names one file but there are 2 inputs"):
        plan_jobs([a, b], tmp_path / "mask.nii.gz")
    with pytest.raises(InputError, match="would overwrite an input"):
        plan_jobs([a], a)
    with pytest.raises(InputError, match="would overwrite an input"):
        plan_jobs([tmp_path / "a_seg.nii.gz", a])
    with pytest.raises(InputError, match="would both write"):
        plan_jobs([tmp_path / "x" / "a.nii.gz", tmp_path / "y" / "a.nii.gz"], tmp_path / "out")
    with pytest.raises(InputError, match="suffix"):
        plan_jobs([a], suffix="")


# -- the real fixtures ------------------------------------------------------------------------------


def test_nnunet_channel_suffix_is_dropped_from_mask_names(tmp_path) -> None:
    images = tmp_path / "imagesTs"
    jobs = plan_jobs([images / "hippo_017_0000.nii.gz", images / "patient_0002.nii.gz"])
    assert [job.output.name for job in jobs] == ["hippo_017_seg.nii.gz", "patient_0002_seg.nii.gz"]
    assert case_name(images / "hippo_017_0000.nii.gz") == "hippo_017"


def test_masks_beside_the_fixtures_keep_their_geometry(
    fixtures_dir: Path, tmp_path: Path, make_bundle
):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in FIXTURES:
        shutil.copy(fixtures_dir / name, scans / name)
    bundle = make_bundle(
        modality="CT", classes=("background", "organ"), target_spacing_mm=(2.0, 2.0)
    )
    summary = segment([scans], model=str(bundle), report=tmp_path / "run.json")
    assert [r.status for r in summary.results] == ["written"] * 3
    for name in FIXTURES:
        image = read_header(scans / name)
        mask = read_header(scans / name.replace(".nii.gz", "_seg.nii.gz"))
        assert mask.shape == image.shape
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-6)
        assert mask.orientation == image.orientation
        assert mask.dtype == np.uint8
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["counts"] == {"written": 3, "skipped": 0, "failed": 0}
    assert (
        report["model"]["weights_sha256"]
        == json.loads((bundle / "salign.json").read_text())["weights_sha256"]
    )
    first = report["files"][0]
    assert set(first["seconds"]) == {"read", "predict", "write"}
    # Volumes are voxel counts times the voxel volume, from the written mask itself.
    mask = read_volume(Path(first["output"]))
    voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000
    assert first["volumes_ml"]["organ"] == pytest.approx(
        (mask.array == 1).sum() * voxel_ml, rel=1e-4
    )
    assert no_partials(scans)


def test_fast_masks_keep_the_input_geometry(fixtures_dir: Path, tmp_path: Path, make_bundle):
    bundle = make_bundle(
        modality="CT", classes=("background", "organ"), target_spacing_mm=(1.5, 1.5)
    )
    image = fixtures_dir / "spleen2_ct.nii.gz"  # 164 x 166 in-plane at ~0.79 mm
    predictor, _ = load_predictor(
        str(bundle), Workspace.resolve(tmp_path / "ws"), SegmentOptions(fast=True)
    )
    volume = read_volume(image)
    # --fast: twice the bundle's 1.5 mm, so 164 * 0.79 / 3 = 43 pixels (and 44)
    expected = tuple(round(volume.shape[axis] * volume.spacing_mm[axis] / 3.0) for axis in (0, 1))
    assert expected == (43, 44)
    assert predictor.prepare(volume).resampled_shape == expected
    output = tmp_path / "fast_seg.nii.gz"
    summary = segment([image], output, model=str(bundle), options=SegmentOptions(fast=True))
    assert [r.status for r in summary.results] == ["written"]
    mask, source = read_header(output), read_header(image)
    assert mask.shape == source.shape and mask.orientation == source.orientation
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-6)


def test_extras_probabilities_preview_and_largest_component(
    fixtures_dir: Path, tmp_path: Path, make_bundle
):
    source = fixtures_dir / "totalseg_example_mr_sm.nii.gz"
    output = tmp_path / "out" / "mask.nii.gz"
    options = SegmentOptions(probabilities=True, preview=True, largest_component=True)
    summary = segment([source], output, model=str(make_bundle()), options=options)
    assert summary.results[0].status == "written"
    image = read_header(source)
    probabilities = nib.load(tmp_path / "out" / "mask_probabilities.nii.gz")
    # NIfTI's vector layout: time (dim 4) is 1, the 3 classes run along dim 5.
    assert probabilities.shape == (*image.shape, 1, 3)
    assert probabilities.header.get_intent()[0] == "vector"
    values = probabilities.get_fdata()
    np.testing.assert_allclose(values.sum(-1), 1.0, atol=3e-3)  # float16 softmax, then uint16
    assert values.min() >= 0 and values.max() <= 1
    np.testing.assert_allclose(probabilities.affine, image.affine, atol=1e-6)
    from PIL import Image

    with Image.open(tmp_path / "out" / "mask_preview.png") as picture:
        assert picture.format == "PNG" and min(picture.size) >= 256
    from salign_cli.infer.postprocess import connected_components

    labels = read_volume(output).array
    for value in (1, 2):
        assert connected_components(labels == value)[1] <= 1


def test_a_2d_input_gives_a_2d_mask(tmp_path: Path, make_bundle):
    scan = write_scan(
        tmp_path / "slice.nii.gz", shape=(24, 20), affine=np.diag([-0.8, 0.8, 1.0, 1.0])
    )
    segment([scan], model=str(make_bundle()))
    mask = read_header(tmp_path / "slice_seg.nii.gz")
    assert mask.shape == (24, 20)
    np.testing.assert_allclose(mask.affine, read_header(scan).affine)


# -- resume, overwrite, atomic writes -------------------------------------------------------------


def test_existing_masks_are_skipped_unless_overwrite(tmp_path: Path, make_bundle):
    scans = [write_scan(tmp_path / f"case{i}.nii.gz") for i in range(2)]
    model = str(make_bundle())
    segment(scans, model=model)
    mask = tmp_path / "case0_seg.nii.gz"
    os.utime(mask, (1_000_000, 1_000_000))
    again = segment(scans, model=model)
    assert [r.status for r in again.results] == ["skipped", "skipped"]
    assert again.model is None  # nothing to do, so no model was even loaded
    assert mask.stat().st_mtime == 1_000_000
    redone = segment(scans, model=model, options=SegmentOptions(overwrite=True))
    assert [r.status for r in redone.results] == ["written", "written"]
    assert mask.stat().st_mtime > 1_000_000


def test_a_truncated_or_mismatched_mask_is_segmented_again(tmp_path: Path, make_bundle):
    scans = [write_scan(tmp_path / f"case{i}.nii.gz") for i in range(3)]
    model = str(make_bundle())
    segment(scans, model=model)
    truncated, mismatched = tmp_path / "case0_seg.nii.gz", tmp_path / "case1_seg.nii.gz"
    truncated.write_bytes(truncated.read_bytes()[:200])  # a crash halfway through the file
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4)), mismatched)
    notes: list[str] = []
    again = segment(scans, model=model, notify=notes.append)
    assert [r.status for r in again.results] == ["written", "written", "skipped"]
    assert sum("segmenting again" in n for n in notes) == 2
    assert nib.load(truncated).shape == nib.load(scans[0]).shape


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path, make_bundle):
    import subprocess
    import sys

    scan = write_scan(tmp_path / "case.nii.gz")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f".case_seg.partial-{finished.stdout.strip()}-0123456789ab.nii.gz"
    live = tmp_path / f".case_seg.partial-{os.getpid()}-0123456789ab.nii.gz"
    dead.write_bytes(b"half a mask")
    live.write_bytes(b"being written")
    segment([scan], model=str(make_bundle()))
    assert not dead.exists() and live.exists()


@pytest.fixture
def one_torch_thread():
    """Tiny volumes: thread hand-offs cost more than the convolutions on a shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_200_file_batch_resumes_after_an_interruption(tmp_path: Path, make_bundle):
    scans = [write_scan(tmp_path / f"case{i:03d}.nii.gz", shape=(8, 8, 2)) for i in range(200)]
    model = str(make_bundle())
    done: list[Path] = []

    def interrupt_after_120(result):
        done.append(result.output)
        if len(done) == 120:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment([tmp_path], model=model, on_file=interrupt_after_120)
    finished = sorted(tmp_path.glob("*_seg.nii.gz"))
    assert len(finished) >= 120 and no_partials(tmp_path)
    stamps = {path: path.stat().st_mtime_ns for path in finished}
    resumed = segment([tmp_path], model=model)
    statuses = [r.status for r in resumed.results]
    assert statuses.count("skipped") == len(finished)
    assert statuses.count("written") == 200 - len(finished)
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    assert len(list(tmp_path.glob("*_seg.nii.gz"))) == 200 and len(scans) == 200


def test_a_failed_write_leaves_no_file(
    tmp_path: Path, make_bundle, monkeypatch: pytest.MonkeyPatch
):
    scan = write_scan(tmp_path / "a.nii.gz")

    def broken_save(image, path):
        Path(path).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", broken_save)
    summary = segment([scan], model=str(make_bundle()))
    assert summary.results[0].status == "failed"
    assert "No space left on device" in summary.results[0].error
    assert summary.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "bundle-0"]


# -- bad input ------------------------------------------------------------------------------------


def make_mixed_batch(folder: Path) -> list[Path]:
    good = write_scan(folder / "good1.nii.gz")
    nan = np.full((6, 6, 3), np.nan, dtype=np.float32)
    bad_nan = write_scan(folder / "nan.nii.gz", value=nan)
    bad_4d = write_scan(folder / "frames.nii.gz", value=np.zeros((6, 6, 3, 4), np.float32))
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(write_scan(folder / "tmp.nii.gz").read_bytes()[:100])
    (folder / "tmp.nii.gz").unlink()
    good2 = write_scan(folder / "good2.nii.gz")
    missing = folder / "missing.nii.gz"
    return [good, bad_nan, bad_4d, truncated, missing, good2]


def test_bad_files_fail_one_by_one_and_the_batch_goes_on(tmp_path: Path, make_bundle):
    inputs = make_mixed_batch(tmp_path / "scans")
    summary = segment(inputs, model=str(make_bundle()))
    statuses = {r.input.name: r.status for r in summary.results}
    assert statuses == {
        "good1.nii.gz": "written",
        "nan.nii.gz": "failed",
        "frames.nii.gz": "failed",
        "truncated.nii.gz": "failed",
        "missing.nii.gz": "failed",
        "good2.nii.gz": "written",
    }
    errors = {r.input.name: r.error for r in summary.by_status("failed")}
    assert "NaN" in errors["nan.nii.gz"] and "4D" in errors["frames.nii.gz"]
    assert all("\n" not in e and str(tmp_path) in e for e in errors.values())
    assert summary.exit_code == 2
    assert not (tmp_path / "scans" / "nan_seg.nii.gz").exists()


def test_fail_fast_stops_at_the_first_bad_file(tmp_path: Path, make_bundle):
    inputs = make_mixed_batch(tmp_path / "scans")
    summary = segment(inputs, model=str(make_bundle()), options=SegmentOptions(fail_fast=True))
    assert [r.status for r in summary.results] == ["written", "failed"]
    assert summary.stopped_early


def test_an_unwritable_output_folder_is_a_per_file_error(tmp_path: Path, make_bundle):
    scan = write_scan(tmp_path / "a.nii.gz")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    summary = segment([scan], blocker / "masks", model=str(make_bundle()))
    assert summary.results[0].status == "failed"
    assert "not a writable folder" in summary.results[0].error


def test_no_model_says_how_to_get_one(tmp_path: Path, workspace: Path):
    scan = write_scan(tmp_path / "a.nii.gz")
    with pytest.raises(InputError, match=r"salign finetune --labels N.*--model"):
        segment([scan])


def test_the_newest_finetuned_run_is_the_default_model(
    tmp_path: Path, workspace: Path, make_bundle
):
    from salign_cli.workspace import Workspace

    run = Workspace.resolve(workspace).ensure().new_run_dir("finetune")
    shutil.copytree(make_bundle(), run / "bundle")
    summary = segment([write_scan(tmp_path / "a.nii.gz")])
    assert summary.model is not None
    assert summary.model.origin.resolved.folder == (run / "bundle").resolve()


def test_a_pretrained_bundle_is_refused(tmp_path: Path, make_bundle):
    bundle = make_bundle(kind="pretrained", classes=("background", "feature"))
    with pytest.raises(InputError, match="fine-tune it first"):
        segment([write_scan(tmp_path / "a.nii.gz")], model=str(bundle))


def test_a_modality_mismatch_is_a_warning(fixtures_dir: Path, tmp_path: Path, make_bundle):
    notes: list[str] = []
    ct_on_mr = make_bundle(modality="MR", classes=("background", "organ"))
    summary = segment(
        [fixtures_dir / "totalseg_example_ct_sm.nii.gz"],
        tmp_path,
        model=str(ct_on_mr),
        notify=notes.append,
    )
    assert summary.results[0].status == "written"
    assert any("look like CT" in note for note in notes)
    assert (
        modality_warning(read_volume(fixtures_dir / "totalseg_example_ct_sm.nii.gz"), "CT") is None
    )


def test_a_missing_input_is_named_before_any_model_is_loaded(tmp_path) -> None:
    from salign_cli.errors import InputError
    from salign_cli.infer.pipeline import segment

    # no model exists in this workspace either: the missing input must be what is reported
    with pytest.raises(InputError, match=r"missing\.nii\.gz: no such file or folder"):
        segment([tmp_path / "missing.nii.gz"], workspace=tmp_path / "ws")
