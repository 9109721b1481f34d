"""Throughput of one SAL pre-training step versus a bare U-Net forward/backward, same process.

"SAL step" = sample pairs from the dataset (crop, augmentation, collate) + the U-Net and heads
on both slices + window LA + relative GP + backward + AdamW step. "bare U-Net" = forward to the
logits and backward of their sum on an already-made batch of the same number of slices (2 per
pair) and size, no optimizer: the floor the step cannot beat. Both run in this process on the
same device, so their ratio is the overhead of data, losses and optimizer.

Usage::

    python benchmarks/pretrain_throughput.py                       # CPU: 64², 16 pairs, width 16
    python benchmarks/pretrain_throughput.py --device cuda --width 32 --batch-size 64 --compile

The step runs channels_last wherever the engine does (`uses_channels_last`: CUDA, CPU) and
under bf16 autocast on CUDA; ``--compile`` adds rows with ``torch.compile``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import default_collate

from salign_cli.data.sampling import PairAugmentConfig, SlicePairDataset
from salign_cli.device import resolve_device, uses_channels_last
from salign_cli.train.pretrain import PretrainObjective, PretrainOptions, build_network


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_per_step(step: Callable[[int], None], steps: int, warmup: int, device) -> float:
    for k in range(warmup):
        step(k)
    _sync(device)
    started = time.perf_counter()
    for k in range(warmup, warmup + steps):
        step(k)
    _sync(device)
    return (time.perf_counter() - started) / steps


def measure(args: argparse.Namespace, compiled: bool) -> dict[str, float]:
    device = resolve_device(args.device)
    options = PretrainOptions(size=args.size, width=args.width)
    rng = np.random.default_rng(0)
    volumes = [rng.normal(size=(36, 35, 51)).astype(np.float16) for _ in range(8)]
    dataset = SlicePairDataset(volumes, augment=PairAugmentConfig(size=args.size), seed=0)
    objective = PretrainObjective(build_network(options, seed=0), options).to(device)
    channels_last = uses_channels_last(device)
    if channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    forward = torch.compile(objective) if compiled else objective
    unet = objective.network.unet
    unet_forward = torch.compile(unet) if compiled else unet
    memory = torch.channels_last if channels_last else torch.contiguous_format
    batch = args.batch_size

    def sal_step(k: int) -> None:
        samples = default_collate([dataset[k * batch + i] for i in range(batch)])
        samples = {
            key: value.to(device, non_blocking=True).contiguous(memory_format=memory)
            if value.ndim == 4
            else value.to(device)
            for key, value in samples.items()
        }
        with autocast:
            loss = forward(samples)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    slices = torch.randn(2 * batch, 1, args.size, args.size, device=device).contiguous(
        memory_format=memory
    )

    def bare_step(k: int) -> None:
        unet.zero_grad(set_to_none=True)
        with autocast:
            logits = unet_forward(slices)
        logits.float().sum().backward()

    sal = _time_per_step(sal_step, args.steps, args.warmup, device)
    bare = _time_per_step(bare_step, args.steps, args.warmup, device)
    return {
        "sal_slices_per_s": 2 * batch / sal,
        "bare_slices_per_s": 2 * batch / bare,
        "sal_s_per_step": sal,
        "bare_s_per_step": bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="slice pairs per step")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(
        f"device {device}, {args.size}² slices, {args.batch_size} pairs "
        f"({2 * args.batch_size} slices), width {args.width}, {args.steps} timed steps, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(f"{'mode':<10} {'SAL step s':>11} {'SAL slices/s':>13} {'bare s':>9} "
          f"{'bare slices/s':>14} {'SAL/bare':>9}")  # fmt: skip
    for compiled in (False, True) if args.compile else (False,):
        row = measure(args, compiled)
        print(
            f"{'compiled' if compiled else 'eager':<10} {row['sal_s_per_step']:>11.3f} "
            f"{row['sal_slices_per_s']:>13.1f} {row['bare_s_per_step']:>9.3f} "
            f"{row['bare_slices_per_s']:>14.1f} "
            f"{row['sal_s_per_step'] / row['bare_s_per_step']:>9.2f}"
        )


if __name__ == "__main__":
    main()
