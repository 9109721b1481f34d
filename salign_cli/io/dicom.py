"""Finding DICOM series: which files are DICOM, which series a folder holds, a series' files in
stacking order. Reading voxels and geometry stays in :mod:`salign_cli.io.volume`.

SimpleITK (GDCM) is imported where a series is listed, so that naming checks stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from salign_cli.errors import InputError
from salign_cli.io.naming import DICOM_SUFFIXES, SCAN_SUFFIXES

MODALITY_TAG = "0008|0060"  # DICOM Modality: "CT", "MR", "PT", ...
SERIES_UID_TAG = "0020|000e"
SERIES_NUMBER_TAG = "0020|0011"
_DICOM_MAGIC_OFFSET = 128  # "DICM" follows a 128-byte preamble in DICOM Part 10 files


def is_dicom_folder(path: Path) -> bool:
    """A folder read as one DICOM series (a folder named like ``x.nii.gz`` is not)."""
    return path.is_dir() and not path.name.lower().endswith(SCAN_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """True for a ``.dcm``/``.IMA`` file, or any other non-scan file with the ``DICM`` magic.

    Opens the file only when its name does not decide (UID-named or extension-less slices).
    """
    lower = path.name.lower()
    if lower.endswith(SCAN_SUFFIXES) or not path.is_file():
        return False
    if lower.endswith(DICOM_SUFFIXES):
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(_DICOM_MAGIC_OFFSET + 4)[_DICOM_MAGIC_OFFSET:] == b"DICM"
    except OSError:
        return False


def is_dicom_scan(path: Path) -> bool:
    """A DICOM scan as the index lists it: a series folder, or the file that stands for one
    series of a folder holding several."""
    return path.is_dir() or is_dicom_file(path)


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series in a folder: its UID, its files in slice order, its series number."""

    uid: str
    files: tuple[Path, ...]  # as GDCM sorts them (along the slice normal), never empty
    number: str | None = None  # SeriesNumber (0020,0011), when the first file has it

    @property
    def first_file(self) -> Path:
        """The series' file with the smallest name: a stable path that stands for the series."""
        return min(self.files)


def dicom_series(folder: Path | str) -> list[DicomSeries]:
    """Every DICOM series in ``folder`` (not its sub-folders), by GDCM's series reader.

    GDCM opens every file, so any file name works: ``*.dcm``, ``*.IMA``, UID-named files with
    dots, no extension; files that are not DICOM are passed over. Sorted by series UID.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    found = []
    for uid in sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))):
        files = tuple(
            Path(name) for name in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        )
        if files:
            found.append(DicomSeries(uid, files, _dicom_tag(files[0], SERIES_NUMBER_TAG)))
    return found


def _dicom_tag(file: Path, tag: str) -> str | None:
    """One tag of one DICOM file (header only), stripped; ``None`` when absent or empty."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    reader.ReadImageInformation()
    value = reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
    return value or None


def series_files(path: Path | str) -> tuple[Path, ...]:
    """The files of the DICOM series that ``path`` names, in the order SimpleITK stacks them.

    That order (GDCM's, along the slice normal) is voxel axis 2 of :func:`read_volume`'s array,
    so file ``k`` holds slice ``array[:, :, k]`` (DICOM-SEG frames rely on it).

    ``path`` is a folder holding one series, or one file of a series (its folder may hold
    others: the file's SeriesInstanceUID picks its series). Raises :class:`InputError` for a
    folder without a series or with several.
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        series = dicom_series(path)
        if not series:
            raise InputError(f"{path}: folder holds no DICOM series; point salign at a scan file")
        if len(series) > 1:
            raise InputError(
                f"{path}: folder holds {len(series)} DICOM series; put each series in its own "
                "folder, or pass one file of the series you want"
            )
        return series[0].files
    uid = _dicom_tag(path, SERIES_UID_TAG)
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path.parent), uid) if uid else ()
    return tuple(Path(name) for name in names) or (path,)
