"""The plain 2D U-Net reference that salign's fine-tuning must beat.

See docs/explanation/method.md, "Baselines".

Deliberately independent of salign (numpy, nibabel and torch only, its own small U-Net): the
same split and cases as `salign bench few-label`, nothing clever. Recipe: per-volume z-score,
slices along the third axis centre-padded with 0 to a 64² canvas (the same at training and test
time), a width-W U-Net (4 max-poolings), AdamW 1e-3 (weight decay 1e-4) with a one-cycle
schedule (30 % warm-up), cross-entropy + soft Dice over the foreground classes, a left-right flip
and ±10 % intensity scale + Gaussian noise; the final weights are scored on the test cases.

Case selection matches salign: the test cases are the last ``--test-cases`` ids in sorted order;
the k labelled scans are the first k of the other ids (sorted) permuted by
``numpy.random.default_rng(seed)``.

    python benchmarks/plain_unet.py ../shared/data/hippocampus --k 5 --seed 0

prints a table row and, last, one JSON line with the Dice and the time. Dice: per class the mean
over test cases where the class is present in the reference or the prediction, then the mean of
the classes (on hippocampus, where every case has both classes, this is salign's per-case mean).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CANVAS = 64


def split(data: Path, k: int, seed: int, test_cases: int) -> tuple[list[str], list[str]]:
    """``(labelled ids, test ids)`` exactly as salign draws them."""
    ids = sorted(p.name.split(".nii")[0] for p in (data / "labelsTr").glob("*.nii*"))
    test, pool = ids[-test_cases:], ids[:-test_cases]
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:k]], test


def load(data: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    """z-scored image slices and label slices ``[D, H, W]`` (slices along the third axis)."""
    image = np.asarray(nib.load(data / "imagesTr" / f"{case}.nii.gz").dataobj, np.float32)
    label = np.asarray(nib.load(data / "labelsTr" / f"{case}.nii.gz").dataobj).round()
    image = (image - image.mean()) / max(float(image.std()), 1e-8)
    return np.moveaxis(image, 2, 0), np.moveaxis(label.astype(np.int64), 2, 0)


def pad(stack: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Centre ``[D, H, W]`` in a CANVAS² canvas of zeros; returns it and the top-left corner."""
    depth, height, width = stack.shape
    top, left = (CANVAS - height) // 2, (CANVAS - width) // 2
    canvas = np.zeros((depth, CANVAS, CANVAS), stack.dtype)
    canvas[:, top : top + height, left : left + width] = stack
    return canvas, (top, left)


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class UNet(nn.Module):
    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(5)]
        self.down = nn.ModuleList(
            block(a, b) for a, b in zip([1, *widths[:-1]], widths, strict=True)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(b, a, 2, 2) for a, b in itertools.pairwise(widths)
        )
        self.dec = nn.ModuleList(block(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, down in enumerate(self.down):
            x = down(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for level in reversed(range(len(self.dec))):
            x = self.dec[level](torch.cat([self.up[level](x), skips[level]], 1))
        return self.head(x)


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probabilities = logits.softmax(1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    overlap = (probabilities * one_hot).sum((0, 2, 3))
    total = probabilities.sum((0, 2, 3)) + one_hot.sum((0, 2, 3))
    dice = (2 * overlap + 1e-5) / (total + 1e-5)
    return F.cross_entropy(logits, target) + 1 - dice[1:].mean()


def run(
    data: Path, k: int, seed: int, *, steps: int, batch: int, width: int, test_cases: int = 50
) -> dict:
    """Train on k labelled scans, score the test cases; returns Dice per class, mean and time."""
    begun = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1000)
    labelled, test = split(data, k, seed, test_cases)
    volumes = [load(data, case) for case in labelled]
    images = np.concatenate([pad(image)[0] for image, _ in volumes])
    labels = np.concatenate([pad(label)[0] for _, label in volumes])
    classes = int(max(label.max() for _, label in volumes)) + 1
    model = UNet(width, classes)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 1e-3, total_steps=steps, pct_start=0.3
    )
    started = time.perf_counter()
    model.train()
    for _ in range(steps):
        pick = rng.integers(len(images), size=batch)
        x, y = torch.from_numpy(images[pick].copy())[:, None], torch.from_numpy(labels[pick].copy())
        flip = torch.from_numpy(rng.random(batch) < 0.5)
        x[flip], y[flip] = x[flip].flip(-2), y[flip].flip(-2)  # left-right: the first in-plane axis
        scale = torch.from_numpy(rng.uniform(0.9, 1.1, (batch, 1, 1, 1)).astype(np.float32))
        x = x * scale + 0.1 * torch.randn_like(x)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    train_s = time.perf_counter() - started
    model.eval()
    dice = {c: [] for c in range(1, classes)}
    with torch.no_grad():
        for case in test:
            image, label = load(data, case)
            canvas, (top, left) = pad(image)
            logits = model(torch.from_numpy(canvas)[:, None])
            height, width_ = image.shape[1:]
            predicted = logits.argmax(1)[:, top : top + height, left : left + width_].numpy()
            for c in dice:
                p, r = predicted == c, label == c
                denominator = p.sum() + r.sum()
                if denominator:
                    dice[c].append(2 * (p & r).sum() / denominator)
    per_class = {c: float(np.mean(v)) for c, v in dice.items()}
    return {
        "k": k, "seed": seed, "steps": steps, "batch": batch, "width": width,
        "labelled": labelled, "test": test, "dice": per_class, "mean": float(np.mean(list(per_class.values()))),
        "train_s": train_s, "total_s": time.perf_counter() - begun,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="MSD-layout folder (imagesTr/, labelsTr/)")
    parser.add_argument("--k", type=int, default=5, help="labelled scans")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--test-cases", type=int, default=50)
    args = parser.parse_args()
    result = run(
        args.data, args.k, args.seed, steps=args.steps, batch=args.batch, width=args.width,
        test_cases=args.test_cases,
    )  # fmt: skip
    print(
        f"| plain | k={args.k} | seed={args.seed} | "
        + " | ".join(f"{c}: {d:.3f}" for c, d in result["dice"].items())
        + f" | mean {result['mean']:.3f} |"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
