"""A PNG of Dice against the number of labelled scans, one line per method, drawn with Pillow.

matplotlib is not a dependency; a line chart with error bars needs only a few primitives. Each
point is the mean over seeds, its bar ± one sample sd (no bar with a single seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from salign_cli.io.atomic import atomic_path

# Colour-blind-safe (Okabe–Ito) colours, one per method in order.
COLOURS = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
)
SIZE = (720, 480)
MARGIN = (70, 30, 170, 60)  # left, top, right, bottom


def plot_dice_vs_k(
    curves: Mapping[str, Sequence[tuple[int, float, float]]], path: Path, title: str = ""
) -> Path:
    """Draw ``{method: [(k, mean, sd), ...]}`` to ``path`` (PNG, written atomically).

    The x axis spaces the k values evenly (1, 2, 5, 10 are categories, not a scale); the y axis
    spans the Dice values shown, rounded out to tenths. NaN points are skipped.
    """
    from PIL import Image, ImageDraw

    ks = sorted({k for points in curves.values() for k, _, _ in points})
    values = [
        v
        for points in curves.values()
        for _, mean, sd in points
        for v in (mean - (sd if math.isfinite(sd) else 0), mean + (sd if math.isfinite(sd) else 0))
        if math.isfinite(v)
    ]
    low = math.floor(10 * min(values, default=0.0)) / 10
    high = min(1.0, math.ceil(10 * max(values, default=1.0)) / 10)
    if high <= low:
        low, high = max(0.0, high - 0.1), high if high > 0 else 0.1
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN[0], MARGIN[1], SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]

    def x_of(k: int) -> float:
        return left + (right - left) * (ks.index(k) + 0.5) / max(len(ks), 1)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    draw.rectangle((left, top, right, bottom), outline="black")
    ticks = round((high - low) * 10)
    for i in range(ticks + 1):
        value = low + i * (high - low) / ticks
        y = y_of(value)
        draw.line((left, y, right, y), fill=(225, 225, 225))
        draw.text((left - 40, y - 6), f"{value:.1f}", fill="black")
    for k in ks:
        draw.text((x_of(k) - 4, bottom + 8), str(k), fill="black")
    draw.text(((left + right) / 2 - 70, bottom + 30), "labelled scans (k)", fill="black")
    draw.text((8, top - 20), "mean Dice", fill="black")
    if title:
        draw.text((left + 80, top - 20), title, fill="black")
    for index, (method, points) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        shown = [(k, m, s) for k, m, s in sorted(points) if math.isfinite(m)]
        xy = [(x_of(k), y_of(m)) for k, m, _ in shown]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for (x, y), (_, mean, sd) in zip(xy, shown, strict=True):
            if math.isfinite(sd):
                draw.line((x, y_of(mean - sd), x, y_of(mean + sd)), fill=colour, width=1)
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        legend_y = top + 10 + 20 * index
        draw.line((right + 15, legend_y + 6, right + 40, legend_y + 6), fill=colour, width=3)
        draw.text((right + 45, legend_y), method[:20], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return path
