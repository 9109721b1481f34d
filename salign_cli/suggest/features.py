"""One feature vector per scan from a network's encoder, for choosing which scans to label.

A scan is summarised by the U-Net's bottleneck (the coarsest, most semantic map) on up to
`SLICES_PER_SCAN` slices spread evenly through it: each slice's map is averaged over the
plane, and the scan's vector is the mean and the spread of those over its slices (what its
slices look like, and how much they vary). Scans that look alike to the network get nearby
vectors, which is what the selection's clusters need; whether that matches "teaches the model
the same thing" is what benchmarks/suggest_vs_random.py measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from salign_cli.data.preprocess import with_context
from salign_cli.model.unet import UNet2D

SLICES_PER_SCAN = 24  # enough to see the whole scan; more only costs time
_BATCH = 8  # slices per pass: bounds the full-resolution first stage on a 512² CT


def spread_slices(depth: int, count: int = SLICES_PER_SCAN) -> np.ndarray:
    """Indices of ``count`` slices spread evenly over ``depth`` (all of them if fewer)."""
    if depth <= count:
        return np.arange(depth)
    return np.unique(np.linspace(0, depth - 1, count).round().astype(int))


def scan_embedding(
    network: UNet2D, slices: np.ndarray, context: int, device: torch.device
) -> np.ndarray:
    """The feature vector ``[2·C]`` of one prepared scan ``[D, H, W]`` (see the module)."""
    chosen = spread_slices(len(slices)).tolist()
    pooled = []
    with torch.inference_mode():
        for start in range(0, len(chosen), _BATCH):
            batch = np.concatenate(
                [with_context(slices, i, i + 1, context) for i in chosen[start : start + _BATCH]]
            )
            features = network.features(torch.from_numpy(batch).to(device), up_to="bottleneck")
            pooled.append(features.bottleneck.float().mean(dim=(2, 3)).cpu().numpy())
    per_slice = np.concatenate(pooled).astype(np.float64)
    return np.concatenate([per_slice.mean(axis=0), per_slice.std(axis=0)])


def scan_embeddings(
    network: UNet2D,
    scans: Sequence[np.ndarray],
    context: int,
    device: torch.device,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """`scan_embedding` of every scan: ``[N, 2·C]``; ``on_progress(done, N)`` after each."""
    network = network.to(device).eval()
    rows = []
    for done, slices in enumerate(scans, start=1):
        rows.append(scan_embedding(network, slices, context, device))
        if on_progress is not None:
            on_progress(done, len(scans))
    return np.stack(rows)
