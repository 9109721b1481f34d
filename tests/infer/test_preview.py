"""Previews: radiological by default (the patient's left on the viewer's right), side-marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salign_cli.infer.preview import MARK_COLOUR, render_preview, side_marks
from salign_cli.io.volume import Volume

SHAPE = (40, 30, 5)
BLOB = 1000.0


def left_blob_volume(orientation: str) -> Volume:
    """A bright blob in the patient's left third: low i in RAS (i points right), high i in LPS."""
    array = np.zeros(SHAPE, np.float32)
    if orientation == "RAS":
        affine, blob = np.eye(4), slice(2, 11)
    else:
        affine, blob = np.diag([-1.0, -1.0, 1.0, 1.0]), slice(29, 38)
    array[blob, 10:20, :] = BLOB
    return Volume(array, affine)


def picture(volume: Volume, path: Path, convention: str) -> np.ndarray:
    render_preview(volume, np.zeros(SHAPE, np.uint8), path, count=1, convention=convention)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def brightness_right_minus_left(rgb: np.ndarray) -> float:
    """Mean grey of the right half minus the left half, leaving the yellow side marks out."""
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    values = np.where(grey, rgb[..., 0].astype(float), np.nan)
    half = rgb.shape[1] // 2
    return float(np.nanmean(values[:, half:]) - np.nanmean(values[:, :half]))


def marks(rgb: np.ndarray, side: str) -> np.ndarray:
    """The yellow glyph in a 40-pixel strip at one edge, cropped to its bounding box (its
    anti-aliased rim included: yellow over black is (v, v, 0))."""
    strip = (rgb[:, :40] if side == "left" else rgb[:, -40:]).astype(int)
    red, green, blue = strip[..., 0], strip[..., 1], strip[..., 2]
    yellow = (red == green) & (blue == MARK_COLOUR[2]) & (red > 127)
    rows, columns = np.flatnonzero(yellow.any(1)), np.flatnonzero(yellow.any(0))
    assert rows.size, f"no mark at the {side} edge"
    return yellow[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_a_left_blob_is_on_the_right_radiologically_and_mirrored_neurologically(
    tmp_path: Path, orientation: str
):
    volume = left_blob_volume(orientation)
    radiological = picture(volume, tmp_path / "radiological.png", "radiological")
    neurological = picture(volume, tmp_path / "neurological.png", "neurological")
    # The blob is full white (255) over 9 of the 20 columns of a half and 10 of the 30 rows;
    # the other half is black.
    expected = 255 * (9 / 20) * (10 / 30)
    assert brightness_right_minus_left(radiological) == pytest.approx(expected, rel=0.02)
    assert brightness_right_minus_left(neurological) == pytest.approx(-expected, rel=0.02)
    # Radiological: "R" at the image's left, "L" at its right; neurological swaps the glyphs.
    assert np.array_equal(marks(radiological, "left"), marks(neurological, "right"))
    assert np.array_equal(marks(radiological, "right"), marks(neurological, "left"))
    assert not np.array_equal(marks(radiological, "left"), marks(radiological, "right"))


def test_side_letters_by_slice_axis_and_convention():
    assert side_marks(2, "radiological") == ("R", "L")
    assert side_marks(1, "radiological") == ("R", "L")  # coronal: left-right is horizontal too
    assert side_marks(2, "neurological") == ("L", "R")
    assert side_marks(0, "radiological") == side_marks(0, "neurological") == ("P", "A")
    with pytest.raises(ValueError, match="convention"):
        side_marks(2, "upside-down")


def test_the_legend_strip_shows_each_class_colour_below_the_views(tmp_path: Path):
    from salign_cli.infer.preview import LABEL_COLOURS, LEGEND_PX, MARK_MARGIN_PX

    volume, labels = left_blob_volume("RAS"), np.zeros(SHAPE, np.uint8)
    plain = render_preview(volume, labels, tmp_path / "plain.png", count=1)
    named = render_preview(
        volume, labels, tmp_path / "named.png", count=1, class_names=("background", "a", "b")
    )
    with Image.open(plain) as without, Image.open(named) as with_legend:
        assert with_legend.height == without.height + LEGEND_PX + 2 * MARK_MARGIN_PX
        assert np.array_equal(np.asarray(with_legend)[: without.height], np.asarray(without))
        strip = np.asarray(with_legend.convert("RGB"))[without.height :].reshape(-1, 3)
    for colour in LABEL_COLOURS[:2]:
        assert (strip == colour.astype(np.uint8)).all(axis=1).sum() == LEGEND_PX**2
