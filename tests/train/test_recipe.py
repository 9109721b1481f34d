"""The fine-tuning recipe: planning rules with known answers, validation, JSON round trip."""

from __future__ import annotations

import json

import pytest

from salign_cli.data.preprocess import mirror_axes
from salign_cli.errors import InputError
from salign_cli.train.recipe import (
    CPU_RECIPE,
    GPU_RECIPE,
    FinetuneRecipe,
    patch_size_for,
    resolve_mirror,
    slices_per_step,
)


def test_patch_is_the_median_slice_rounded_up_to_the_network_multiple() -> None:
    # hippocampus: median 35 x 50 → 48 x 64 for a depth-4 U-Net (multiples of 16)
    assert patch_size_for([(35, 50), (31, 40), (43, 59)], 4, 256) == (48, 64)
    assert patch_size_for([(512, 512)], 4, 256) == (256, 256)  # capped
    assert patch_size_for([(5, 7)], 3, 256) == (8, 8)  # never below one multiple
    with pytest.raises(InputError):
        patch_size_for([], 4, 256)


def test_batch_fills_the_pixel_budget() -> None:
    cpu, gpu = CPU_RECIPE.batch_pixels, GPU_RECIPE.batch_pixels
    assert slices_per_step((48, 64), cpu) == 32  # the budget is 32 slices of 48 x 64
    assert slices_per_step((256, 256), cpu) == 2  # 98,304 / 65,536 → 1.5 → at least 2
    assert slices_per_step((8, 8), cpu) == 256  # at most 256
    assert slices_per_step((48, 64), gpu) == 64


def test_left_right_is_the_rows_of_axial_and_coronal_slices_only() -> None:
    # canonical RAS: axis 0 is left-right; slices drop the slice axis and keep the rest in order
    assert mirror_axes("lr", 2) == (0,) and mirror_axes("lr", 1) == (0,)
    assert mirror_axes("lr", 0) == ()  # sagittal slices have no left-right axis
    assert mirror_axes("none", 2) == () and mirror_axes("all", 0) == (0, 1)


def test_auto_mirroring_is_off_for_lateral_classes() -> None:
    assert resolve_mirror("auto", ["background", "Anterior", "Posterior"]) == "lr"
    assert resolve_mirror("auto", ["background", "kidney_left", "kidney_right"]) == "none"
    assert resolve_mirror("auto", ["background", "Left Lung"]) == "none"
    assert resolve_mirror("auto", ["background", "cleft"]) == "lr"  # a word, not a substring
    assert resolve_mirror("all", ["kidney_left"]) == "all"  # an explicit choice is kept


def test_recipe_round_trips_through_json_and_refuses_nonsense() -> None:
    recipe = GPU_RECIPE.with_overrides(patch_size=(32, 48), context=2, steps=None)
    again = FinetuneRecipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe and again.in_channels == 5
    with pytest.raises(InputError, match="unknown"):
        FinetuneRecipe.from_dict({"stepz": 3})
    with pytest.raises(InputError, match="mirror must be one of"):
        FinetuneRecipe(mirror="diagonal")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="EMA"):
        FinetuneRecipe(ema_decay=None)  # the EMA is exported by default, so it needs a decay
    assert CPU_RECIPE.warmup_steps() == 300  # the CPU one-cycle: 30 % of 1000
    assert GPU_RECIPE.warmup_steps() == 200  # 10 % of 2000
