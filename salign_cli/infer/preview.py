"""A PNG beside each mask showing a few slices of the scan with the labels drawn over them.

A glance at the preview tells whether a mask is plausible without opening a viewer. Slices are
taken across the canonical (RAS) slice axis — axial for 3D scans, the image itself for 2D — at
the 25th, 50th and 75th percentile of the labelled extent (evenly spaced when nothing was
labelled), shown with anterior/superior up. By default the patient's right is on the viewer's
left, as radiologists read CT and MRI (radiological convention); ``neurological`` mirrors that.
Each panel carries side letters (``R`` ... ``L``) at its left and right edges, so the convention
is never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from salign_cli.io.atomic import atomic_path
from salign_cli.io.volume import Volume, to_canonical

if TYPE_CHECKING:
    from PIL import Image

# Distinct colours for labels 1..N (cycled beyond ten classes); label 0 is not drawn.
LABEL_COLOURS = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
    ],
    dtype=np.float32,
)
OVERLAY_OPACITY = 0.45
MIN_PANEL_PIXELS = 256  # small scans (hippocampus crops) are enlarged so the preview is legible
MARK_COLOUR = (255, 255, 0)
MARK_MARGIN_PX = 4
MARK_MIN_PX = 14  # side letters are a twelfth of the preview's height, at least this
LEGEND_PX = 14  # height of the legend's swatches and names

Convention = Literal["radiological", "neurological"]
CONVENTIONS: tuple[Convention, ...] = ("radiological", "neurological")
# Letters at the low and high end of each canonical (RAS) axis.
_AXIS_ENDS = (("L", "R"), ("P", "A"), ("I", "S"))


def side_marks(slice_axis: int, convention: Convention) -> tuple[str, str]:
    """The letters at a panel's left and right edges for slices across canonical ``slice_axis``.

    The horizontal axis is the slice's first in-plane axis: left-right for axial (2) and coronal
    (1) slices, posterior-anterior for sagittal (0) ones, which no convention mirrors.

    >>> side_marks(2, "radiological"), side_marks(2, "neurological"), side_marks(0, "radiological")
    (('R', 'L'), ('L', 'R'), ('P', 'A'))
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    horizontal = 0 if slice_axis != 0 else 1
    low, high = _AXIS_ENDS[horizontal]
    return (high, low) if horizontal == 0 and convention == "radiological" else (low, high)


def preview_slices(labels: np.ndarray, slice_axis: int, count: int = 3) -> list[int]:
    """Slice indices along ``slice_axis``: percentiles of the labelled extent, else spread evenly."""
    depth = labels.shape[slice_axis]
    other_axes = tuple(axis for axis in range(labels.ndim) if axis != slice_axis)
    labelled = np.flatnonzero(np.any(labels > 0, axis=other_axes))
    candidates = labelled if labelled.size else np.arange(depth)
    picks = np.percentile(candidates, np.linspace(25, 75, count), method="nearest")
    return sorted({int(index) for index in picks})


def render_preview(
    volume: Volume,
    labels: np.ndarray,
    path: Path,
    count: int = 3,
    convention: Convention = "radiological",
    class_names: Sequence[str] = (),
) -> Path:
    """Write a PNG of ``count`` slices of ``volume`` with ``labels`` (on its grid) overlaid,
    in ``convention`` (radiological: the patient's right on the viewer's left), side-marked;
    with ``class_names`` (``class_names[label]``) a legend strip below names each colour."""
    image = to_canonical(volume).array
    canonical_labels = to_canonical(Volume(labels, volume.affine)).array
    slice_axis = 2 if image.shape[2] > 1 else int(np.argmin(image.shape))
    low, high = np.percentile(image, (1.0, 99.0))
    left_mark, right_mark = side_marks(slice_axis, convention)
    panels = [
        _panel(
            np.take(image, index, axis=slice_axis),
            np.take(canonical_labels, index, axis=slice_axis),
            float(low),
            float(high),
            mirrored=left_mark == "R",
        )
        for index in preview_slices(canonical_labels, slice_axis, count)
    ]
    picture = _enlarged(np.concatenate(panels, axis=1))
    panel_width = picture.width // len(panels)
    for start in range(0, picture.width, panel_width):
        _draw_marks(picture, left_mark, right_mark, start, panel_width)
    if len(class_names) > 1:
        picture = _with_legend(picture, class_names)
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG")
    return path


def orthogonal_views(
    volume: Volume, labels: np.ndarray, convention: Convention = "radiological"
) -> list[Image.Image]:
    """Axial, coronal and sagittal slices through the centre of the labelled voxels (the scan's
    centre when none), each enlarged to be legible and side-marked (``R``/``L``, ``P``/``A``),
    with superior (axial: anterior) up: what the review page shows per case."""
    image = to_canonical(volume).array
    canonical_labels = to_canonical(Volume(labels, volume.affine)).array
    labelled = np.argwhere(canonical_labels > 0)
    centre = (
        (labelled.mean(axis=0) if labelled.size else (np.array(image.shape) - 1) / 2)
        .round()
        .astype(int)
    )
    low, high = np.percentile(image, (1.0, 99.0))
    views = []
    for slice_axis in (2, 1, 0):
        left_mark, right_mark = side_marks(slice_axis, convention)
        panel = _panel(
            np.take(image, centre[slice_axis], axis=slice_axis),
            np.take(canonical_labels, centre[slice_axis], axis=slice_axis),
            float(low),
            float(high),
            mirrored=left_mark == "R",
        )
        picture = _enlarged(panel)
        _draw_marks(picture, left_mark, right_mark, 0, picture.width)
        views.append(picture)
    return views


def _enlarged(pixels: np.ndarray) -> Image.Image:
    """RGB pixels as an image at least `MIN_PANEL_PIXELS` on its short side (nearest)."""
    from PIL import Image

    scale = max(1, int(np.ceil(MIN_PANEL_PIXELS / max(1, min(pixels.shape[:2])))))
    return Image.fromarray(pixels).resize(
        (pixels.shape[1] * scale, pixels.shape[0] * scale), Image.Resampling.NEAREST
    )


def _draw_marks(picture: Image.Image, left: str, right: str, start: int, width: int) -> None:
    """Side letters at the left and right edges of the panel at ``start`` of ``width`` px."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(MARK_MIN_PX, picture.height // 12))
    draw = ImageDraw.Draw(picture)
    for letter, at_left in ((left, True), (right, False)):
        # bounding boxes, not text anchors: Pillow's bitmap fallback font has no anchors
        x0, y0, x1, y1 = draw.textbbox((0, 0), letter, font=font)
        x = start + MARK_MARGIN_PX - x0 if at_left else start + width - MARK_MARGIN_PX - x1
        draw.text((x, (picture.height - (y1 - y0)) // 2 - y0), letter, MARK_COLOUR, font)


def label_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour of label ``label`` (> 0) in previews, review pages and their legends."""
    red, green, blue = (int(c) for c in LABEL_COLOURS[(label - 1) % len(LABEL_COLOURS)])
    return red, green, blue


def _with_legend(picture: Image.Image, class_names: Sequence[str]) -> Image.Image:
    """``picture`` over a black strip with a colour swatch and the name of each class > 0."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=LEGEND_PX)
    height = LEGEND_PX + 2 * MARK_MARGIN_PX
    framed = Image.new("RGB", (picture.width, picture.height + height), (0, 0, 0))
    framed.paste(picture, (0, 0))
    draw = ImageDraw.Draw(framed)
    x, top = MARK_MARGIN_PX, picture.height + MARK_MARGIN_PX
    for label, name in enumerate(class_names):
        if label == 0:
            continue
        draw.rectangle((x, top, x + LEGEND_PX - 1, top + LEGEND_PX - 1), fill=label_colour(label))
        x += LEGEND_PX + MARK_MARGIN_PX
        draw.text((x, top), name, (255, 255, 255), font)
        x += int(draw.textlength(name, font=font)) + 3 * MARK_MARGIN_PX
    return framed


def _panel(
    image: np.ndarray, labels: np.ndarray, low: float, high: float, *, mirrored: bool
) -> np.ndarray:
    """One RGB uint8 slice: windowed grey values with coloured, semi-transparent labels;
    ``mirrored`` puts the end of the slice's first axis (R for axial slices) on the left."""
    grey = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    labelled = labels > 0
    colours = LABEL_COLOURS[(labels[labelled].astype(np.int64) - 1) % len(LABEL_COLOURS)]
    rgb[labelled] = (1.0 - OVERLAY_OPACITY) * rgb[labelled] + OVERLAY_OPACITY * colours
    # Array rows run along the first in-plane axis; rotate so the second (A or S) points up.
    # The first axis then runs left to right on screen (for axial slices the patient's right on
    # the viewer's right: neurological); radiological mirrors it.
    panel = np.rot90(rgb.astype(np.uint8))
    return np.ascontiguousarray(panel[:, ::-1] if mirrored else panel)
