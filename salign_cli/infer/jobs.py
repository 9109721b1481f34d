"""What ``salign segment`` will do: its options, the scans it reads, where each mask goes, and
which outputs are already done (so an interrupted batch resumes where it stopped).

- **Inputs**: files, folders (their scans; ``recursive`` for sub-folders; a folder without scan
  files is read as one DICOM series) and glob patterns, in the order given, without duplicates.
  Files salign itself wrote (``*<suffix>.nii.gz``, probabilities) are not picked up from folders
  or globs, so running the same command twice never segments a mask.
- **Outputs**: ``output`` names a file (one input) or a folder (any number); by default each mask
  goes beside its input as ``<case><suffix>.nii.gz`` (the case: the scan name, less nnU-Net's
  ``_0000`` channel suffix), or with ``output_type="dicom-seg"`` as ``<series folder><suffix>.dcm``,
  a DICOM Segmentation referencing the series (DICOM inputs only). An output never replaces an
  input, and an existing output is skipped unless ``overwrite`` (and only when it decodes whole
  and matches its input, :func:`is_sound_mask`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from salign_cli.errors import InputError, OptionError, SalignError
from salign_cli.infer.preview import CONVENTIONS, Convention
from salign_cli.io.atomic import PARTIAL_MARKER, full_suffix
from salign_cli.io.dicom_seg import SEG_ENDING, dicom_seg_problem
from salign_cli.io.naming import (
    MASK_SUFFIX,
    SCAN_SUFFIXES,
    case_name,
    is_scan_path,
    scan_name,
)
from salign_cli.io.volume import read_header, read_volume, same_grid

MASK_ENDING = ".nii.gz"
PROBABILITIES_TAG = "_probabilities"
UNCERTAINTY_TAG = "_uncertainty"
PREVIEW_TAG = "_preview"
_GLOB_CHARACTERS = frozenset("*?[")
# --fast: twice the bundle's in-plane spacing, a quarter of the pixels per slice. The CT default
# of 1.5 mm becomes 3 mm, the spacing of TotalSegmentator's --fast models; more than 2x puts
# structures at under half the size the network learned them at.
FAST_SPACING_FACTOR = 2.0
OutputType = Literal["nifti", "dicom-seg"]
OUTPUT_TYPES: tuple[OutputType, ...] = ("nifti", "dicom-seg")


@dataclass(frozen=True)
class SegmentOptions:
    """Everything ``salign segment`` can be told besides inputs, output and model."""

    device: str = "auto"
    batch_size: int | None = None  # None: the predictor's default for the device
    tta: bool | None = None  # None: the bundle's inference default
    largest_component: bool | None = None  # None: the bundle's inference default
    probabilities: bool = False
    uncertainty: bool = False  # write 1 - max softmax beside each mask
    review: bool = False  # write review.html beside the masks (salign_cli.infer.review)
    references: Path | None = None  # a folder of reference labels: each mask's Dice
    preview: bool = False
    preview_convention: Convention = "radiological"  # or "neurological" (see infer/preview.py)
    overwrite: bool = False
    suffix: str = MASK_SUFFIX
    recursive: bool = False
    fail_fast: bool = False
    output_type: OutputType = "nifti"
    fast: bool = False  # run at FAST_SPACING_FACTOR x the bundle's in-plane spacing

    def __post_init__(self) -> None:
        if self.preview_convention not in CONVENTIONS:
            raise OptionError(
                "preview_convention",
                f"{self.preview_convention}: choose {' or '.join(CONVENTIONS)}",
            )


@dataclass(frozen=True)
class Job:
    """One input and where its mask (and extras) go."""

    input: Path
    output: Path

    @property
    def probabilities_path(self) -> Path:
        return _beside(self.output, PROBABILITIES_TAG, MASK_ENDING)

    @property
    def uncertainty_path(self) -> Path:
        return _beside(self.output, UNCERTAINTY_TAG, MASK_ENDING)

    @property
    def preview_path(self) -> Path:
        return _beside(self.output, PREVIEW_TAG, ".png")


def _beside(mask_path: Path, tag: str, ending: str) -> Path:
    """``case_seg.nii.gz`` → ``case_seg<tag><ending>`` in the same folder."""
    stem = mask_path.name[: len(mask_path.name) - len(full_suffix(mask_path))]
    return mask_path.with_name(f"{stem}{tag}{ending}")


def _is_own_output(path: Path, suffix: str) -> bool:
    """Masks, probabilities, previews and temp files salign writes; never taken as inputs."""
    name = scan_name(path)
    return (
        path.name.startswith(".")
        or PARTIAL_MARKER in path.name
        or name.endswith((suffix, f"{suffix}{PROBABILITIES_TAG}", f"{suffix}{UNCERTAINTY_TAG}"))
        or path.name.endswith((f"{suffix}{PREVIEW_TAG}.png", f"{suffix}{SEG_ENDING}"))
    )


def _scans_in_folder(folder: Path, recursive: bool, suffix: str) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    found = sorted(
        path
        for path in folder.glob(pattern)
        if path.is_file() and is_scan_path(path) and not _is_own_output(path, suffix)
    )
    if found:
        return found
    if any(path.is_file() and not _is_own_output(path, suffix) for path in folder.iterdir()):
        return [folder]  # no scan files but files: a DICOM series folder
    return []


def expand_inputs(
    specs: Sequence[str | Path], *, recursive: bool = False, suffix: str = MASK_SUFFIX
) -> list[Path]:
    """Files, folders and glob patterns → scan paths (files or DICOM folders), deduplicated.

    Raises :class:`InputError` for a folder or pattern that matches nothing, or when none of the
    named files exists, naming it; a missing file among existing ones is kept, to fail alone.
    """
    inputs: list[Path] = []
    missing: list[str | Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            # A shell-expanded `scans/*` also lists the masks of an earlier run: leave them out.
            inputs.extend([] if _is_own_output(path, suffix) else [path])
            continue
        if path.is_dir() and not path.name.lower().endswith(SCAN_SUFFIXES):
            matches = _scans_in_folder(path, recursive, suffix)
        elif _GLOB_CHARACTERS & set(str(spec)):
            matches = [
                Path(match)
                for match in sorted(glob.glob(str(path), recursive=True))
                if (Path(match).is_file() and is_scan_path(Path(match))) or Path(match).is_dir()
            ]
            matches = [m for m in matches if not _is_own_output(m, suffix)]
        elif not path.exists():
            # One missing file among others fails alone, like any bad file, and the batch goes
            # on; when nothing named exists it is said before the model loads (below).
            missing.append(spec)
            matches = [path]
        else:
            matches = [path]  # let read_volume say precisely what is wrong with it
        if not matches:
            raise InputError(f"{spec}: no scans found (NIfTI, NRRD, MHA/MHD or DICOM series)")
        inputs.extend(matches)
    if missing and len(missing) == len(inputs):
        # a typo should not cost a model load to find out
        raise InputError(f"{missing[0]}: no such file or folder; check the path")
    if not inputs:
        raise InputError(
            f"no scans among the inputs, only salign outputs (*{suffix}.nii.gz); "
            "name the scans themselves"
        )
    unique: dict[Path, Path] = {}
    for path in inputs:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _names_a_file(output: Path, output_type: OutputType = "nifti") -> bool:
    """``-o`` ending in a mask ending (``.nii.gz``, ``.nrrd`` ...; ``.dcm`` for DICOM-SEG) is a
    file, anything else a folder."""
    endings = (SEG_ENDING,) if output_type == "dicom-seg" else SCAN_SUFFIXES
    return output.name.lower().endswith(endings) and not output.is_dir()


def _require_dicom_series(inputs: Sequence[Path], output: Path | None) -> None:
    """DICOM-SEG references the source images, so every input must be a DICOM series folder,
    and a SEG must not land inside one (it would become a second series there)."""
    for path in inputs:
        if path.is_file() or is_scan_path(path):
            raise InputError(
                f"{path}: DICOM-SEG needs a DICOM series as input (it references the source "
                "images); use --output-type nifti"
            )
    if output is None:
        return
    if output.name.lower().endswith(SCAN_SUFFIXES):
        raise InputError(
            f"-o {output}: --output-type dicom-seg writes {SEG_ENDING} files; name a "
            f"{SEG_ENDING} file or a folder"
        )
    folder = (output.parent if _names_a_file(output, "dicom-seg") else output).resolve()
    for path in inputs:
        if folder == path.resolve() or path.resolve() in folder.parents:
            raise InputError(
                f"-o {output}: lies inside the DICOM series folder {path}, where the SEG would "
                "become a second series; choose another folder"
            )


def plan_jobs(
    inputs: Sequence[Path],
    output: Path | None = None,
    *,
    suffix: str = MASK_SUFFIX,
    output_type: OutputType = "nifti",
) -> list[Job]:
    """Where each input's mask goes; refuses outputs that would overwrite an input or collide.

    ``output`` ending in a scan ending (``.nii.gz``, ``.nrrd`` ...) is the mask file of the one
    input (the ending picks the format); any other ``output`` is a folder for all masks. With no
    ``output`` each mask goes beside its input. ``output_type="dicom-seg"`` needs DICOM series
    inputs (:class:`InputError` otherwise, before any model loads) and writes ``.dcm`` files; then
    an ``output`` ending in ``.dcm`` is the one file.
    """
    if not suffix:
        raise OptionError("suffix", "must not be empty: the mask would replace its input")
    if output_type not in OUTPUT_TYPES:
        raise OptionError("output_type", f"{output_type}: choose one of {', '.join(OUTPUT_TYPES)}")
    if output_type == "dicom-seg":
        _require_dicom_series(inputs, output)
    ending = SEG_ENDING if output_type == "dicom-seg" else MASK_ENDING
    if output is not None and _names_a_file(output, output_type):
        if len(inputs) != 1:
            raise InputError(
                f"-o {output}: names one file but there are {len(inputs)} inputs; "
                "give a folder (-o masks/) instead"
            )
        jobs = [Job(inputs[0], output)]
    else:
        jobs = [
            Job(path, (output or path.parent) / f"{case_name(path)}{suffix}{ending}")
            for path in inputs
        ]
    resolved_inputs = {path.resolve() for path in inputs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        target = job.output.resolve()
        if target in resolved_inputs:
            raise InputError(
                f"{job.output}: the output would overwrite an input; choose another -o or --suffix"
            )
        if target in seen:
            raise InputError(
                f"{seen[target]} and {job.input} would both write {job.output}; segment them "
                "into separate folders (drop -o to write each mask beside its input)"
            )
        seen[target] = job.input
    return jobs


def is_complete(job: Job, options: SegmentOptions) -> bool:
    """A mask on disk is the last thing written, so it means the extras are there too."""
    return (
        job.output.is_file()
        and (not options.probabilities or job.probabilities_path.is_file())
        and (not options.uncertainty or job.uncertainty_path.is_file())
        and (not options.preview or job.preview_path.is_file())
    )


def is_sound_mask(job: Job, output_type: OutputType) -> bool:
    """An existing mask can be trusted only if it decodes whole (a file truncated by a crash
    does not) and has its input's shape and affine (a SEG: references its series at its size);
    otherwise it is segmented again."""
    if output_type == "dicom-seg":
        return dicom_seg_problem(job.output, job.input) is None
    try:
        source = read_header(job.input)
        mask = read_volume(job.output)
    except (SalignError, OSError, ValueError, EOFError):
        return False
    return tuple(mask.stored_shape or mask.shape) == tuple(source.shape) and same_grid(mask, source)


def check_writable(job: Job) -> None:
    folder = job.output.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            f"{job.output}: cannot write into {folder} (not a writable folder); "
            "choose a writable output folder with -o"
        )
