"""Segment images held in memory: what ``salign segment`` does to a file, for notebooks.

``segment(image, model="hippocampus")`` takes a nibabel image (or a voxel array and its affine)
and returns the mask as a nibabel image with exactly the input's shape, affine and header codes —
the same voxels ``salign segment`` writes for the same scan and model, because both run
:func:`~salign_cli.infer.predictor.segment_volume` on a :class:`~salign_cli.io.volume.Volume` built by
:mod:`salign_cli.io.volume` (the one home of geometry). Given paths instead, ``segment`` is the
file batch, :func:`salign_cli.infer.pipeline.segment`, so ``salign_cli.api.segment`` mirrors the CLI.

No torch at import time: the model is loaded inside the call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import nibabel as nib
import numpy as np

from salign_cli.errors import InputError
from salign_cli.io.volume import (
    Volume,
    labels_image,
    require_finite,
    volume_from_array,
    volume_from_image,
)

if TYPE_CHECKING:
    from salign_cli.infer.predictor import Predictor
    from salign_cli.infer.report import SegmentSummary
    from salign_cli.workspace import Workspace


def as_volume(image: Any, affine: np.ndarray | None = None) -> Volume:
    """A nibabel image, or a voxel array with its ``affine``, as a :class:`Volume`.

    Anything else — or an array without an affine, or an image with one — raises
    :class:`InputError` with one line that says what to pass instead.
    """
    if isinstance(image, nib.spatialimages.SpatialImage):
        if affine is not None:
            raise InputError(
                "<memory>: a nibabel image carries its own affine; drop affine= "
                "(or pass image.get_fdata() with the affine)"
            )
        return volume_from_image(image)
    if isinstance(image, np.ndarray):
        return volume_from_array(image, affine)
    raise InputError(
        f"<memory>: cannot segment a {type(image).__name__}; pass a nibabel image "
        "(nib.load(path)), a numpy array with affine=, or scan paths"
    )


def segment_image(
    image: Any,
    affine: np.ndarray | None = None,
    *,
    model: str | Predictor | None = None,
    workspace: Path | str | Workspace | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    tta: bool | None = None,
    largest_component: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> nib.Nifti1Image:
    """Segment one image in memory and return its mask as a NIfTI image on the input's grid.

    ``image``: a nibabel image, or a 2D/3D voxel array in nibabel's ``(i, j, k)`` order with its
    voxel → RAS mm ``affine``. ``model``: what ``--model`` takes (bundle or run folder, registry
    name such as ``"hippocampus"``, Hub id), a :class:`Predictor` already loaded (to segment many
    images with one load), or ``None`` for the workspace's newest fine-tuned run. ``tta`` and
    ``largest_component`` ``None`` = the bundle's defaults, as in the CLI. ``on_progress(done,
    total)`` counts slices. The mask is uint8 (uint16 beyond 255 classes) with the input's
    shape, affine and (for NIfTI input) header codes.

    Example::

        mask = segment_image(nib.load("t1.nii.gz"), model="hippocampus")
        nib.save(mask, "t1_seg.nii.gz")
    """
    from salign_cli.infer.jobs import SegmentOptions
    from salign_cli.infer.pipeline import load_predictor, modality_warning
    from salign_cli.infer.predictor import Predictor, segment_volume
    from salign_cli.workspace import Workspace

    volume = as_volume(image, affine)
    require_finite(volume)
    if isinstance(model, Predictor):
        predictor = model
        chosen = model.largest_component(largest_component)
        modality: str = model.preprocess.modality
    else:
        options = SegmentOptions(
            device=device, batch_size=batch_size, tta=tta, largest_component=largest_component
        )
        ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
        predictor, info = load_predictor(model, ws, options, notify)
        chosen, modality = info.largest_component, info.origin.contract.modality
    warning = modality_warning(volume, modality)
    if warning and notify:
        notify(warning)
    prediction = segment_volume(
        predictor, volume, largest_component=chosen, on_progress=on_progress
    )
    return labels_image(prediction.labels, like=volume)


@overload
def segment(
    image: nib.spatialimages.SpatialImage | np.ndarray, *args: Any, **kwargs: Any
) -> nib.Nifti1Image: ...
@overload
def segment(
    image: Sequence[str | Path] | str | Path, *args: Any, **kwargs: Any
) -> SegmentSummary: ...
def segment(image: Any, *args: Any, **kwargs: Any) -> Any:
    """``salign segment`` as one function: an image or array in → a mask image back
    (:func:`segment_image`); scan paths in → masks written beside them and a summary back
    (:func:`salign_cli.infer.pipeline.segment`, same arguments as the CLI's options).

    >>> mask = segment(nib.load("t1.nii.gz"), model="hippocampus")          # doctest: +SKIP
    >>> summary = segment(["scans/"], "masks/", model="hippocampus")        # doctest: +SKIP
    """
    if isinstance(image, str | Path) or (
        isinstance(image, Sequence) and all(isinstance(item, str | Path) for item in image)
    ):
        from salign_cli.infer.pipeline import segment as segment_files

        return segment_files(
            image if not isinstance(image, str | Path) else [image], *args, **kwargs
        )
    return segment_image(image, *args, **kwargs)
