"""`salign_cli.data.index`: pairing conventions, incremental re-index, hashing, problems, queries.

Every tree is built here from tiny synthetic NIfTI files whose geometry and values are chosen by
hand, so each expected answer (which label pairs with which image, which file is bad and why) is
known before the code runs.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_series import write_dicom_series
from index_corpus import (
    BAD_INPUTS,
    SHAPE,
    make_bad_corpus,
    write_label,
    write_nifti,
)

from salign_cli.data.index import (
    SCHEMA_VERSION,
    ScanRecord,
    assign_case_ids,
    index_folders,
    labelled_scans,
    load_datasets,
    load_index,
    looks_like_label_map,
    usable_scans,
)
from salign_cli.errors import InputError
from salign_cli.io.volume import read_volume


def by_name(records: list[ScanRecord]) -> dict[str, ScanRecord]:
    return {r.image_path.name: r for r in records}


def messages(result) -> list[str]:
    return [p.message for p in result.problems]


# ---------------------------------------------------------------------------------------------
# pairing conventions


def test_msd_layout_pairs_labels_tr_and_leaves_images_ts_unlabelled(
    tmp_path: Path, workspace: Path
) -> None:
    root = tmp_path / "Task99"
    write_nifti(root / "imagesTr" / "case_001.nii.gz")
    write_label(root / "labelsTr" / "case_001.nii.gz")
    write_nifti(root / "imagesTs" / "case_002.nii.gz")
    result = index_folders([root], workspace)
    records = by_name(result.records)
    assert sorted(records) == ["case_001.nii.gz", "case_002.nii.gz"]  # no label listed
    assert records["case_001.nii.gz"].label_path == root / "labelsTr" / "case_001.nii.gz"
    assert records["case_001.nii.gz"].label_matches is True
    assert records["case_001.nii.gz"].label_values == (0, 1)
    assert records["case_002.nii.gz"].label_path is None
    assert not result.has_errors


def test_images_ts_pairs_with_labels_ts(tmp_path: Path, workspace: Path) -> None:
    write_nifti(tmp_path / "d" / "imagesTs" / "x.nii.gz")
    write_label(tmp_path / "d" / "labelsTs" / "x.nii.gz")
    (record,) = index_folders([tmp_path / "d"], workspace).records
    assert record.label_path == tmp_path / "d" / "labelsTs" / "x.nii.gz"


def test_nnunet_channel_suffix_pairs_with_the_label_named_without_it(
    tmp_path: Path, workspace: Path
) -> None:
    root = tmp_path / "Dataset001"
    write_nifti(root / "imagesTr" / "liver_007_0000.nii.gz")
    write_nifti(root / "imagesTr" / "liver_007_0001.nii.gz")  # a second channel: skipped
    write_label(root / "labelsTr" / "liver_007.nii.gz")
    result = index_folders([root], workspace)
    (record,) = result.records
    assert record.case_id == "liver_007"
    assert record.label_path == root / "labelsTr" / "liver_007.nii.gz"
    assert any("liver_007_0001.nii.gz" in m and "channel" in m for m in messages(result))


@pytest.mark.parametrize("suffix", ["_seg", "_label", "_labels", "_mask", "_SEG"])
def test_sibling_label_suffixes(tmp_path: Path, workspace: Path, suffix: str) -> None:
    write_nifti(tmp_path / "scans" / "ct_04.nii.gz")
    write_label(tmp_path / "scans" / f"ct_04{suffix}.nii.gz")
    (record,) = index_folders([tmp_path / "scans"], workspace).records
    assert record.label_path == tmp_path / "scans" / f"ct_04{suffix}.nii.gz"
    assert record.case_id == "ct_04"


def test_labels_folder_beside_images_folder(tmp_path: Path, workspace: Path) -> None:
    write_nifti(tmp_path / "study" / "images" / "p1.nii.gz")
    write_nifti(tmp_path / "study" / "images" / "p2.nii.gz")
    write_label(tmp_path / "study" / "labels" / "p1.nii.gz")
    records = by_name(index_folders([tmp_path / "study"], workspace).records)
    assert records["p1.nii.gz"].label_path == tmp_path / "study" / "labels" / "p1.nii.gz"
    assert records["p2.nii.gz"].label_path is None
    assert len(records) == 2


def test_orphan_label_is_a_warning_not_an_image(tmp_path: Path, workspace: Path) -> None:
    write_nifti(tmp_path / "s" / "a.nii.gz")
    write_label(tmp_path / "s" / "b_seg.nii.gz")
    result = index_folders([tmp_path / "s"], workspace)
    assert [r.image_path.name for r in result.records] == ["a.nii.gz"]
    (note,) = result.notes[:1]
    assert note.severity == "warning" and "b_seg.nii.gz" in note.message
    assert not result.has_errors


def test_duplicate_case_names_get_their_folder_as_prefix(tmp_path: Path, workspace: Path) -> None:
    write_nifti(tmp_path / "siteA" / "imagesTr" / "case_1.nii.gz")
    write_nifti(tmp_path / "siteB" / "imagesTr" / "case_1.nii.gz", np.ones(SHAPE, np.int16))
    write_nifti(tmp_path / "siteB" / "imagesTr" / "case_2.nii.gz", np.zeros(SHAPE, np.int16))
    result = index_folders([tmp_path / "siteA", tmp_path / "siteB"], workspace)
    assert sorted(r.case_id for r in result.records) == ["case_2", "siteA_case_1", "siteB_case_1"]


def test_case_ids_stay_unique_in_one_folder_and_across_depths() -> None:
    ids = assign_case_ids(
        [
            (Path("/d/x/a/c.nii.gz"), "c"),
            (Path("/d/y/a/c.nii.gz"), "c"),
            (Path("/d/x/b/c.nii.gz"), "c"),
            (Path("/d/x/b/c.nrrd"), "c"),
        ]
    )
    assert ids[Path("/d/x/a/c.nii.gz")] == "x_a_c"
    assert ids[Path("/d/y/a/c.nii.gz")] == "y_a_c"
    assert {ids[Path("/d/x/b/c.nii.gz")], ids[Path("/d/x/b/c.nrrd")]} == {"x_b_c", "x_b_c-2"}


def test_dicom_series_folder_is_one_scan(tmp_path: Path, workspace: Path) -> None:
    series = tmp_path / "dicom" / "patient1"
    series.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(4):
        image = sitk.GetImageFromArray(np.full((5, 6), k, dtype=np.int16))
        image.SetSpacing((0.5, 0.5))  # GDCM may write the image's spacing over the tag below
        tags = {
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1",  # one series UID for all slices
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{k}",
            "0020|0032": f"0\\0\\{2.0 * k}",  # slices 2 mm apart
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.5\\0.5",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"slice{k:03d}.dcm"))
        writer.Execute(image)
    (record,) = index_folders([tmp_path / "dicom"], workspace).records
    assert record.image_path == series and record.case_id == "patient1"
    assert record.shape == (6, 5, 4)
    assert record.spacing_mm == pytest.approx((0.5, 0.5, 2.0))
    assert record.orientation == "LPS"  # DICOM's patient axes, read as they are


# ---------------------------------------------------------------------------------------------
# dataset.json, modality, label names


def test_msd_dataset_json_gives_modality_and_label_names(tmp_path: Path, workspace: Path) -> None:
    root = tmp_path / "Task03_Liver"
    write_nifti(root / "imagesTr" / "liver_1.nii.gz")
    write_label(root / "labelsTr" / "liver_1.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {"name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"}}
        )
    )
    (record,) = index_folders([root / "imagesTr", root / "labelsTr"], workspace).records
    assert (record.modality, record.modality_source) == ("CT", "dataset.json")
    datasets = load_datasets(workspace)
    assert datasets[root].name == "Liver"
    assert datasets[root].label_names == {0: "background", 1: "liver"}


def test_nnunet_v2_dataset_json_and_undeclared_label_values(
    tmp_path: Path, workspace: Path
) -> None:
    root = tmp_path / "Dataset002"
    write_nifti(root / "imagesTr" / "a_0000.nii.gz")
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 3
    write_label(root / "labelsTr" / "a.nii.gz", labels)
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "T2"}, "labels": {"background": 0, "prostate": 1}})
    )
    result = index_folders([root], workspace)
    (record,) = result.records
    assert (record.modality, record.modality_source) == ("MR", "dataset.json")
    assert load_datasets(workspace)[root].label_names == {0: "background", 1: "prostate"}
    (error,) = record.errors
    assert "[3]" in error.message and str(root / "labelsTr" / "a.nii.gz") in error.message


def test_modality_from_intensities_by_default_and_override_wins(
    tmp_path: Path, workspace: Path
) -> None:
    ct = np.full(SHAPE, -1000, dtype=np.int16)  # air in Hounsfield units
    ct[2:4, 2:4, 2:4] = 40
    write_nifti(tmp_path / "s" / "ct.nii.gz", ct)
    (plain,) = index_folders([tmp_path / "s"], workspace).records
    assert (plain.modality, plain.modality_source) == ("CT", "intensities")
    # SHAPE is under 32 voxels per axis, so the "sample" is every voxel: the exact range
    assert plain.sampled_range == (-1000.0, 40.0) and plain.intensity_range is None
    (with_stats,) = index_folders([tmp_path / "s"], workspace, stats=True).records
    assert (with_stats.modality, with_stats.modality_source) == ("CT", "intensities")
    assert with_stats.intensity_range == (-1000.0, 40.0)
    (forced,) = index_folders([tmp_path / "s"], workspace, modality="mr").records
    assert (forced.modality, forced.modality_source) == ("MR", "--modality")
    with pytest.raises(InputError, match="modality must be CT or MR"):
        index_folders([tmp_path / "s"], workspace, modality="PET")


# ---------------------------------------------------------------------------------------------
# incremental re-index


def test_reindex_counts_new_changed_unchanged_removed(tmp_path: Path, workspace: Path) -> None:
    scans = tmp_path / "scans"
    for name in ("a", "b", "c"):
        write_nifti(scans / f"{name}.nii.gz", np.full(SHAPE, ord(name), np.int16))
    write_label(scans / "a_seg.nii.gz")
    first = index_folders([scans], workspace)
    assert (first.new, first.changed, first.unchanged, first.removed) == (3, 0, 0, 0)

    again = index_folders([scans], workspace)
    assert (again.new, again.changed, again.unchanged, again.removed) == (0, 0, 3, 0)

    stat = (scans / "b.nii.gz").stat()
    os.utime(scans / "b.nii.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touch
    (scans / "c.nii.gz").unlink()
    write_nifti(scans / "d.nii.gz")
    label = scans / "a_seg.nii.gz"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    third = index_folders([scans], workspace)
    assert (third.new, third.changed, third.unchanged, third.removed) == (1, 2, 0, 1)
    assert sorted(r.case_id for r in load_index(workspace)) == ["a", "b", "d"]


def test_reindex_reads_again_when_a_check_was_skipped_before(
    tmp_path: Path, workspace: Path
) -> None:
    write_nifti(tmp_path / "s" / "a.nii.gz")
    index_folders([tmp_path / "s"], workspace)
    result = index_folders([tmp_path / "s"], workspace, stats=True)
    assert (result.unchanged, result.rechecked) == (0, 1)
    assert result.records[0].intensity_range == (0.0, float(np.prod(SHAPE) - 1))
    later = index_folders([tmp_path / "s"], workspace)  # stats kept, nothing re-read
    assert later.unchanged == 1 and later.records[0].intensity_range is not None


def test_other_folders_stay_in_the_index_until_their_files_go(
    tmp_path: Path, workspace: Path
) -> None:
    write_nifti(tmp_path / "one" / "a.nii.gz")
    write_nifti(tmp_path / "two" / "b.nii.gz", np.ones(SHAPE, np.int16))
    index_folders([tmp_path / "one"], workspace)
    index_folders([tmp_path / "two"], workspace)
    assert [r.case_id for r in load_index(workspace)] == ["a", "b"]
    (tmp_path / "one" / "a.nii.gz").unlink()
    assert index_folders([tmp_path / "two"], workspace).removed == 1
    assert [r.case_id for r in load_index(workspace)] == ["b"]


def test_older_schema_is_rebuilt_and_newer_one_refused(tmp_path: Path, workspace: Path) -> None:
    write_nifti(tmp_path / "s" / "a.nii.gz")
    index_folders([tmp_path / "s"], workspace)
    index_path = workspace / "index.sqlite"
    with sqlite3.connect(index_path) as connection:
        connection.execute("PRAGMA user_version = 0")
    with pytest.raises(InputError, match="run `salign index DIR` again"):
        load_index(workspace)
    assert index_folders([tmp_path / "s"], workspace).new == 1  # rebuilt from scratch
    with sqlite3.connect(index_path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(InputError, match="newer salign"):
        index_folders([tmp_path / "s"], workspace)


def _failing_first_open(monkeypatch: pytest.MonkeyPatch, message: str) -> list[int]:
    """Make the next `sqlite3.connect` give a connection whose first statement fails with
    ``message`` (as SQLite says it); later connections are real. Returns a one-item count of
    the connections opened since."""
    real_connect = sqlite3.connect
    opened = [0]

    class FailsOnce:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        def execute(self, *args: object) -> None:
            raise sqlite3.OperationalError(message)

        def close(self) -> None:
            self.connection.close()

    def connect(*args: object, **kwargs: object) -> object:
        opened[0] += 1
        connection = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        return FailsOnce(connection) if opened[0] == 1 else connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    return opened


def test_a_busy_index_is_waited_for_not_rebuilt(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two processes switching a new file to WAL at once: SQLite may answer "database is
    # locked" at once; that file is busy, not damaged, and its rows must survive
    write_nifti(tmp_path / "s" / "a.nii.gz")
    index_folders([tmp_path / "s"], workspace)
    opened = _failing_first_open(monkeypatch, "database is locked")
    write_nifti(tmp_path / "t" / "b.nii.gz")
    assert index_folders([tmp_path / "t"], workspace).new == 1
    assert opened[0] >= 2  # the busy open was retried on a fresh connection
    assert [r.case_id for r in load_index(workspace)] == ["a", "b"]  # a's row was kept


def test_a_damaged_index_is_rebuilt_and_an_unopenable_one_named(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_nifti(tmp_path / "s" / "a.nii.gz")
    workspace.mkdir(parents=True, exist_ok=True)
    index_path = workspace / "index.sqlite"
    index_path.write_bytes(b"not a database" * 400)  # SQLITE_NOTADB: rebuilt from the scans
    assert index_folders([tmp_path / "s"], workspace).new == 1
    assert [r.case_id for r in load_index(workspace)] == ["a"]
    # any other failure (here a read-only file) is the user's to fix: named, nothing deleted
    _failing_first_open(monkeypatch, "attempt to write a readonly database")
    with pytest.raises(InputError, match=r"index.sqlite: cannot open the index .*permissions"):
        index_folders([tmp_path / "s"], workspace)
    assert index_path.exists()


def test_load_index_without_an_index_says_what_to_run(workspace: Path) -> None:
    with pytest.raises(InputError, match="run `salign index DIR` first"):
        load_index(workspace)
    assert not (workspace / "index.sqlite").exists()


def test_query_helpers_split_usable_scans_by_label(tmp_path: Path, workspace: Path) -> None:
    write_nifti(tmp_path / "s" / "a.nii.gz")
    write_label(tmp_path / "s" / "a_seg.nii.gz")
    write_nifti(tmp_path / "s" / "b.nii.gz", np.ones(SHAPE, np.int16))
    (tmp_path / "s" / "c.nii.gz").write_text("not a scan")
    index_folders([tmp_path / "s"], workspace)
    records = load_index(workspace)
    assert [r.case_id for r in records] == ["a", "b", "c"]
    assert [r.case_id for r in usable_scans(records)] == ["a", "b"]
    assert [r.case_id for r in labelled_scans(records)] == ["a"]
    assert [r.case_id for r in usable_scans(records) if not r.is_labelled] == ["b"]
    assert records[0] == ScanRecord.from_dict(json.loads(json.dumps(records[0].to_dict())))


# ---------------------------------------------------------------------------------------------
# problems: each one line, naming the file


def test_bad_inputs_each_give_one_line_naming_the_file(tmp_path: Path, workspace: Path) -> None:
    root = make_bad_corpus(tmp_path / "bad")
    result = index_folders([root], workspace)
    assert result.has_errors
    records = by_name(result.records)
    assert records["good.nii.gz"].is_usable and records["good.nii.gz"].label_matches
    for name, (severity, words) in BAD_INPUTS.items():
        found = [p for p in result.problems if p.path.name == name]
        assert found, f"no problem reported for {name}"
        assert any(p.severity == severity and words in p.message for p in found), found
        for problem in found:
            assert "\n" not in problem.message and str(root / name) in problem.message
    assert records["affine.nii.gz"].label_matches is False
    assert all(r.image_path.parent == root for r in result.records)  # the loop was not followed
    # only warnings: still usable (an empty label is a valid, if unhelpful, label)
    assert [r.case_id for r in labelled_scans(load_index(workspace))] == ["blank", "good"]


def test_nan_voxels_are_an_error_only_when_stats_read_them(tmp_path: Path, workspace: Path) -> None:
    array = np.ones(SHAPE, np.float32)
    array[1, 1, 1] = np.nan
    write_nifti(tmp_path / "s" / "nan.nii.gz", array)
    assert not index_folders([tmp_path / "s"], workspace).has_errors
    (record,) = index_folders([tmp_path / "s"], workspace, stats=True).records
    (error,) = record.errors
    assert "NaN" in error.message and str(tmp_path / "s" / "nan.nii.gz") in error.message
    assert record.intensity_range == (1.0, 1.0)


def test_multi_member_gzip_is_not_called_truncated(tmp_path: Path, workspace: Path) -> None:
    plain = write_nifti(tmp_path / "a.nii")
    data = plain.read_bytes()
    target = tmp_path / "s" / "a.nii.gz"
    target.parent.mkdir()
    # two gzip members: the trailer holds only the second member's size
    target.write_bytes(gzip.compress(data[:500]) + gzip.compress(data[500:]))
    (record,) = index_folders([tmp_path / "s"], workspace).records
    assert record.problems == () and record.shape == SHAPE


def test_truncated_plain_nifti_and_valid_nifti2_and_header_extensions(
    tmp_path: Path, workspace: Path
) -> None:
    cut = write_nifti(tmp_path / "s" / "cut.nii")  # 352-byte header + 6*7*5 int16 = 772 bytes
    cut.write_bytes(cut.read_bytes()[:600])
    nifti2 = tmp_path / "s" / "two.nii.gz"
    nib.save(nib.Nifti2Image(np.ones(SHAPE, np.float32), np.eye(4)), nifti2)
    with_extension = nib.Nifti1Image(np.ones(SHAPE, np.int16), np.eye(4))
    with_extension.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 100))
    nib.save(with_extension, tmp_path / "s" / "ext.nii.gz")
    records = by_name(index_folders([tmp_path / "s"], workspace).records)
    (error,) = records["cut.nii"].errors
    assert "declares 772 bytes but it holds 600" in error.message
    assert records["two.nii.gz"].problems == ()
    assert records["ext.nii.gz"].problems == ()


def test_an_unforeseen_reader_failure_costs_one_scan_not_the_run(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from salign_cli.data.index import checks as index_module

    write_nifti(tmp_path / "s" / "a.nii.gz")
    write_nifti(tmp_path / "s" / "b.nii.gz", np.ones(SHAPE, np.int16))
    real_read_header = index_module.read_header

    def flaky(path):
        if Path(path).name == "b.nii.gz":
            raise RuntimeError("reader bug")
        return real_read_header(path)

    monkeypatch.setattr(index_module, "read_header", flaky)
    records = by_name(index_folders([tmp_path / "s"], workspace).records)
    assert records["a.nii.gz"].is_usable
    (error,) = records["b.nii.gz"].errors
    assert "RuntimeError: reader bug" in error.message and "b.nii.gz" in error.message


def test_missing_and_empty_folders_are_input_errors(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        index_folders([tmp_path / "nowhere"], workspace)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no scans here")
    with pytest.raises(InputError, match=r"no scans found in .*empty: salign reads \.nii"):
        index_folders([tmp_path / "empty"], workspace)
    assert not (workspace / "index.sqlite").exists()


def test_mixed_orientations_are_a_warning(tmp_path: Path, workspace: Path) -> None:
    write_nifti(tmp_path / "s" / "ras.nii.gz")
    write_nifti(tmp_path / "s" / "lps.nii.gz", np.ones(SHAPE, np.int16), np.diag([-1, -1, 1, 1]))
    result = index_folders([tmp_path / "s"], workspace)
    assert {r.orientation for r in result.records} == {"RAS", "LPS"}
    assert any("2 orientations" in p.message for p in result.notes)
    assert not result.has_errors


# ---------------------------------------------------------------------------------------------
# the real data


def test_hippocampus_indexes_200_labelled_ras_1mm_scans(
    hippocampus_dir: Path, workspace: Path
) -> None:
    result = index_folders([hippocampus_dir], workspace)
    assert len(result.records) == 200 and not result.problems
    assert len(labelled_scans(result.records)) == 200
    assert {r.orientation for r in result.records} == {"RAS"}
    assert {r.spacing_mm for r in result.records} == {(1.0, 1.0, 1.0)}
    assert {(r.modality, r.modality_source) for r in result.records} == {("MR", "dataset.json")}
    assert {r.label_values for r in result.records} <= {(0, 1, 2), (0, 1), (0, 2)}
    assert len({r.case_id for r in result.records}) == 200
    assert load_datasets(workspace)[hippocampus_dir].label_names == {
        0: "background",
        1: "Anterior",
        2: "Posterior",
    }


def test_real_fixtures_pair_the_spleen_label_and_read_without_errors(
    fixtures_dir: Path, workspace: Path
) -> None:
    result = index_folders([fixtures_dir], workspace, stats=True)
    records = by_name(result.records)
    assert records["spleen2_ct.nii.gz"].label_path == fixtures_dir / "spleen2_ct_seg.nii.gz"
    assert records["spleen2_ct.nii.gz"].label_matches is True
    assert records["spleen2_ct.nii.gz"].modality == "CT"  # air below -500 HU
    assert not result.has_errors


def test_the_same_folder_by_two_spellings_is_one_set_of_scans(
    tmp_path: Path, workspace: Path
) -> None:
    # "data" and "sub/../data" name the same files; indexing both must not duplicate rows
    # (duplicates would rename case ids and silently break held-out test splits)
    folder = tmp_path / "data"
    folder.mkdir()
    (tmp_path / "sub").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), folder / "case_a.nii.gz")
    index_folders([folder], workspace)
    result = index_folders([tmp_path / "sub" / ".." / "data"], workspace)
    assert [record.case_id for record in result.records] == ["case_a"]
    assert [record.case_id for record in load_index(workspace)] == ["case_a"]


# ---------------------------------------------------------------------------------------------
# issue 12: modality by default, label maps never images, DICOM series by any file name

CT_FIXTURES = ("totalseg_example_ct_sm.nii.gz", "spleen2_ct.nii.gz")
MR_FIXTURE = "totalseg_example_mr_sm.nii.gz"


def copy_fixtures(fixtures_dir: Path, folder: Path, names: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(fixtures_dir / name, folder / name)
    return folder


def test_real_ct_and_mr_get_their_modality_from_a_voxel_sample_without_stats(
    fixtures_dir: Path, tmp_path: Path, workspace: Path
) -> None:
    folder = copy_fixtures(fixtures_dir, tmp_path / "scans", (*CT_FIXTURES, MR_FIXTURE))
    result = index_folders([folder], workspace)
    found = {r.image_path.name: (r.modality, r.modality_source) for r in result.records}
    assert found == {
        "totalseg_example_ct_sm.nii.gz": ("CT", "intensities"),  # air: -1100 HU in the file
        "spleen2_ct.nii.gz": ("CT", "intensities"),
        "totalseg_example_mr_sm.nii.gz": ("MR", "intensities"),  # its minimum is -47
    }
    assert not any("assumed MR" in m for m in messages(result))
    records = by_name(result.records)
    # 164 x 166 x 26 voxels, at most 32 per axis: every 6th in-plane, every slice; the sample's
    # range lies inside the file's and finds its air
    low, high = records["spleen2_ct.nii.gz"].sampled_range
    assert -1019.0 <= low < -500 and high <= 1000.0
    assert records["spleen2_ct.nii.gz"].intensity_range is None  # no full read without --stats


def test_label_maps_are_paired_or_skipped_and_never_indexed_as_images(
    fixtures_dir: Path, tmp_path: Path, workspace: Path
) -> None:
    folder = copy_fixtures(
        fixtures_dir, tmp_path / "scans", tuple(sorted(os.listdir(fixtures_dir)))
    )
    result = index_folders([folder], workspace)
    records = by_name(result.records)
    assert set(records) == {*CT_FIXTURES, MR_FIXTURE}
    assert records["spleen2_ct.nii.gz"].label_path == folder / "spleen2_ct_seg.nii.gz"
    # totalseg_example_seg: a _seg name without an image "totalseg_example"; ..._seg_mr: a label
    # word inside the name and 0..49 in uint8 voxels
    assert result.skipped_labels == [
        folder / "totalseg_example_seg.nii.gz",
        folder / "totalseg_example_seg_mr.nii.gz",
    ]
    assert len([r for r in usable_scans(result.records) if not r.is_labelled]) == 2


def test_an_image_with_a_label_word_in_its_name_stays_an_image(
    fixtures_dir: Path, tmp_path: Path, workspace: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(fixtures_dir / MR_FIXTURE, folder / "brain_mask_applied_t1.nii.gz")  # int16 MR
    result = index_folders([folder], workspace)
    assert [r.case_id for r in result.records] == ["brain_mask_applied_t1"]
    assert result.skipped_labels == []


def test_looks_like_label_map_needs_integer_non_negative_few_values(tmp_path: Path) -> None:
    classes = np.zeros((40, 40, 40), np.uint8)
    classes[10:20, 10:20, 10:20], classes[25:30] = 1, 7
    assert looks_like_label_map(write_nifti(tmp_path / "a.nii.gz", classes))
    ramp = np.arange(40**3, dtype=np.int16).reshape(40, 40, 40)  # 20**3 distinct sampled
    assert not looks_like_label_map(write_nifti(tmp_path / "b.nii.gz", ramp))
    assert not looks_like_label_map(
        write_nifti(tmp_path / "c.nii.gz", classes.astype(np.float32))
    )  # float: an image, or a label map index reports as non-integer when paired
    assert not looks_like_label_map(
        write_nifti(tmp_path / "d.nii.gz", classes.astype(np.int16) - 1)
    )
    (tmp_path / "e.nii.gz").write_bytes(b"not a scan")
    assert not looks_like_label_map(tmp_path / "e.nii.gz")


CT_UID = "1.2.826.0.1.3680043.8.498.101"
MR_UID = "1.2.826.0.1.3680043.8.498.202"


def test_dicom_series_with_uid_file_names_is_found_and_its_modality_tag_wins(
    fixtures_dir: Path, tmp_path: Path, workspace: Path
) -> None:
    folder = tmp_path / "dicom" / "patient7"
    files = write_dicom_series(
        folder,
        fixtures_dir / "spleen2_ct.nii.gz",
        series_uid=CT_UID,
        modality="CT",
        file_name="{uid}",
    )
    assert files[0].name == f"{CT_UID}.1"  # dots, no .dcm ending
    (record,) = index_folders([tmp_path / "dicom"], workspace).records
    assert record.image_path == folder and record.case_id == "patient7"
    assert (record.modality, record.modality_source) == ("CT", "DICOM")
    assert record.shape == (164, 166, 26)
    assert record.spacing_mm == pytest.approx((0.795, 0.795, 5.0), abs=1e-3)


def test_ima_series_without_a_modality_tag_falls_back_to_intensities(
    fixtures_dir: Path, tmp_path: Path, workspace: Path
) -> None:
    folder = tmp_path / "dicom" / "head"
    write_dicom_series(
        folder,
        fixtures_dir / MR_FIXTURE,
        series_uid=MR_UID,
        file_name="IM{k:04d}.IMA",
        modality=None,
    )
    (record,) = index_folders([tmp_path / "dicom"], workspace).records
    assert record.image_path == folder and record.shape == (117, 91, 20)
    assert record.dicom_modality == "OT"  # Secondary Capture: neither CT nor MR
    assert (record.modality, record.modality_source) == ("MR", "intensities")


def test_two_series_in_one_folder_are_two_scans(
    fixtures_dir: Path, tmp_path: Path, workspace: Path
) -> None:
    folder = tmp_path / "dicom" / "study"
    ct_files = write_dicom_series(
        folder,
        fixtures_dir / "spleen2_ct.nii.gz",
        series_uid=CT_UID,
        modality="CT",
        series_number=3,
        file_name="{uid}",
    )
    mr_files = write_dicom_series(
        folder,
        fixtures_dir / MR_FIXTURE,
        series_uid=MR_UID,
        modality="MR",
        file_name="IM{k:04d}.IMA",
        series_number=7,
    )
    result = index_folders([tmp_path / "dicom"], workspace)
    records = {r.case_id: r for r in result.records}
    assert set(records) == {"study_series3", "study_series7"}
    ct, mr = records["study_series3"], records["study_series7"]
    assert ct.image_path == min(ct_files) and mr.image_path == min(mr_files)
    assert (ct.modality, ct.modality_source, ct.shape) == ("CT", "DICOM", (164, 166, 26))
    assert (mr.modality, mr.modality_source, mr.shape) == ("MR", "DICOM", (117, 91, 20))
    assert ct.content_hash != mr.content_hash
    # what later stages do with a row: read its scan, which is that series alone
    expected = read_volume(fixtures_dir / MR_FIXTURE).array
    assert np.array_equal(read_volume(mr.image_path).array, expected)
    again = index_folders([tmp_path / "dicom"], workspace)
    assert (again.unchanged, again.new) == (2, 0)
