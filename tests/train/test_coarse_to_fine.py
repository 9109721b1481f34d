"""Coarse-to-fine fine-tuning: the first steps see their patch at half resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salign_cli.data.augment import identity_params
from salign_cli.errors import OptionError
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.train import segmentation
from salign_cli.train.recipe import (
    CPU_RECIPE,
    FinetuneRecipe,
    SemiConfig,
    coarse_field_of_view,
    coarse_patch_size,
)
from salign_cli.train.segmentation import SegmentationObjective, SemiSupervisedObjective

PATCH = (48, 64)


def blocky_batch(batch: int = 2) -> tuple[dict, np.ndarray, np.ndarray]:
    """Canvases (96×96: the field of view of PATCH and its coarse 32×32) constant on every 2×2
    block, so a half-resolution grid reads one block per pixel whatever its interpolation."""
    rng = np.random.default_rng(0)
    blocks = rng.normal(size=(batch, 48, 48)).astype(np.float32)
    block_labels = rng.integers(0, 3, size=(batch, 48, 48))
    image = np.kron(blocks, np.ones((1, 2, 2), np.float32))
    labels = np.kron(block_labels, np.ones((1, 2, 2), np.int64))
    canvas = {
        "image": torch.from_numpy(np.repeat(image[:, None], 3, axis=1)),  # ±1 context slices
        "label": torch.from_numpy(labels),
        "valid": torch.ones(batch, 1, 96, 96),
        "augment": identity_params(batch),
    }
    return canvas, blocks, block_labels


def seen_by_the_network(
    objective: SegmentationObjective, batch: dict, monkeypatch: pytest.MonkeyPatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images the U-Net gets and the labels its loss is computed against, for one step."""
    seen: dict[str, torch.Tensor] = {}

    def record_input(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen["x"] = args[0]

    hook = objective.unet.register_forward_pre_hook(record_input)
    losses = segmentation.segmentation_losses

    def recording(logits, labels, **kwargs):
        seen["labels"] = labels
        return losses(logits, labels, **kwargs)

    monkeypatch.setattr(segmentation, "segmentation_losses", recording)
    objective(batch)
    hook.remove()
    monkeypatch.undo()
    return seen["x"], seen["labels"]


def objective_with_coarse_steps(coarse_steps: int) -> SegmentationObjective:
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig(in_channels=3, num_classes=3, width=4, depth=4))
    coarse = coarse_patch_size(PATCH, 4)
    return SegmentationObjective(
        unet, patch_size=PATCH, coarse_steps=coarse_steps, coarse_patch=coarse
    )


def test_a_coarse_step_reads_every_second_pixel_then_the_full_patch_takes_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objective = objective_with_coarse_steps(2)
    batch, blocks, block_labels = blocky_batch()
    for _ in range(2):
        assert objective.view() == ((32, 32), 0.5)
        images, labels = seen_by_the_network(objective, batch, monkeypatch)
        # 32 pixels 2 apart, centred on the canvas' centre 47.5: source 16.5 … 78.5, i.e.
        # the 2×2 blocks 8 … 39 (bilinear averages each block's two pixels per axis)
        assert images.shape == (2, 3, 32, 32)
        assert torch.allclose(images[:, 1], torch.from_numpy(blocks[:, 8:40, 8:40]), atol=1e-4)
        assert torch.equal(labels, torch.from_numpy(block_labels[:, 8:40, 8:40]))
        objective.after_step()
    assert objective.view() == (PATCH, 1.0)
    images, labels = seen_by_the_network(objective, batch, monkeypatch)
    # the full patch at the scan's own spacing: the canvas' centre crop, rows 24-71, cols 16-79
    assert images.shape == (2, 3, 48, 64)
    assert torch.allclose(images[:, 1], batch["image"][:, 1, 24:72, 16:80], atol=1e-4)
    assert torch.equal(labels, batch["label"][:, 24:72, 16:80])


def test_without_coarse_steps_every_step_is_the_full_patch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objective = objective_with_coarse_steps(0)
    batch, _, _ = blocky_batch()
    assert objective.view() == (PATCH, 1.0)
    images, _ = seen_by_the_network(objective, batch, monkeypatch)
    assert images.shape == (2, 3, 48, 64)


@pytest.mark.parametrize("method", ["fixmatch", "bcp"])
def test_semi_supervised_steps_at_half_resolution_mix_on_the_coarse_patch(method) -> None:
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig(in_channels=3, num_classes=3, width=4, depth=4))
    semi = SemiSupervisedObjective(
        unet,
        patch_size=PATCH,
        semi=SemiConfig(method=method, start_fraction=0.0, ramp_fraction=0.0),  # type: ignore[arg-type]
        total_steps=10,
        ema_decay=0.9,
        coarse_steps=5,
        coarse_patch=(32, 32),
    )
    labelled, _, _ = blocky_batch()
    unlabelled = {**labelled, "label": torch.zeros_like(labelled["label"])}
    outputs = semi({"labelled": labelled, "unlabelled": unlabelled})
    outputs["loss"].backward()
    assert torch.isfinite(outputs["loss"]) and outputs["unsup_weight"] > 0
    assert semi._box().shape == (32, 32)  # the mixing box is drawn over this step's patch


def test_the_step_count_is_checkpointed_and_older_checkpoints_without_it_count_from_zero() -> None:
    objective = objective_with_coarse_steps(3)
    for _ in range(3):
        objective.after_step()
    state = objective.state_dict()
    assert int(state["steps_done"]) == 3
    resumed = objective_with_coarse_steps(3)
    resumed.load_state_dict(state)
    assert resumed.view() == (PATCH, 1.0)
    older = {k: v for k, v in state.items() if k != "steps_done"}
    resumed.load_state_dict(older)  # strict: the hook supplies the missing count
    assert int(resumed.steps_done) == 0 and resumed.view() == ((32, 32), 0.5)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("side", [8, 17, 35, 48, 50, 96, 128, 255, 256])
def test_the_coarse_patch_is_a_whole_number_of_bottleneck_cells_covering_the_patch(
    side, depth
) -> None:
    multiple = 2**depth
    coarse = coarse_patch_size((side, side), depth)
    assert coarse[0] == coarse[1] and coarse[0] % multiple == 0
    assert 2 * coarse[0] >= side  # half resolution sees at least the full patch's field
    assert coarse[0] < side / 2 + multiple or coarse[0] == multiple  # and no more than needed
    fov = coarse_field_of_view((side, side), coarse)
    assert fov[0] >= max(side, 2 * coarse[0]) and fov[0] % 2 == side % 2


def test_the_recipe_checks_and_records_the_coarse_fraction() -> None:
    recipe = CPU_RECIPE.with_overrides(coarse_fraction=0.5)
    assert FinetuneRecipe.from_dict(recipe.to_dict()).coarse_fraction == 0.5
    with pytest.raises(OptionError, match="coarse_fraction"):
        CPU_RECIPE.with_overrides(coarse_fraction=1.0)
