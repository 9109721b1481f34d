"""Find scans in folders, pair them with labels, check them, and keep the result in ``index.sqlite``.

What the later stages rely on (:func:`load_index` returns :class:`ScanRecord` rows):

- **Headers and a sample by default.** Shape, spacing, orientation and dtype come from
  :func:`salign_cli.io.volume.read_header`; of an image's voxels only a strided sample is read
  (:func:`salign_cli.io.volume.sample_voxels`: CT or MR), all of them with ``stats=True``
  (exact intensity range, NaN/Inf). Label voxels are read whole (values are checked; label files
  are small).
- **DICOM series** are found by GDCM's series reader, whatever their files are called (``*.dcm``,
  ``*.IMA``, UID-named, no extension): a folder with one series is one scan (the folder), a
  folder with several lists each series as a scan, named by its file with the smallest name.
- **Pairing conventions** (first match wins): MSD ``imagesTr/ → labelsTr/`` (and ``imagesTs/ →
  labelsTs/``, ``images/ → labels/``) with the same name, or the nnU-Net name without the
  ``_0000`` channel suffix; else a sibling ``<name>_seg``, ``_label``, ``_labels`` or ``_mask``.
  Files in a label folder or with a label suffix are never listed as images, nor are files with
  a label word inside their name (``ct_seg_mr``) whose voxels look like a label map (integer,
  non-negative, few values); label maps no image claims are skipped and listed
  (``IndexResult.skipped_labels``).
- **Case ids are unique**: the case name (nnU-Net ``_0000`` dropped); names found in several
  folders get the nearest folder names that tell them apart as a prefix (``A_case_001``).
- **Modality is a guess, and says where it came from** (``modality_source``): ``--modality`` >
  the DICOM Modality tag (CT or MR) > ``dataset.json`` > intensities (CT if the minimum of the
  voxels, or of their sample without ``stats``, is below -500, i.e. air in Hounsfield units) >
  ``"MR"`` when no voxel could be read.
- **Incremental.** A scan whose image (and label) path, size and mtime are unchanged, and whose
  earlier reading covered the checks asked for, is not read again. Rows of folders not named in
  this run stay, unless their file is gone.
- **Problems** are one line each, naming the file and the fix. Errors (the scan is unusable:
  unreadable, 2D or 4D, truncated, label grid differs, non-integer labels, NaN/Inf) and warnings
  (anisotropy above 3x, unusual voxel types, empty labels, duplicates) are stored per scan;
  notes about the collection (orphan labels, mixed orientations) come back with each run.

The package, one module per job: ``records`` (the rows), ``discovery`` (walking and pairing),
``checks`` (reading one scan), ``case_ids``, ``collection`` (what needs every scan), ``store``
(SQLite), ``stage`` (:func:`index_folders`), ``queries`` and ``summary``. Content hashes live in
:mod:`salign_cli.io.hashing`, ``dataset.json`` in :mod:`salign_cli.data.dataset_json`.
"""

from salign_cli.data.dataset_json import DatasetInfo
from salign_cli.data.index.case_ids import assign_case_ids
from salign_cli.data.index.discovery import looks_like_label_map
from salign_cli.data.index.queries import (
    labelled_scans,
    skipped_scan_notes,
    usable_scans,
)
from salign_cli.data.index.records import IndexResult, Problem, ScanRecord
from salign_cli.data.index.stage import index_folders
from salign_cli.data.index.store import SCHEMA_VERSION, load_datasets, load_index
from salign_cli.data.index.summary import IndexSummary, summarise

__all__ = [
    "SCHEMA_VERSION",
    "DatasetInfo",
    "IndexResult",
    "IndexSummary",
    "Problem",
    "ScanRecord",
    "assign_case_ids",
    "index_folders",
    "labelled_scans",
    "load_datasets",
    "load_index",
    "looks_like_label_map",
    "skipped_scan_notes",
    "summarise",
    "usable_scans",
]
