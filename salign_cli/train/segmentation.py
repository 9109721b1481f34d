"""The fine-tuning objectives: supervised, and semi-supervised with a mean teacher.

`SegmentationObjective` trains on labelled slices; `SemiSupervisedObjective` adds the unlabelled
scans with one of the two methods of `salign_cli.objectives.semi` (FixMatch-style pseudo-labels
or bidirectional copy-paste), the EMA of the student (`salign_cli.train.ema`) as the teacher.
Both get batches of source canvases and augment them on the device
(`salign_cli.data.augment.augment_batch`), so the data loader stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from salign_cli.data.augment import apply_intensity, apply_spatial, augment_batch
from salign_cli.device import uses_channels_last
from salign_cli.model.unet import UNet2D
from salign_cli.objectives.segmentation import segmentation_losses
from salign_cli.objectives.semi import (
    box_mask,
    copy_paste,
    masked_cross_entropy,
    masked_soft_dice_loss,
    pseudo_labels,
    sigmoid_rampup,
)
from salign_cli.train.ema import WeightAverage
from salign_cli.train.recipe import SemiConfig


class SegmentationObjective(nn.Module):
    """``forward(batch) -> {"loss", "ce", "dice"}`` on a batch of source canvases.

    The batch is augmented on the device (`augment_batch`, the patch cut from the middle of each
    canvas), then cross-entropy + soft Dice (over the foreground classes unless
    ``dice_background``) of the U-Net's logits. With ``ema_decay`` an `WeightAverage` of the
    U-Net follows every optimiser step (`after_step`). ``pretrained_lr_scale`` slows every
    layer but the head when the U-Net came from a bundle (`parameter_groups`). The first
    ``coarse_steps`` steps cut ``coarse_patch`` at half resolution (`view`): coarse-to-fine, a
    step of a quarter of the pixels while the network learns the gross shape.
    """

    steps_done: torch.Tensor

    def __init__(
        self,
        unet: UNet2D,
        *,
        patch_size: tuple[int, int],
        dice_background: bool = False,
        ema_decay: float | None = None,
        pretrained_lr_scale: float = 1.0,
        coarse_steps: int = 0,
        coarse_patch: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.patch_size = patch_size
        self.dice_background = dice_background
        self.pretrained_lr_scale = pretrained_lr_scale
        self.ema = WeightAverage(unet, ema_decay) if ema_decay is not None else None
        self.coarse_steps = coarse_steps
        self.coarse_patch = coarse_patch or patch_size
        # a buffer, so a resumed run knows where it is in its schedule
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.int64))
        self.register_load_state_dict_pre_hook(_count_from_zero_when_missing)  # type: ignore[no-untyped-call]

    def view(self) -> tuple[tuple[int, int], float]:
        """This step's patch and zoom: ``coarse_patch`` at half resolution (zoom 0.5, twice the
        spacing) for the first ``coarse_steps`` steps, then ``patch_size`` at the scan's own."""
        if int(self.steps_done) < self.coarse_steps:
            return self.coarse_patch, 0.5
        return self.patch_size, 1.0

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor | float]:
        patch, zoom = self.view()
        with torch.no_grad():
            images, labels, _ = augment_batch(
                batch["image"], batch["label"], batch["valid"], _zoomed(batch["augment"], zoom),
                patch,
            )  # fmt: skip
        if uses_channels_last(images.device):
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self.unet(images)
        assert labels is not None
        losses = segmentation_losses(logits, labels, ignore_background=not self.dice_background)
        return {"loss": losses["ce"] + losses["dice"], **{k: v.detach() for k, v in losses.items()}}

    def parameter_groups(self) -> list[dict[str, Any]]:
        head = list(self.unet.head.parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in self.unet.parameters() if id(p) not in head_ids and p.requires_grad]
        return [
            {"params": body, "lr_scale": self.pretrained_lr_scale},
            {"params": head, "lr_scale": 1.0},
        ]

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.unet)
        self.steps_done += 1

    def exported(self, which: str) -> UNet2D:
        """The weights a bundle gets: ``"ema"`` (the average) or ``"final"``."""
        if which == "ema" and self.ema is not None:
            return self.ema.model  # type: ignore[return-value]
        return self.unet


class SemiSupervisedObjective(SegmentationObjective):
    """``forward({"labelled": …, "unlabelled": …})`` → losses and pseudo-label statistics.

    Until ``start_fraction`` of ``total_steps`` it trains like `SegmentationObjective` on the
    labelled half (the teacher, an EMA of the student, follows along); then the unlabelled half
    joins with ``semi.method``, its weight ramped up over ``ramp_fraction`` of the steps:

    - ``fixmatch``: the teacher labels the spatially augmented unlabelled slices (the weak
      view); the student sees the same slices after intensity augmentation and a CutMix box
      from the next slice of the batch (the strong view) and learns the teacher's confident
      pixels (``confidence >= threshold``) with cross-entropy normalised by the scan pixels, as
      UniMatch does; loss = supervised + λ(t)·unsupervised;
    - ``bcp``: a box of each labelled slice is pasted into an unlabelled slice and vice versa
      (the two halves of the batch); each mix is learnt from the ground truth where its pixels
      are labelled and from the teacher's argmax elsewhere, the pseudo-labelled part weighted by
      ``pasted_weight``; Dice and cross-entropy per part, as BCP trains.

    Logged: ``sup``, ``unsup``, ``unsup_weight``, ``confidence`` (teacher's mean confidence on
    scan pixels) and ``kept`` (fraction of scan pixels whose pseudo-label is used).
    """

    def __init__(
        self,
        unet: UNet2D,
        *,
        patch_size: tuple[int, int],
        semi: SemiConfig,
        total_steps: int,
        ema_decay: float,
        dice_background: bool = False,
        pretrained_lr_scale: float = 1.0,
        coarse_steps: int = 0,
        coarse_patch: tuple[int, int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            unet,
            patch_size=patch_size,
            dice_background=dice_background,
            ema_decay=ema_decay,
            pretrained_lr_scale=pretrained_lr_scale,
            coarse_steps=coarse_steps,
            coarse_patch=coarse_patch,
        )
        self.semi = semi
        self.total_steps = total_steps
        self.seed = seed

    @property
    def supervised_steps(self) -> int:
        """How many steps run before the unlabelled half joins: they skip the teacher and the
        unlabelled batch, so they cost about half a semi-supervised step."""
        return math.ceil(self.semi.start_fraction * max(1, self.total_steps))

    def unlabelled_weight(self) -> float:
        """The ramp: 0 before the start, then sigmoid-shaped up to 1 over the ramp."""
        progress = int(self.steps_done) / max(1, self.total_steps)
        if progress < self.semi.start_fraction:
            return 0.0
        if self.semi.ramp_fraction == 0:
            return 1.0
        return sigmoid_rampup((progress - self.semi.start_fraction) / self.semi.ramp_fraction)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor | float]:
        labelled, unlabelled = batch["labelled"], batch["unlabelled"]
        weight = self.unlabelled_weight()
        if weight == 0.0:
            outputs = super().forward(labelled)
            zero = torch.zeros((), device=outputs["loss"].device)  # type: ignore[union-attr]
            return {**outputs, "sup": outputs["loss"], "unsup": zero, "unsup_weight": 0.0}
        if self.semi.method == "fixmatch":
            unlabelled = _first_slices(unlabelled, self.semi.unlabelled_fraction)
        patch, zoom = self.view()
        with torch.no_grad():
            images, labels, _ = augment_batch(
                labelled["image"], labelled["label"], labelled["valid"],
                _zoomed(labelled["augment"], zoom), patch,
            )  # fmt: skip
            weak, _, valid = apply_spatial(
                unlabelled["image"], None, unlabelled["valid"],
                _zoomed(unlabelled["augment"], zoom), patch,
            )  # fmt: skip
        assert labels is not None and self.ema is not None
        if self.semi.method == "bcp":
            return self._copy_paste(images, labels, weak, valid, unlabelled["augment"], weight)
        return self._fixmatch(images, labels, weak, valid, unlabelled["augment"], weight)

    def _box(self) -> torch.Tensor:
        """This step's mixing box over this step's patch, drawn from (seed, step) so that a
        resumed run draws the same boxes as an uninterrupted one (the global generator is not
        part of a checkpoint)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps_done))
        return box_mask(self.view()[0], self.semi.box_fraction, generator)

    def _teacher(self, images: torch.Tensor, threshold: float) -> tuple[torch.Tensor, ...]:
        assert self.ema is not None
        with torch.no_grad():
            return pseudo_labels(self.ema.model(images), threshold)

    def _statistics(
        self, confidence: torch.Tensor, kept: torch.Tensor, valid: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        inside = valid[:, 0]
        scan_pixels = inside.sum().clamp_min(1)
        return {
            "confidence": (confidence * inside).sum().detach() / scan_pixels,
            "kept": (kept & inside).sum().detach().float() / scan_pixels,
        }

    def _fixmatch(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        weak: torch.Tensor,
        valid: torch.Tensor,
        params: Mapping[str, torch.Tensor],
        weight: float,
    ) -> dict[str, torch.Tensor | float]:
        pseudo, keep, confidence = self._teacher(weak, self.semi.threshold)
        keep = keep & valid[:, 0]
        with torch.no_grad():
            strong = apply_intensity(weak, valid, params)
            box = self._box()
            strong = copy_paste(strong.roll(1, 0), strong, box)
            pseudo = copy_paste(pseudo.roll(1, 0), pseudo, box)
            mixed_keep = copy_paste(keep.roll(1, 0), keep, box)
            mixed_valid = copy_paste(valid[:, 0].roll(1, 0), valid[:, 0], box)
        logits_l, logits_u = self.unet(images), self.unet(strong)
        supervised = segmentation_losses(
            logits_l, labels, ignore_background=not self.dice_background
        )
        sup = supervised["ce"] + supervised["dice"]
        # UniMatch normalises by the scan pixels, not the kept ones: an unsure teacher teaches less
        unsup = masked_cross_entropy(
            logits_u, pseudo, mixed_keep, denominator=mixed_valid.float().sum()
        )
        return {
            "loss": sup + self.semi.unlabelled_weight * weight * unsup,
            "sup": sup.detach(),
            "unsup": unsup.detach(),
            "unsup_weight": weight,
            **self._statistics(confidence, keep, valid),
        }

    def _copy_paste(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        unlabelled: torch.Tensor,
        valid: torch.Tensor,
        params: Mapping[str, torch.Tensor],
        weight: float,
    ) -> dict[str, torch.Tensor | float]:
        with torch.no_grad():
            unlabelled = apply_intensity(unlabelled, valid, params)
        pseudo, keep, confidence = self._teacher(unlabelled, 0.0)
        half = len(images) // 2
        box = self._box().to(images.device)
        # mix 1: an unlabelled slice with a labelled box; mix 2: a labelled slice with an
        # unlabelled box. "labelled" marks the pixels whose target is ground truth.
        inputs = torch.cat(
            [
                copy_paste(images[:half], unlabelled[:half], box),
                copy_paste(unlabelled[half:], images[half:], box),
            ]
        )
        targets = torch.cat(
            [
                copy_paste(labels[:half], pseudo[:half], box),
                copy_paste(pseudo[half:], labels[half:], box),
            ]
        )
        ground_truth = torch.cat(
            [box.expand(half, *box.shape), (1 - box).expand(len(images) - half, *box.shape)]
        )
        logits = self.unet(inputs)
        parts = {"sup": ground_truth, "unsup": 1 - ground_truth}
        losses = {
            name: masked_cross_entropy(logits, targets, mask)
            + masked_soft_dice_loss(
                logits, targets, mask, ignore_background=not self.dice_background
            )
            for name, mask in parts.items()
        }
        pasted = self.semi.pasted_weight * weight
        return {
            "loss": losses["sup"] + pasted * losses["unsup"],
            "sup": losses["sup"].detach(),
            "unsup": losses["unsup"].detach(),
            "unsup_weight": pasted,
            **self._statistics(confidence, keep, valid),
        }


def _zoomed(params: Mapping[str, torch.Tensor], zoom: float) -> Mapping[str, torch.Tensor]:
    """Augmentation draws with their zoom multiplied by ``zoom`` (< 1: a coarser grid)."""
    if zoom == 1.0:
        return params
    return {**params, "scale": torch.as_tensor(params["scale"]) * zoom}


def _first_slices(batch: Mapping[str, Any], fraction: float) -> Mapping[str, Any]:
    """The first ``fraction`` of a collated batch's samples, every entry (the augmentation
    draws too) cut alike; at least 2, so CutMix has a partner slice."""
    total = len(batch["image"])
    keep = min(total, max(2, math.ceil(fraction * total)))
    if keep == total:
        return batch

    def cut(value: Any) -> Any:
        return {k: cut(v) for k, v in value.items()} if isinstance(value, Mapping) else value[:keep]

    return cut(batch)  # type: ignore[no-any-return]


def _count_from_zero_when_missing(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any
) -> None:
    """Checkpoints of supervised runs written before the step count was a buffer lack it; such
    a run had no coarse steps, so resuming it counts from zero."""
    state_dict.setdefault(prefix + "steps_done", torch.zeros((), dtype=torch.int64))
