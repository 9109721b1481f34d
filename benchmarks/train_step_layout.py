"""Seconds per fine-tuning step in each memory layout: NCHW (torch's default) vs channels_last.

One step = the U-Net forward on a batch of 2.5D slices, the fine-tune's loss (cross-entropy +
soft Dice), backward and AdamW — the network part of a `salign finetune` step, on a ready-made
batch (sampling and augmentation are the same in both layouts). Why it exists: the engine runs
channels_last wherever `salign_cli.device.uses_channels_last` says so, and that rule is a
measurement, this one.

Usage::

    python benchmarks/train_step_layout.py                     # CPU: width 16, 48×64, 8–64 slices
    python benchmarks/train_step_layout.py --threads 1 --slices 32

Prints a table and, last, one JSON line with every row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from salign_cli.device import resolve_device
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.objectives.segmentation import segmentation_losses

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def seconds_per_step(
    args: argparse.Namespace, slices: int, layout: torch.memory_format, device: torch.device
) -> float:
    """Median wall time of ``args.steps`` steps after ``args.warmup`` untimed ones."""
    torch.manual_seed(0)
    config = UNetConfig(in_channels=3, num_classes=args.classes, width=args.width, depth=4)
    unet = UNet2D(config).to(device).to(memory_format=layout)  # type: ignore[call-overload]  # torch's stub lacks it
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    images = torch.randn(slices, 3, args.height, args.width_px, device=device)
    images = images.contiguous(memory_format=layout)
    labels = torch.randint(0, args.classes, (slices, args.height, args.width_px), device=device)
    durations = []
    for _ in range(args.warmup + args.steps):
        started = time.perf_counter()
        losses = segmentation_losses(unet(images), labels, ignore_background=True)
        optimizer.zero_grad(set_to_none=True)
        (losses["ce"] + losses["dice"]).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations[args.warmup :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", default="8,16,32,64", help="slices per step, comma-separated")
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width-px", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="U-Net width")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"device {device}, {args.height}×{args.width_px} slices, width {args.width}, "
        f"{args.steps} timed steps (median), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(f"{'slices':>6} {'nchw s':>8} {'channels_last s':>16} {'speed-up':>9}")
    rows = []
    for slices in (int(text) for text in args.slices.split(",")):
        times = {name: seconds_per_step(args, slices, fmt, device) for name, fmt in LAYOUTS.items()}
        speedup = times["nchw"] / times["channels_last"]
        print(f"{slices:>6} {times['nchw']:>8.3f} {times['channels_last']:>16.3f} {speedup:>8.2f}×")
        rows.append({"slices": slices, **{f"{k}_s": round(v, 4) for k, v in times.items()}})
    print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
