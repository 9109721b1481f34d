"""`salign segment` on the command line: exit codes, one-line errors, outputs and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nifti import write_nifti

from salign_cli.io.volume import read_header

SCAN_AFFINE = np.diag([-1.0, 1.2, 2.0, 1.0])


def write_scan(path: Path, data: np.ndarray | None = None) -> Path:
    values = (
        np.random.default_rng(0).normal(size=(10, 12, 3)).astype(np.float32)
        if data is None
        else data
    )
    return write_nifti(path, values, SCAN_AFFINE)


def test_one_file_to_one_mask(cli, tmp_path: Path, make_bundle):
    scan = write_scan(tmp_path / "in.nii.gz")
    report = tmp_path / "run.json"
    result = cli(
        "segment",
        str(scan),
        "-o",
        str(tmp_path / "mask.nii.gz"),
        "--model",
        str(make_bundle()),
        "--device",
        "cpu",
        "--report",
        str(report),
    )
    assert result.exit_code == 0, result.output
    assert read_header(tmp_path / "mask.nii.gz").shape == (10, 12, 3)
    payload = json.loads(report.read_text())
    assert payload["device"] == "cpu" and payload["counts"]["written"] == 1
    assert set(payload["files"][0]["volumes_ml"]) == {"anterior", "posterior"}


def test_a_bad_file_is_one_line_and_exit_2_while_good_files_are_written(
    cli, tmp_path: Path, make_bundle
):
    good = write_scan(tmp_path / "good.nii.gz")
    bad = write_scan(tmp_path / "bad.nii.gz", np.full((4, 4, 2), np.nan, dtype=np.float32))
    result = cli("segment", str(bad), str(good), "--model", str(make_bundle()), "--quiet")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "bad.nii.gz: " in result.output and "NaN" in result.output
    assert (tmp_path / "good_seg.nii.gz").is_file() and not (tmp_path / "bad_seg.nii.gz").exists()


def test_rerun_skips_and_says_so(cli, tmp_path: Path, make_bundle):
    write_scan(tmp_path / "a.nii.gz")
    model = str(make_bundle())
    assert cli("segment", str(tmp_path), "--model", model).exit_code == 0
    again = cli("segment", str(tmp_path), "--model", model)
    assert again.exit_code == 0
    assert "0 written, 1 skipped" in again.output


def test_no_model_is_a_one_line_error(cli, tmp_path: Path, workspace: Path):
    result = cli("segment", str(write_scan(tmp_path / "a.nii.gz")))
    assert result.exit_code == 2
    assert "no model" in result.output and "salign finetune" in result.output
    assert "Traceback" not in result.output


def test_several_inputs_into_one_file_is_refused(cli, tmp_path: Path, make_bundle):
    a, b = write_scan(tmp_path / "a.nii.gz"), write_scan(tmp_path / "b.nii.gz")
    result = cli(
        "segment", str(a), str(b), "-o", str(tmp_path / "m.nii.gz"), "--model", str(make_bundle())
    )
    assert result.exit_code == 2 and "give a folder" in result.output


def test_help_shows_an_example(cli):
    result = cli("segment", "--help")
    assert result.exit_code == 0
    assert "salign segment ct.nii.gz -o ct_mask.nii.gz" in result.output


def test_a_long_scan_gets_a_bar_of_its_slices(cli, tmp_path: Path, make_bundle, monkeypatch):
    from rich.console import Console
    from rich.progress import Progress

    from salign_cli.cli import progress as progress_module

    shown: list[tuple[str, int, int]] = []
    real_update = progress_module.ScanBar.update

    def record(self, name: str, done: int, total: int) -> None:
        shown.append((name, done, total))
        real_update(self, name, done, total)

    monkeypatch.setattr(progress_module.ScanBar, "update", record)
    long_scan = write_scan(
        tmp_path / "long.nii.gz", np.random.default_rng(1).normal(size=(6, 7, 70)).astype("f4")
    )
    result = cli("segment", str(long_scan), "--model", str(make_bundle()), "--batch-size", "32")
    assert result.exit_code == 0, result.output
    # 70 slices along the 2 mm axis (the largest spacing), 32 per batch.
    assert shown == [("long.nii.gz", 32, 70), ("long.nii.gz", 64, 70), ("long.nii.gz", 70, 70)]

    bars = Progress(console=Console(file=None, quiet=True))
    scan_bar = progress_module.ScanBar(bars, min_slices=64)
    scan_bar.update("short", 10, 63)  # below the threshold: no bar
    assert bars.tasks == []
    scan_bar.update("long", 32, 70)
    assert [(t.description, t.completed, t.total) for t in bars.tasks] == [
        ("slices of long", 32, 70)
    ]
    scan_bar.update("long", 70, 70)  # done: the bar goes, the file bar stays
    assert bars.tasks == []


def test_an_unknown_preview_convention_is_one_line_and_exit_2(cli, tmp_path: Path, make_bundle):
    scan = write_scan(tmp_path / "in.nii.gz")
    result = cli(
        "segment", str(scan), "--model", str(make_bundle()), "--preview",
        "--preview-convention", "upside-down",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--preview-convention upside-down: choose radiological or neurological" in result.output
    assert not (tmp_path / "in_seg.nii.gz").exists()


def test_the_neurological_preview_mirrors_the_radiological_one(cli, tmp_path: Path, make_bundle):
    from PIL import Image

    scan = write_scan(tmp_path / "in.nii.gz")
    model = str(make_bundle())
    for convention in ("radiological", "neurological"):
        result = cli(
            "segment", str(scan), "-o", str(tmp_path / convention / "m.nii.gz"), "--model", model,
            "--preview", "--preview-convention", convention, "--quiet",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    radiological, neurological = (
        np.asarray(Image.open(tmp_path / c / "m_preview.png").convert("RGB"))
        for c in ("radiological", "neurological")
    )
    # One panel per slice; away from the side letters each panel is the other's mirror image.
    height, width = radiological.shape[:2]
    panel = width // 3
    rows = slice(0, height // 3)  # above the letters, which sit at mid-height
    for start in range(0, width, panel):
        np.testing.assert_array_equal(
            radiological[rows, start : start + panel],
            neurological[rows, start : start + panel][:, ::-1],
        )


def test_masks_carry_their_expected_dice_and_the_worst_are_listed_first(
    cli, tmp_path: Path, make_bundle
):
    rng = np.random.default_rng(1)
    for name, scale in (("calm", 0.1), ("noisy", 3.0), ("middle", 1.0)):
        write_scan(
            tmp_path / f"{name}.nii.gz", rng.normal(size=(10, 12, 3)).astype(np.float32) * scale
        )
    report = tmp_path / "run.json"
    result = cli("segment", str(tmp_path), "--model", str(make_bundle()), "--report", str(report))
    assert result.exit_code == 0, result.output
    payload = json.loads(report.read_text())
    scores = {Path(f["output"]).name: f["quality"]["expected_dice"] for f in payload["files"]}
    assert all(0 <= value <= 1 for value in scores.values())
    by_class = payload["files"][0]["quality"]["by_class"]
    assert set(by_class) == {"anterior", "posterior"}
    ranked = sorted(scores, key=lambda name: scores[name])
    assert [Path(c["output"]).name for c in payload["check_first"]] == ranked
    listed = ", ".join(f"{name} ({scores[name]:.3f})" for name in ranked)
    assert f"3 mask(s) to check first (lowest expected Dice): {listed}" in result.output
    assert f"expected Dice {scores['calm_seg.nii.gz']:.3f}" in result.output


def test_one_mask_has_no_worst_first_list(cli, tmp_path: Path, make_bundle):
    scan = write_scan(tmp_path / "in.nii.gz")
    report = tmp_path / "run.json"
    assert (
        cli("segment", str(scan), "--model", str(make_bundle()), "--report", str(report)).exit_code
        == 0
    )
    assert json.loads(report.read_text())["check_first"] == []


def test_uncertainty_map_lies_on_the_input_grid_and_is_one_minus_the_top_probability(
    cli, tmp_path: Path, make_bundle
):
    import nibabel as nib

    scan = write_scan(tmp_path / "in.nii.gz")
    model = str(make_bundle())
    result = cli("segment", str(scan), "--model", model, "--uncertainty", "--probabilities", "-q")
    assert result.exit_code == 0, result.output
    uncertainty = nib.load(tmp_path / "in_seg_uncertainty.nii.gz")
    assert uncertainty.shape == (10, 12, 3)
    assert np.array_equal(uncertainty.affine, nib.load(scan).affine)
    probabilities = nib.load(tmp_path / "in_seg_probabilities.nii.gz").get_fdata()[..., 0, :]
    values = uncertainty.get_fdata()
    np.testing.assert_allclose(values, 1 - probabilities.max(axis=-1), atol=2e-3)
    assert values.min() >= 0 and values.max() <= 1 - 1 / probabilities.shape[-1] + 1e-3
    # the map is salign's own output: a second run over the folder does not take it as a scan
    again = cli("segment", str(tmp_path), "--model", model, "--uncertainty", "--overwrite")
    assert again.exit_code == 0, again.output
    assert "1 written" in again.output
    assert not (tmp_path / "in_seg_uncertainty_seg.nii.gz").exists()


def test_review_page_lists_every_new_mask_worst_first_with_volumes(
    cli, tmp_path: Path, make_bundle
):
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        write_scan(tmp_path / f"{name}.nii.gz", rng.normal(size=(10, 12, 3)).astype(np.float32))
    report = tmp_path / "run.json"
    result = cli(
        "segment", str(tmp_path), "--model", str(make_bundle()), "--review", "--report", str(report)
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(report.read_text())
    page = (tmp_path / "review.html").read_text()
    assert payload["review"] == str(tmp_path / "review.html")
    assert f"review page: {tmp_path / 'review.html'}" in result.output.replace("\n", "")
    ranked = sorted(payload["files"], key=lambda f: f["quality"]["expected_dice"])
    positions = [page.index(f'title="{f["output"]}"') for f in ranked]
    assert positions == sorted(positions)  # worst first
    volume = ranked[0]["volumes_ml"]["anterior"]
    assert f"anterior {volume:.2f}" in page


def test_reference_labels_give_each_mask_its_dice_and_the_review_ranks_by_it(
    cli, tmp_path: Path, make_bundle
):
    import nibabel as nib

    scans, references = tmp_path / "scans", tmp_path / "references"
    rng = np.random.default_rng(3)
    for name in ("a", "b", "c"):
        write_scan(scans / f"{name}.nii.gz", rng.normal(size=(10, 12, 3)).astype(np.float32))
    model = str(make_bundle())
    first = cli("segment", str(scans), "--model", model)  # the masks, to build references from
    assert first.exit_code == 0, first.output
    # a: its own mask (Dice 1); b: its mask with one class wiped (lower); c: on another grid
    for name in ("a", "b"):
        mask = np.asarray(nib.load(scans / f"{name}_seg.nii.gz").dataobj)
        if name == "b":
            mask = np.where(mask == 1, 0, mask)
        write_nifti(references / f"{name}.nii.gz", mask.astype(np.uint8), SCAN_AFFINE)
    write_nifti(references / "c.nii.gz", np.zeros((4, 4, 4), np.uint8), SCAN_AFFINE)
    report = tmp_path / "run.json"
    result = cli(
        "segment", str(scans), "--model", model, "--overwrite", "--review",
        "--reference", str(references), "--report", str(report),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    dice = {Path(f["input"]).name: f["dice"] for f in json.loads(report.read_text())["files"]}
    assert dice["a.nii.gz"] == 1.0
    assert dice["b.nii.gz"] < 1.0
    assert dice["c.nii.gz"] is None  # another grid: a warning, the mask is still written
    assert "no Dice for this mask" in result.output and "3 written" in result.output
    assert "; Dice 1.000" in result.output
    page = (scans / "review.html").read_text()
    assert page.index("b_seg.nii.gz") < page.index("a_seg.nii.gz")  # worst first by true Dice


def test_a_reference_folder_that_is_not_there_is_refused_before_any_work(
    cli, tmp_path: Path, make_bundle
):
    write_scan(tmp_path / "a.nii.gz")
    result = cli(
        "segment", str(tmp_path), "--model", str(make_bundle()), "--reference", str(tmp_path / "no")
    )
    assert result.exit_code == 2
    assert "no such folder" in result.output
    assert not (tmp_path / "a_seg.nii.gz").exists()
