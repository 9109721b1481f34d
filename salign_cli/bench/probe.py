"""A one-minute frozen-feature probe: how much does a network's representation already know?

Fine-tuning a pre-trained network mixes two things: what pre-training learnt and what the
fine-tune re-learns. The probe isolates the first. The U-Net is frozen; every decoder map (and
the bottleneck) is upsampled to the slice's size and stacked — a "hypercolumn" per pixel — and
only a 1×1 convolution (a linear classifier per pixel) is fitted on the slices of ``labels``
labelled scans, with cross-entropy + Dice. Its Dice on validation scans ranks pre-training
variants in about a minute on two CPU cores, so an ablation can probe every variant and
fine-tune only the best few (docs/explanation/method.md,
"How the defaults were chosen").

Scans: the test split (the last ``test_cases`` ids, as in `salign_cli.bench.few_label`) is
never touched; the labelled scans are the first ``labels`` of the other ids permuted by the
seed, and validation the next ``validation_cases`` of that order. Features are standardised per
channel on the labelled pixels, so a randomly initialised network (whose batch-norm statistics
were never trained) and a pre-trained one are compared on equal terms. Dice is computed on the
prepared slice grid (the resampled grid the network sees).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from salign_cli.bench.few_label import test_split_of
from salign_cli.data.preprocess import PreprocessConfig, SliceCache
from salign_cli.device import resolve_device
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.objectives.segmentation import segmentation_losses
from salign_cli.train.finetune_setup import SCRATCH
from salign_cli.train.pretrain import CPU_WIDTH
from salign_cli.train.scans import (
    class_names_for,
    load_cached_slices,
    preprocess_config_for,
    resolve_labelled_cases,
    seeded_order,
)
from salign_cli.workspace import Workspace

_BATCH = 16  # slices per feature pass


@dataclass(frozen=True)
class ProbeResult:
    """Probe Dice per class and their mean on the validation scans, and what was probed."""

    model: str
    dice: dict[str, float]
    mean: float
    labelled_case_ids: tuple[str, ...]
    validation_case_ids: tuple[str, ...]
    feature_channels: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dice": self.dice,
            "mean": self.mean,
            "labelled_case_ids": list(self.labelled_case_ids),
            "validation_case_ids": list(self.validation_case_ids),
            "feature_channels": self.feature_channels,
            "seconds": self.seconds,
        }


def frozen_network(
    model: str, cases: Sequence[Any], workspace: Workspace, seed: int
) -> tuple[UNet2D, PreprocessConfig]:
    """The U-Net to probe and its preprocessing: a bundle (``--from`` syntax) or ``scratch``
    (a seeded random network of the CPU width, the cases' own preprocessing)."""
    if model == SCRATCH:
        torch.manual_seed(seed)
        return UNet2D(UNetConfig(width=CPU_WIDTH)), preprocess_config_for(cases)
    from salign_cli.bundles.store import build_model, load_bundle

    bundle = load_bundle(model, workspace, run_kind="pretrain")
    unet = build_model(bundle)
    return unet, dataclasses.replace(bundle.contract.preprocessing, context=0)


def hypercolumns(unet: UNet2D, slices: np.ndarray, device: torch.device) -> torch.Tensor:
    """Frozen features ``[D, C, H, W]`` of slices ``[D, H, W]``: the bottleneck and every decoder
    map, bilinearly upsampled to H × W and stacked along channels."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(slices), _BATCH):
            batch = torch.from_numpy(np.asarray(slices[start : start + _BATCH], np.float32))
            batch = batch[:, None].to(device)
            features = unet.features(batch)
            maps = [features.bottleneck, *features.decoder]
            size = batch.shape[-2:]
            outputs.append(
                torch.cat(
                    [
                        F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                        for m in maps
                    ],
                    dim=1,
                ).cpu()
            )
    return torch.cat(outputs)


def probe(
    model: str,
    data_dir: Path,
    *,
    workspace: Workspace | Path | str | None = None,
    labels: int = 1,
    seed: int = 0,
    validation_cases: int = 20,
    test_cases: int = 50,
    steps: int = 300,
    device: str = "auto",
) -> ProbeResult:
    """Fit a 1×1 head on frozen features of ``labels`` scans; Dice on ``validation_cases`` scans.

    Example::

        probe("runs/pretrain-2026…", Path("data/hippocampus")).mean
    """
    started = time.perf_counter()
    space = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    space = space.ensure()
    torch_device = resolve_device(device)
    cases, dataset_names = resolve_labelled_cases([Path(data_dir)], space)
    test = set(test_split_of(cases, test_cases))
    order = seeded_order([c.case_id for c in cases if c.case_id not in test], seed)
    chosen = order[:labels]
    held = order[labels : labels + validation_cases]
    by_id = {c.case_id: c for c in cases}
    names = class_names_for((v for c in cases for v in c.label_values), dataset_names)
    unet, preprocess = frozen_network(model, [by_id[i] for i in chosen], space, seed)
    unet = unet.to(torch_device).eval()
    for parameter in unet.parameters():
        parameter.requires_grad_(False)
    cache = SliceCache(space.cache_dir)
    train = load_cached_slices([by_id[i] for i in chosen], preprocess, cache)
    features = torch.cat([hypercolumns(unet, v, torch_device) for v in train.images])
    targets = torch.cat([torch.from_numpy(np.asarray(v, np.int64)) for v in train.labels])
    mean = features.mean(dim=(0, 2, 3), keepdim=True)
    std = features.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    features = (features - mean) / std

    torch.manual_seed(seed)
    head = torch.nn.Conv2d(features.shape[1], len(names), 1)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(steps):
            losses = segmentation_losses(head(features), targets, ignore_background=True)
            optimiser.zero_grad()
            (losses["ce"] + losses["dice"]).backward()
            optimiser.step()

    validation = load_cached_slices([by_id[i] for i in held], preprocess, cache)
    per_class: dict[int, list[float]] = {label: [] for label in names if label > 0}
    with torch.no_grad():
        for image, reference in zip(validation.images, validation.labels, strict=True):
            stacked = (hypercolumns(unet, image, torch_device) - mean) / std
            predicted = head(stacked).argmax(dim=1).numpy()
            truth = np.asarray(reference)
            for label, scores in per_class.items():
                total = (predicted == label).sum() + (truth == label).sum()
                if total:
                    scores.append(
                        float(2 * ((predicted == label) & (truth == label)).sum() / total)
                    )
    dice = {
        names[label]: float(np.mean(s)) if s else float("nan") for label, s in per_class.items()
    }
    return ProbeResult(
        model=model,
        dice=dice,
        mean=float(np.nanmean(list(dice.values()))),
        labelled_case_ids=tuple(chosen),
        validation_case_ids=tuple(held),
        feature_channels=int(features.shape[1]),
        seconds=time.perf_counter() - started,
    )
