"""``salign segment`` as a typed function: inputs → masks beside them, resumable and exact.

:func:`segment` plans the jobs (:mod:`salign_cli.infer.jobs`: which inputs, where their masks go,
what is already done), loads the model once, runs the reader/predictor/writer pipeline below
and returns the report (:mod:`salign_cli.infer.report`). The model itself lives in
`predictor.py`, geometry in `io/volume.py`, DICOM-SEG in `io/dicom_seg.py`.

What a caller can rely on, besides the input and output rules of :mod:`salign_cli.infer.jobs`:

- **Writes**: every file is written atomically (temp file, then rename; the mask last, so a mask
  on disk means its extras are complete too) and its shape and affine are read back and checked.
- **Pipeline**: the next volume is read and preprocessed in a background thread while the
  current one runs on the device, and masks are written in a second thread (threads, never
  processes: nothing to spawn, nothing to freeze).
- **Failures**: a bad file becomes a failed :class:`~salign_cli.infer.report.FileResult` with a
  one-line message and the batch goes on (``fail_fast`` stops at the first one); the summary
  lists them all.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from salign_cli.errors import InputError, SalignError
from salign_cli.infer.jobs import (
    FAST_SPACING_FACTOR,
    Job,
    SegmentOptions,
    check_writable,
    expand_inputs,
    is_complete,
    is_sound_mask,
    plan_jobs,
)
from salign_cli.infer.postprocess import label_volumes_ml
from salign_cli.infer.quality import MaskQuality, uncertainty_map
from salign_cli.infer.report import FileResult, ModelInfo, SegmentSummary
from salign_cli.infer.review import REVIEW_NAME, ReviewRow, review_row, write_review
from salign_cli.io.atomic import remove_stale_partials, write_json
from salign_cli.io.dicom_seg import dicom_seg_problem, write_dicom_seg
from salign_cli.io.modality import CT_AIR_THRESHOLD_HU
from salign_cli.io.naming import case_name, without_channel
from salign_cli.io.volume import (
    Volume,
    read_header,
    read_volume,
    require_finite,
    same_grid,
    write_labels,
    write_probabilities,
    write_voxel_map,
)
from salign_cli.metrics.cases import reference_dice
from salign_cli.metrics.pairing import reference_files
from salign_cli.workspace import Workspace

if TYPE_CHECKING:
    from salign_cli.data.preprocess import PreparedScan
    from salign_cli.infer.predictor import Prediction, Predictor

# no space left, file size limit, quota: the disk is full for this user, not the folder wrong
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


# ---------------------------------------------------------------------------------------------
# model


def load_predictor(
    model: str | None,
    workspace: Workspace,
    options: SegmentOptions,
    notify: Callable[[str], None] | None = None,
) -> tuple[Predictor, ModelInfo]:
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
    prepared: PreparedScan
    seconds: float
    warning: str | None


def _load(job: Job, predictor: Predictor, modality: str) -> _Loaded:
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


@dataclass(frozen=True, eq=False)
class _Written:
    seconds: float
    extras: list[Path]
    review: ReviewRow | None
    dice: float | None = None  # against the reference labels (``--reference``)
    warning: str | None = None


def _write(
    job: Job,
    volume: Volume,
    labels: np.ndarray,
    probabilities: np.ndarray | None,
    options: SegmentOptions,
    model: ModelInfo,
    review: Callable[..., ReviewRow] | None = None,
    reference: Path | None = None,
) -> _Written:
    """Extras first, then the mask (its presence marks the job complete); verify geometry.
    Then the Dice against ``reference`` (a reference that does not fit is a warning, not a
    failed mask) and ``review``, the case's row of the review page: here in the writer
    thread, off the device's path."""
    from salign_cli.infer.preview import render_preview

    start = time.perf_counter()
    extras = []
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        if probabilities is not None and options.probabilities:
            extras.append(write_probabilities(probabilities, volume, job.probabilities_path))
        if probabilities is not None and options.uncertainty:
            uncertainty = uncertainty_map(probabilities)
            extras.append(
                write_voxel_map(uncertainty, volume, job.uncertainty_path, "1-max softmax")
            )
        if options.preview:
            extras.append(
                render_preview(
                    volume,
                    labels,
                    job.preview_path,
                    convention=options.preview_convention,
                    class_names=model.origin.contract.class_names,
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
    dice, warning = None, None
    if reference is not None:
        try:
            dice = reference_dice(labels, volume, reference)
        except InputError as error:
            warning = f"no Dice for this mask: {error}"
    row = review(dice=dice) if review else None
    return _Written(time.perf_counter() - start, extras, row, dice, warning)


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
        if options.overwrite or not is_complete(job, options):
            pending.append(job)
        elif is_sound_mask(job, options.output_type):
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
    references = reference_files(options.references) if options.references else {}
    model_info, device, stopped = None, None, False
    if pending:
        ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
        predictor, model_info = load_predictor(model, ws, options, notify)
        device = str(predictor.device)
        if on_start:
            on_start(pending, model_info, device)
        stopped = _run(
            pending, predictor, model_info, options, results, on_file, notify, on_slices, references
        )
    order = {job.input: index for index, job in enumerate(jobs)}
    results.sort(key=lambda result: order[result.input])
    summary = SegmentSummary(results, model_info, device, time.perf_counter() - started, stopped)
    if options.review and model_info is not None:
        summary.review = _write_review_page(summary.by_status("written"), model_info)
    if report is not None:
        write_json(Path(report).expanduser(), summary.to_dict())
    return summary


def _run(
    jobs: list[Job],
    predictor: Predictor,
    model: ModelInfo,
    options: SegmentOptions,
    results: list[FileResult],
    on_file: Callable[[FileResult], None] | None,
    notify: Callable[[str], None] | None,
    on_slices: Callable[[Job, int, int], None] | None = None,
    references: dict[str, Path] | None = None,
) -> bool:
    """Read ahead in one thread, predict here, write in another; True if stopped by fail_fast.
    ``references``: reference label files by case name, for each mask's Dice."""

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
        in_flight: tuple[FileResult, Future[_Written]] | None = None
        for index, job in enumerate(jobs):
            load = next_load
            if index + 1 < len(jobs):
                next_load = reader.submit(
                    _load, jobs[index + 1], predictor, model.origin.contract.modality
                )
            result = FileResult(job.input, job.output, "written")
            try:
                check_writable(job)
                loaded = load.result()
                result.seconds["read"] = loaded.seconds
                result.shape = tuple(loaded.volume.stored_shape or loaded.volume.shape)
                result.warnings = [loaded.warning] if loaded.warning else []
                progress = partial(on_slices, job) if on_slices else None
                prediction, predict_s = _predict(loaded, predictor, model, options, progress)
                labels, probabilities = prediction.labels, prediction.probabilities
                result.seconds["predict"] = predict_s
                _record_quality(result, prediction.quality, model.origin.contract.class_names)
                result.volumes_ml = label_volumes_ml(
                    labels, loaded.volume.affine, model.origin.contract.class_names
                )
                review = None
                if options.review:
                    review = partial(
                        review_row,
                        case_name(job.input),
                        job.output,
                        loaded.volume,
                        labels,
                        volumes_ml=result.volumes_ml,
                        expected_dice=result.quality,
                        convention=options.preview_convention,
                    )
                write = writer.submit(
                    _write,
                    job,
                    loaded.volume,
                    labels,
                    probabilities,
                    options,
                    model,
                    review,
                    _reference_for(job, references or {}),
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


def _reference_for(job: Job, references: dict[str, Path]) -> Path | None:
    """The reference label file of ``job``'s scan: ``case`` for ``case.nii.gz``, and for an
    nnU-Net-named input ``case_0000.nii.gz`` too."""
    name = case_name(job.input)
    return references.get(name) or references.get(without_channel(name))


def _predict(
    loaded: _Loaded,
    predictor: Predictor,
    model: ModelInfo,
    options: SegmentOptions,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Prediction, float]:
    from salign_cli.infer.predictor import segment_volume

    start = time.perf_counter()
    prediction = segment_volume(
        predictor,
        loaded.volume,
        largest_component=model.largest_component,
        prepared=loaded.prepared,
        with_probabilities=options.probabilities or options.uncertainty,
        on_progress=on_progress,
    )
    return prediction, time.perf_counter() - start


def _write_review_page(written: Sequence[FileResult], model: ModelInfo) -> Path | None:
    """`review.html` in the folder that holds every written mask (their common folder)."""
    rows = [result.review for result in written if result.review is not None]
    if not rows:
        return None
    folder = Path(os.path.commonpath([result.output.parent for result in written]))
    title = f"salign review: {len(rows)} mask(s), model {model.origin.resolved.spec}"
    return write_review(rows, model.origin.contract.class_names, folder / REVIEW_NAME, title)


def _record_quality(
    result: FileResult, quality: MaskQuality | None, class_names: Sequence[str]
) -> None:
    if quality is None:
        return
    result.quality = quality.score
    result.quality_by_class = {
        class_names[label]: value for label, value in quality.by_class.items()
    }


def _fail(result: FileResult, error: SalignError) -> None:
    result.status = "failed"
    result.error = str(error)
    result.exit_code = error.exit_code


def _drain(
    in_flight: tuple[FileResult, Future[_Written]] | None,
    finish: Callable[[FileResult], bool],
) -> bool:
    """Wait for a submitted write and record its result; True if the batch should stop."""
    if in_flight is None:
        return False
    result, write = in_flight
    try:
        written = write.result()
        result.seconds["write"] = written.seconds
        result.extras, result.review, result.dice = written.extras, written.review, written.dice
        if written.warning:
            result.warnings.append(written.warning)
    except SalignError as error:
        _fail(result, error)
    return finish(result)
