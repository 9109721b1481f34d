"""`salign index` end to end: exit codes, one-line problems, JSON rows, incremental runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from index_corpus import BAD_INPUTS, make_bad_corpus

from salign_cli.cli.index import skipped_labels_line
from salign_cli.data.index import load_index


def _scan(path: Path, value: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((5, 6, 7), value, np.int16), np.eye(4)), path)


def test_bad_corpus_exit_2_one_line_per_problem_and_good_scans_indexed(
    cli, tmp_path: Path, workspace: Path
) -> None:
    root = make_bad_corpus(tmp_path / "bad")
    result = cli("index", str(root))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    for name, (severity, words) in BAD_INPUTS.items():
        assert any(
            line.startswith(f"{severity}:") and str(root / name) in line and words in line
            for line in lines
        ), f"{name}: no one-line {severity} with {words!r}"
    assert "good" in {r.case_id for r in load_index(workspace) if r.is_usable}


def test_missing_folder_and_empty_folder_exit_2_with_one_line(
    cli, tmp_path: Path, workspace: Path
) -> None:
    missing = cli("index", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2
    assert missing.output.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: no such folder; check the path"
    ]
    (tmp_path / "empty").mkdir()
    empty = cli("index", str(tmp_path / "empty"))
    assert empty.exit_code == 2 and "Traceback" not in empty.output
    assert f"no scans found in {tmp_path / 'empty'}: salign reads" in empty.output


def test_json_rows_and_second_run_reports_unchanged(cli, tmp_path: Path, workspace: Path) -> None:
    _scan(tmp_path / "s" / "a.nii.gz")
    _scan(tmp_path / "s" / "a_seg.nii.gz", value=1)
    _scan(tmp_path / "s" / "b.nii.gz", value=2)
    first = cli("index", str(tmp_path / "s"), "--json", "--modality", "CT")
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert [(r["case_id"], r["label_path"] is not None, r["modality"]) for r in rows] == [
        ("a", True, "CT"),
        ("b", False, "CT"),
    ]
    assert rows[0]["shape"] == [5, 6, 7] and rows[0]["spacing_mm"] == [1.0, 1.0, 1.0]
    second = cli("index", str(tmp_path / "s"))
    assert second.exit_code == 0, second.output
    assert "0 new, 0 changed, 2 unchanged" in second.output
    assert "1 / 1" in second.output  # labelled / unlabelled


def test_quiet_prints_only_errors(cli, tmp_path: Path, workspace: Path) -> None:
    _scan(tmp_path / "s" / "a.nii.gz")
    (tmp_path / "s" / "broken.nii.gz").write_text("nope")
    result = cli("index", str(tmp_path / "s"), "--quiet")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        line for line in result.output.strip().splitlines() if line.startswith("error:")
    ]
    assert "broken.nii.gz" in result.output


def test_hippocampus_cold_then_warm(cli, hippocampus_dir: Path, workspace: Path) -> None:
    cold = cli("index", str(hippocampus_dir))
    assert cold.exit_code == 0, cold.output
    assert "200 new" in cold.output and "200 / 0" in cold.output
    assert "RAS: 200" in cold.output and "1.00 x 1.00 x 1.00" in cold.output
    assert "MR (dataset.json): 200" in cold.output and "0 errors" in cold.output
    warm = cli("index", str(hippocampus_dir))
    assert warm.exit_code == 0 and "200 unchanged" in warm.output


def words(output: str) -> str:
    """The output's words in order, without the table's borders or its line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_two_ct_and_an_mr_say_ct_ct_mr_and_label_maps_are_skipped_by_name(
    cli, fixtures_dir: Path, tmp_path: Path, workspace: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in (
        "totalseg_example_ct_sm.nii.gz",
        "spleen2_ct.nii.gz",
        "totalseg_example_mr_sm.nii.gz",
        "totalseg_example_seg.nii.gz",
        "totalseg_example_seg_mr.nii.gz",
    ):
        shutil.copy(fixtures_dir / name, folder / name)
    result = cli("index", str(folder))
    assert result.exit_code == 0, result.output
    text = words(result.output)
    assert "indexed 3 scans" in text
    assert "CT (intensities): 2, MR (intensities): 1" in text
    assert (
        "2 label maps without a matching image skipped: totalseg_example_seg.nii.gz, "
        "totalseg_example_seg_mr.nii.gz"
    ) in text
    assert "assumed MR" not in text


def test_skipped_labels_line_names_five_then_counts() -> None:
    assert skipped_labels_line([Path("/d/a_seg.nii.gz")]) == (
        "1 label map without a matching image skipped: a_seg.nii.gz"
    )
    paths = [Path(f"/d/c{i}_seg.nii.gz") for i in range(7)]
    assert skipped_labels_line(paths) == (
        "7 label maps without a matching image skipped: c0_seg.nii.gz, c1_seg.nii.gz, "
        "c2_seg.nii.gz, c3_seg.nii.gz, c4_seg.nii.gz and 2 more"
    )
