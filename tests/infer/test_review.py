"""The review page: order, content, self-containment, the three views; Chromium when present."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salign_cli.infer.preview import LABEL_COLOURS, orthogonal_views
from salign_cli.infer.review import ReviewRow, ordered_rows, review_row, write_review
from salign_cli.io.volume import Volume

CLASSES = ("background", "anterior", "posterior")


def _row(case: str, expected: float | None, dice: float | None = None) -> ReviewRow:
    return ReviewRow(case, f"{case}_seg.nii.gz", (b"", b"", b""), {"anterior": 1.0}, expected, dice)


def _scan() -> tuple[Volume, np.ndarray]:
    image = np.random.default_rng(0).normal(size=(20, 30, 10)).astype(np.float32)
    labels = np.zeros((20, 30, 10), np.uint8)
    labels[5:9, 10:16, 3:7] = 1
    labels[12:15, 10:16, 3:7] = 2
    return Volume(image, np.eye(4)), labels


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cases: list[str] = []
        self.images: list[str] = []
        self.legend: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "td" and values.get("class") == "case":
            self._in = "case"
        elif tag == "img":
            self.images.append(values["src"] or "")
        elif tag == "p" and values.get("class") == "legend":
            self._in = "legend"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "p"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "case":
            self.cases.append(data)
        elif self._in == "legend" and data.strip():
            self.legend.append(data.strip())


def test_rows_are_worst_first_by_dice_when_known_else_by_expected_dice() -> None:
    rows = [_row("a", 0.9, 0.5), _row("b", 0.7, 0.8), _row("c", None, 0.6)]
    assert [r.case for r in ordered_rows(rows)] == ["a", "c", "b"]
    rows = [_row("a", 0.9), _row("b", 0.7), _row("c", None), _row("d", 0.7)]
    assert [r.case for r in ordered_rows(rows)] == ["b", "d", "a", "c"]


def test_three_views_through_the_mask_show_every_class() -> None:
    volume, labels = _scan()
    views = orthogonal_views(volume, labels)
    # axial: 20 x 30 in-plane, rotated so anterior (the 30-voxel axis) points up, enlarged 13x
    # (256 / 20, rounded up); coronal 20 x 10; sagittal 30 x 10
    assert [view.size for view in views] == [(260, 390), (520, 260), (780, 260)]
    for view in views:
        pixels = np.asarray(view).reshape(-1, 3).astype(int)
        for colour in LABEL_COLOURS[:2]:
            # a 45 % overlay: the blend is within 0.55 * 255 of the class colour
            assert (np.abs(pixels - colour * 0.45).max(axis=1) <= 0.55 * 255 + 1).any()


def test_the_page_is_self_contained_escaped_ordered_and_has_a_legend(tmp_path: Path) -> None:
    volume, labels = _scan()
    rows = [
        review_row("good", "good_seg.nii.gz", volume, labels, volumes_ml={"anterior": 0.1},
                   expected_dice=0.93),
        review_row("<b>bad</b>", "bad_seg.nii.gz", volume, labels, volumes_ml={"anterior": 0.2},
                   expected_dice=0.41),
    ]  # fmt: skip
    page = write_review(rows, CLASSES, tmp_path / "review.html", "salign review").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing to fetch: opens offline
    assert "<b>bad</b>" not in page and "&lt;b&gt;bad&lt;/b&gt;" in page
    parsed = _Page()
    parsed.feed(page)
    assert parsed.cases == ["<b>bad</b>", "good"]  # worst first
    assert parsed.legend == ["anterior", "posterior"]
    assert "rgb(230, 25, 75)" in page and "rgb(60, 180, 75)" in page  # the classes' colours
    assert len(parsed.images) == 6
    first = Image.open(io.BytesIO(base64.b64decode(parsed.images[0].split(",", 1)[1])))
    assert first.size == (260, 390)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt install chromium)")
def test_chromium_renders_the_page_offline(tmp_path: Path) -> None:
    volume, labels = _scan()
    rows = [review_row(f"case_{i}", f"case_{i}_seg.nii.gz", volume, labels,
                       volumes_ml={"anterior": 0.1}, expected_dice=0.5 + i / 10) for i in range(3)]  # fmt: skip
    page = write_review(rows, CLASSES, tmp_path / "review.html", "salign review")
    shot = tmp_path / "review.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-network",
         f"--screenshot={shot}", "--window-size=1400,900", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # the inline pictures were drawn: the first class's overlay colour is on screen
    assert (
        np.abs(pixels - (LABEL_COLOURS[0] * 0.45 + 0.55 * pixels.clip(0, 0))).max(axis=1) < 200
    ).any()
    assert len(np.unique(pixels, axis=0)) > 50  # more than text on a flat background
