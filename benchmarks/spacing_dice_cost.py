"""What a coarser model spacing costs in Dice at best: the resampling round trip of a real label.

A model trained at spacing s learns the reference label resampled to s (nearest neighbour, as
`prepare_scan` does for fine-tuning), and its per-class scores go back to the scan's own grid
with `restore_labels` (bilinear, then argmax). A perfect network at s therefore returns the
one-hot of the label on the coarse grid; this script sends that through `restore_labels` and
scores it against the original label. The result is an upper bound on the Dice a model at s
can reach, not the Dice of a trained model.

    python benchmarks/spacing_dice_cost.py                       # spleen CT fixture
    python benchmarks/spacing_dice_cost.py IMAGE LABEL --spacings native 1.5 3

Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's salign, not whichever one is installed

from salign_cli.data.preprocess import PreprocessConfig, prepare_scan, restore_labels  # noqa: E402 (after the path)
from salign_cli.io.volume import read_volume  # noqa: E402 (after the path)
from salign_cli.metrics.masks import dice  # noqa: E402 (after the path)

FIXTURES = REPO.parent / "shared" / "data" / "fixtures"


def round_trip_dice(
    image_path: Path, label_path: Path, spacing_mm: float | None
) -> tuple[tuple[int, int], dict[int, float]]:
    """The coarse in-plane grid and the Dice per foreground class after the round trip."""
    volume, labels = read_volume(image_path), read_volume(label_path)
    target = None if spacing_mm is None else (spacing_mm, spacing_mm)
    config = PreprocessConfig(modality="CT", target_spacing_mm=target)
    prepared = prepare_scan(volume, config, labels)
    assert prepared.labels is not None
    classes = np.unique(labels.array).astype(int)
    one_hot = np.stack(
        [(prepared.labels == c).astype(np.float32) for c in range(classes.max() + 1)]
    )
    restored = restore_labels(one_hot, prepared, volume)
    reference = labels.array.astype(int)
    return prepared.resampled_shape, {
        int(c): float(dice(restored == c, reference == c)) for c in classes if c != 0
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, default=FIXTURES / "spleen2_ct.nii.gz")
    parser.add_argument("label", nargs="?", type=Path, default=FIXTURES / "spleen2_ct_seg.nii.gz")
    parser.add_argument("--spacings", nargs="+", default=["native", "1.5", "3"])
    args = parser.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"{args.image}: not found; pass IMAGE LABEL")
    volume = read_volume(args.image)
    print(f"\n{args.image.name}: {volume.shape}, spacing {np.round(volume.spacing_mm, 3)} mm")
    print(f"{'model spacing':>14} {'grid':>10} {'Dice (round trip)':>18}")
    rows = []
    for choice in args.spacings:
        spacing_mm = None if choice == "native" else float(choice)
        grid, per_class = round_trip_dice(args.image, args.label, spacing_mm)
        mean = float(np.mean(list(per_class.values())))
        rows.append({"spacing_mm": choice, "grid": list(grid), "dice": per_class, "mean": mean})
        print(f"{choice:>14} {grid[0]:>4} x {grid[1]:<4} {mean:18.4f}")
    print(
        "\nUpper bound: a perfect network on the coarse grid, its one-hot sent back with "
        "restore_labels."
    )
    print(json.dumps({"benchmark": "spacing_dice_cost", "image": str(args.image), "rows": rows}))


if __name__ == "__main__":
    main()
