"""``salign segment`` as a typed function: inputs → masks beside them, resumable and exact.

Why one module of about 750 lines (over the house's 600): planning outputs, skipping finished
work, the reader/predictor/writer pipeline and the report must agree on one notion of a job;
the model itself lives in `predictor.py`, geometry in `io/volume.py`, DICOM-SEG in
`io/dicom_seg.py`.

What a caller can rely on:

- **Inputs**: files, folders (their scans; ``recursive`` for sub-folders; a folder without scan
  files is read as one DICOM series) and glob patterns, in the order given, without duplicates.
  Files salign itself wrote (``*<suffix>.nii.gz``, probabilities) are not picked up from folders
  or globs, so running the same command twice never segments a mask.
- **Outputs**: ``output`` names a file (one input) or a folder (any number); by default each mask
  goes beside its input as ``<case><suffix>.nii.gz`` (the case: the scan name, less nnU-Net's
  ``_0000`` channel suffix), or with ``output_type="dicom-seg"`` as ``<series folder><suffix>.dcm``,
  a DICOM Segmentation referencing the series (DICOM inputs only). An output never replaces an
  input, and an
  existing output is skipped unless ``overwrite`` — so an interrupted batch resumes where it
  stopped. Every file is written atomically (temp file, then rename; the mask last, so a mask on
  disk means its extras are complete too) and its shape and affine are read back and checked.
- **Pipeline**: the next volume is read and preprocessed in a background thread while the
  current one runs on the device, and masks are written in a second thread (threads, never
  processes: nothing to spawn, nothing to freeze).
- **Failures**: a bad file becomes a failed :class:`FileResult` with a one-line message and the
  batch goes on (``fail_fast`` stops at the first one); the summary lists them all.
"""

from __future__ import annotations

import errno
import glob
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from salign_cli.errors import InputError, SalignError
from salign_cli.infer.postprocess import label_volumes_ml
from salign_cli.infer.preview import CONVENTIONS, Convention
from salign_cli.io.atomic import (
    PARTIAL_MARKER,
    full_suffix,
    remove_stale_partials,
    write_json,
)
from salign_cli.io.dicom_seg import SEG_ENDING, dicom_seg_problem, write_dicom_seg
from salign_cli.io.modality import CT_AIR_THRESHOLD_HU
from salign_cli.io.naming import (
    MASK_SUFFIX,
    SCAN_SUFFIXES,
    case_name,
    is_scan_path,
    scan_name,
)
from salign_cli.io.volume import (
    Volume,
    read_header,
    read_volume,
    require_finite,
    same_grid,
    write_labels,
    write_probabilities,
)
from salign_cli.workspace import Workspace

if TYPE_CHECKING:
    from salign_cli.infer.predictor import BundleOrigin

MASK_ENDING = ".nii.gz"
PROBABILITIES_TAG = "_probabilities"
PREVIEW_TAG = "_preview"
_GLOB_CHARACTERS = frozenset("*?[")
# --fast: twice the bundle's in-plane spacing, a quarter of the pixels per slice. The CT default
# of 1.5 mm becomes 3 mm, the spacing of TotalSegmentator's --fast models; more than 2x puts
# structures at under half the size the network learned them at.
FAST_SPACING_FACTOR = 2.0
# no space left, file size limit, quota: the disk is full for this user, not the folder wrong
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})

Status = Literal["written", "skipped", "failed"]
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
            raise InputError(
                f"--preview-convention {self.preview_convention}: choose {' or '.join(CONVENTIONS)}"
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
    def preview_path(self) -> Path:
        return _beside(self.output, PREVIEW_TAG, ".png")


@dataclass
class FileResult:
    """What happened to one input; ``seconds`` splits read / predict / write time."""

    input: Path
    output: Path
    status: Status
    error: str | None = None
    exit_code: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extras: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "status": self.status,
            "error": self.error,
            "seconds": {name: round(value, 4) for name, value in self.seconds.items()},
            "shape": list(self.shape) if self.shape else None,
            "volumes_ml": {name: round(value, 4) for name, value in self.volumes_ml.items()},
            "warnings": self.warnings,
            "extras": [str(path) for path in self.extras],
        }


@dataclass(frozen=True)
class ModelInfo:
    """Which model ran, for the report and the console: where its bundle was found and its
    contract (``origin``), and the post-processing in effect (bundle default or flag)."""

    origin: BundleOrigin
    largest_component: bool = False

    def to_dict(self) -> dict[str, Any]:
        resolved, contract = self.origin.resolved, self.origin.contract
        return {
            "spec": resolved.spec,
            "folder": str(resolved.folder),
            "source": resolved.source,
            "repo_id": resolved.repo_id,
            "revision": resolved.revision,
            "commit": resolved.commit,
            "weights_sha256": contract.weights_sha256,
            "modality": contract.modality,
            "classes": contract.class_names,
            "largest_component": self.largest_component,
        }


@dataclass
class SegmentSummary:
    """The whole run: one result per input, the model, the device and the wall time."""

    results: list[FileResult]
    model: ModelInfo | None
    device: str | None
    seconds: float
    stopped_early: bool = False

    def by_status(self, status: Status) -> list[FileResult]:
        return [result for result in self.results if result.status == status]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else the most serious failure's code (bad input = 2)."""
        codes = [result.exit_code for result in self.by_status("failed")]
        return 0 if not codes else (2 if 2 in codes else max(codes))

    def to_dict(self) -> dict[str, Any]:
        written = self.by_status("written")
        return {
            "model": self.model.to_dict() if self.model else None,
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "counts": {
                status: len(self.by_status(status)) for status in ("written", "skipped", "failed")
            },
            "mean_file_seconds": (
                round(sum(sum(r.seconds.values()) for r in written) / len(written), 4)
                if written
                else None
            ),
            "stopped_early": self.stopped_early,
            "files": [result.to_dict() for result in self.results],
        }


# ---------------------------------------------------------------------------------------------
# inputs and outputs


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
        or name.endswith((suffix, f"{suffix}{PROBABILITIES_TAG}"))
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
        raise InputError("--suffix must not be empty: the mask would replace its input")
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"--output-type {output_type}: choose one of {', '.join(OUTPUT_TYPES)}")
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


def _is_complete(job: Job, options: SegmentOptions) -> bool:
    """A mask on disk is the last thing written, so it means the extras are there too."""
    return (
        job.output.is_file()
        and (not options.probabilities or job.probabilities_path.is_file())
        and (not options.preview or job.preview_path.is_file())
    )


def _is_sound_mask(job: Job, output_type: OutputType) -> bool:
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


def _check_writable(job: Job) -> None:
    folder = job.output.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            f"{job.output}: cannot write into {folder} (not a writable folder); "
            "choose a writable output folder with -o"
        )


# ---------------------------------------------------------------------------------------------
# model


def load_predictor(
    model: str | None,
    workspace: Workspace,
    options: SegmentOptions,
    notify: Callable[[str], None] | None = None,
) -> tuple[Any, ModelInfo]:
    """Resolve ``--model`` (or the newest fine-tuned run) with :meth:`Predictor.from_bundle`."""
    from salign_cli.infer.predictor import Predictor

    predictor = Predictor.from_bundle(
        model,
        workspace=workspace,
        device=options.device,
        batch_size=options.batch_size,
        tta=options.tta,
        spacing_factor=FAST_SPACING_FACTOR if options.fast else 1.0,
        notify=notify,
    )
    assert predictor.origin is not None  # from_bundle always records it
    info = ModelInfo(
        predictor.origin,
        largest_component=predictor.largest_component(options.largest_component),
    )
    return predictor, info


def modality_warning(volume: Volume, modality: str) -> str | None:
    """A one-line warning when the intensities do not look like the model's modality."""
    lowest = float(volume.array.min()) if volume.array.size else 0.0
    if modality == "CT" and lowest >= 0:
        return (
            f"{volume.location}: no negative intensities, so this does not look like CT in HU but "
            "the model is a CT model; check the scan or pick an MR model"
        )
    if modality == "MR" and lowest < CT_AIR_THRESHOLD_HU:
        return (
            f"{volume.location}: intensities below {CT_AIR_THRESHOLD_HU:g} look like CT in HU but "
            "the model is an MR model; check the scan or pick a CT model"
        )
    return None


# ---------------------------------------------------------------------------------------------
# one file


@dataclass(frozen=True, eq=False)
class _Loaded:
    volume: Volume
    prepared: Any
    seconds: float
    warning: str | None


def _load(job: Job, predictor: Any, modality: str) -> _Loaded:
    """Read, check and preprocess one input (runs in the reader thread)."""
    start = time.perf_counter()
    volume = read_volume(job.input)
    require_finite(volume)
    prepared = predictor.prepare(volume)
    return _Loaded(
        volume, prepared, time.perf_counter() - start, modality_warning(volume, modality)
    )


def verify_geometry(path: Path, like: Volume) -> None:
    """Read back a written mask's header: its shape and affine must be the input's."""
    header = read_header(path)
    expected_shape = tuple(like.stored_shape or like.shape)
    if tuple(header.shape) != expected_shape or not same_grid(header, like):
        path.unlink(missing_ok=True)
        raise SalignError(
            f"{path}: written mask has shape {tuple(header.shape)} / orientation "
            f"{header.orientation} instead of the input's {expected_shape} / {like.orientation}; "
            "removed it; please report this with the input's header (salign --debug)"
        )


def verify_dicom_seg(path: Path, series_folder: Path) -> None:
    """Read back a written DICOM-SEG: whole, a Segmentation, referencing its series at its size."""
    problem = dicom_seg_problem(path, series_folder)
    if problem is not None:
        path.unlink(missing_ok=True)
        raise SalignError(
            f"{path}: written DICOM-SEG is wrong ({problem}); removed it; please report this "
            "with the series' headers (salign --debug)"
        )


def seg_model_name(model: ModelInfo) -> str:
    """How a DICOM-SEG names its model: the Hub id and revision, else what ``--model`` said."""
    resolved = model.origin.resolved
    return f"{resolved.repo_id}@{resolved.revision}" if resolved.repo_id else resolved.spec


def _write(
    job: Job,
    volume: Volume,
    labels: np.ndarray,
    probabilities: np.ndarray | None,
    options: SegmentOptions,
    model: ModelInfo,
) -> tuple[float, list[Path]]:
    """Extras first, then the mask (its presence marks the job complete); verify geometry."""
    from salign_cli.infer.preview import render_preview

    start = time.perf_counter()
    extras = []
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        if probabilities is not None:
            extras.append(write_probabilities(probabilities, volume, job.probabilities_path))
        if options.preview:
            extras.append(
                render_preview(
                    volume, labels, job.preview_path, convention=options.preview_convention
                )
            )
        if options.output_type == "dicom-seg":
            write_dicom_seg(
                labels,
                volume,
                job.output,
                class_names=model.origin.contract.class_names,
                model_name=seg_model_name(model),
                weights_sha256=model.origin.contract.weights_sha256,
            )
        else:
            write_labels(labels, like=volume, path=job.output)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        remedy = (
            "free space on that disk or write elsewhere with -o"
            if error.errno in _DISK_FULL_ERRNOS
            else "choose a writable output folder with -o"
        )
        raise InputError(f"{job.output}: cannot write ({reason}); {remedy}") from None
    if options.output_type == "dicom-seg":
        verify_dicom_seg(job.output, job.input)
    else:
        verify_geometry(job.output, volume)
    return time.perf_counter() - start, extras


# ---------------------------------------------------------------------------------------------
# the batch


def segment(
    inputs: Sequence[str | Path],
    output: Path | str | None = None,
    *,
    model: str | None = None,
    workspace: Path | str | Workspace | None = None,
    options: SegmentOptions | None = None,
    report: Path | str | None = None,
    on_start: Callable[[list[Job], ModelInfo, str], None] | None = None,
    on_file: Callable[[FileResult], None] | None = None,
    notify: Callable[[str], None] | None = None,
    on_slices: Callable[[Job, int, int], None] | None = None,
) -> SegmentSummary:
    """Segment every input and write its mask; return (and optionally save) a summary.

    Example::

        summary = segment(["scans/"], model="org/name@v1", options=SegmentOptions(tta=True))
        [r.output for r in summary.by_status("written")]

    ``on_start(jobs_to_run, model, device)`` and ``on_file(result)`` drive a progress display,
    ``on_slices(job, done, total)`` a bar inside one scan (slices segmented so far); ``notify`` receives one-line notes (Hub fallbacks, modality warnings). Argument problems
    (no inputs, bad ``-o``, no model) raise :class:`InputError`; problems with one file end up
    in its :class:`FileResult`.
    """
    options = options or SegmentOptions()
    started = time.perf_counter()
    jobs = plan_jobs(
        expand_inputs(inputs, recursive=options.recursive, suffix=options.suffix),
        Path(output).expanduser() if output is not None else None,
        suffix=options.suffix,
        output_type=options.output_type,
    )
    results: list[FileResult] = []
    pending = []
    for folder in {job.output.parent for job in jobs if job.output.parent.is_dir()}:
        remove_stale_partials(folder)  # left by a writer killed with -9
    for job in jobs:
        if options.overwrite or not _is_complete(job, options):
            pending.append(job)
        elif _is_sound_mask(job, options.output_type):
            results.append(FileResult(job.input, job.output, "skipped"))
        else:
            if notify:
                notify(
                    f"{job.output}: existing mask is unreadable or does not match its input; "
                    "segmenting again"
                )
            pending.append(job)
    for result in results:
        if on_file:
            on_file(result)
    model_info, device, stopped = None, None, False
    if pending:
        ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
        predictor, model_info = load_predictor(model, ws, options, notify)
        device = str(predictor.device)
        if on_start:
            on_start(pending, model_info, device)
        stopped = _run(pending, predictor, model_info, options, results, on_file, notify, on_slices)
    order = {job.input: index for index, job in enumerate(jobs)}
    results.sort(key=lambda result: order[result.input])
    summary = SegmentSummary(results, model_info, device, time.perf_counter() - started, stopped)
    if report is not None:
        write_json(Path(report).expanduser(), summary.to_dict())
    return summary


def _run(
    jobs: list[Job],
    predictor: Any,
    model: ModelInfo,
    options: SegmentOptions,
    results: list[FileResult],
    on_file: Callable[[FileResult], None] | None,
    notify: Callable[[str], None] | None,
    on_slices: Callable[[Job, int, int], None] | None = None,
) -> bool:
    """Read ahead in one thread, predict here, write in another; True if stopped by fail_fast."""

    def finish(result: FileResult) -> bool:
        results.append(result)
        if result.warnings and notify:
            for warning in result.warnings:
                notify(warning)
        if on_file:
            on_file(result)
        return result.status == "failed" and options.fail_fast

    with (
        ThreadPoolExecutor(1, thread_name_prefix="salign-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="salign-write") as writer,
    ):
        next_load: Future[_Loaded] = reader.submit(
            _load, jobs[0], predictor, model.origin.contract.modality
        )
        in_flight: tuple[FileResult, Future[tuple[float, list[Path]]]] | None = None
        for index, job in enumerate(jobs):
            load = next_load
            if index + 1 < len(jobs):
                next_load = reader.submit(
                    _load, jobs[index + 1], predictor, model.origin.contract.modality
                )
            result = FileResult(job.input, job.output, "written")
            try:
                _check_writable(job)
                loaded = load.result()
                result.seconds["read"] = loaded.seconds
                result.shape = tuple(loaded.volume.stored_shape or loaded.volume.shape)
                result.warnings = [loaded.warning] if loaded.warning else []
                progress = partial(on_slices, job) if on_slices else None
                labels, probabilities, predict_s = _predict(
                    loaded, predictor, model, options, progress
                )
                result.seconds["predict"] = predict_s
                result.volumes_ml = label_volumes_ml(
                    labels, loaded.volume.affine, model.origin.contract.class_names
                )
                write = writer.submit(
                    _write, job, loaded.volume, labels, probabilities, options, model
                )
            except SalignError as error:
                _fail(result, error)
                if finish(result):
                    next_load.cancel()
                    _drain(in_flight, finish)
                    return True
                continue
            if _drain(in_flight, finish):
                _drain((result, write), finish)
                next_load.cancel()
                return True
            in_flight = (result, write)
        _drain(in_flight, finish)
    return False


def _predict(
    loaded: _Loaded,
    predictor: Any,
    model: ModelInfo,
    options: SegmentOptions,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, float]:
    from salign_cli.infer.predictor import segment_volume

    start = time.perf_counter()
    prediction = segment_volume(
        predictor,
        loaded.volume,
        largest_component=model.largest_component,
        prepared=loaded.prepared,
        with_probabilities=options.probabilities,
        on_progress=on_progress,
    )
    return prediction.labels, prediction.probabilities, time.perf_counter() - start


def _fail(result: FileResult, error: SalignError) -> None:
    result.status = "failed"
    result.error = str(error)
    result.exit_code = error.exit_code


def _drain(
    in_flight: tuple[FileResult, Future[tuple[float, list[Path]]]] | None,
    finish: Callable[[FileResult], bool],
) -> bool:
    """Wait for a submitted write and record its result; True if the batch should stop."""
    if in_flight is None:
        return False
    result, write = in_flight
    try:
        result.seconds["write"], result.extras = write.result()
    except SalignError as error:
        _fail(result, error)
    return finish(result)
