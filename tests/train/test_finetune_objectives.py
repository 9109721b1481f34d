"""The fine-tuning objectives: the semi-supervised ramp, both methods' outputs, resumable state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salign_cli.data.augment import AugmentConfig
from salign_cli.data.sampling import LabelledAndUnlabelled, LabelledSliceDataset
from salign_cli.errors import InputError
from salign_cli.model.unet import UNet2D, UNetConfig
from salign_cli.train.recipe import SemiConfig
from salign_cli.train.segmentation import SemiSupervisedObjective


def objective(method: str, **semi: float) -> SemiSupervisedObjective:
    torch.manual_seed(0)
    unet = UNet2D(UNetConfig(width=4, depth=2, num_classes=3))
    config = SemiConfig(method=method, **semi)  # type: ignore[arg-type]
    return SemiSupervisedObjective(
        unet, patch_size=(16, 16), semi=config, total_steps=10, ema_decay=0.9
    )


def batch() -> dict:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 16, 16)).astype(np.float32)
    labels = (image > 0.5).astype(np.uint8) + (image > 1.5).astype(np.uint8)
    labelled = LabelledSliceDataset([image], [labels], patch_size=(16, 16), seed=0)
    unlabelled = LabelledSliceDataset(
        [image], None, patch_size=(16, 16), augment=AugmentConfig().strong(), seed=1
    )
    both = LabelledAndUnlabelled(labelled, unlabelled)
    return torch.utils.data.default_collate([both[i] for i in range(4)])


def test_the_unlabelled_term_waits_for_the_start_then_ramps_to_one() -> None:
    semi = objective("fixmatch", start_fraction=0.5, ramp_fraction=0.2)
    weights = []
    for _ in range(10):
        weights.append(semi.unlabelled_weight())
        semi.after_step()
    # steps 0-4: before the start; step 5: ramp at t = 0 → e^-5; step 6: t = 0.5; 7+: done
    assert weights[:5] == [0.0] * 5
    assert weights[5] == pytest.approx(np.exp(-5))
    assert weights[6] == pytest.approx(np.exp(-5 * 0.25))
    assert weights[7:] == [1.0] * 3
    assert int(semi.state_dict()["steps_done"]) == 10  # saved with every checkpoint


@pytest.mark.parametrize(("start", "supervised"), [(0.5, 5), (0.21, 3), (0.0, 0)])
def test_supervised_steps_counts_the_steps_with_no_unlabelled_term(start, supervised) -> None:
    semi = objective("fixmatch", start_fraction=start, ramp_fraction=0.2)
    assert semi.supervised_steps == supervised
    weights = []
    for _ in range(10):
        weights.append(semi.unlabelled_weight())
        semi.after_step()
    assert weights.index(next(w for w in weights if w > 0)) == supervised


@pytest.mark.parametrize("method", ["fixmatch", "bcp"])
def test_both_methods_give_a_differentiable_loss_and_pseudo_label_statistics(method) -> None:
    semi = objective(method, start_fraction=0.0, ramp_fraction=0.0)
    outputs = semi(batch())
    outputs["loss"].backward()
    assert torch.isfinite(outputs["loss"])
    assert 0.0 <= float(outputs["kept"]) <= 1.0 and 0.0 < float(outputs["confidence"]) <= 1.0
    assert float(outputs["unsup"]) >= 0.0 and outputs["unsup_weight"] > 0
    grads = [p.grad for p in semi.unet.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in semi.ema.model.parameters())  # the teacher is frozen


def test_before_the_start_only_the_labelled_half_counts() -> None:
    semi = objective("bcp", start_fraction=0.5)
    outputs = semi(batch())
    assert outputs["unsup_weight"] == 0.0 and float(outputs["unsup"]) == 0.0
    assert torch.equal(outputs["loss"], outputs["sup"])


@pytest.mark.parametrize(("fraction", "unlabelled_slices"), [(1.0, 4), (0.5, 2), (0.1, 2)])
def test_fixmatch_uses_its_share_of_the_unlabelled_slices(fraction, unlabelled_slices) -> None:
    semi = objective("fixmatch", start_fraction=0.0, ramp_fraction=0.0)
    semi.semi = SemiConfig(
        method="fixmatch", start_fraction=0.0, ramp_fraction=0.0, unlabelled_fraction=fraction
    )
    seen: list[tuple[str, int]] = []
    for name, net in (("student", semi.unet), ("teacher", semi.ema.model)):
        net.register_forward_pre_hook(lambda _, args, name=name: seen.append((name, len(args[0]))))
    outputs = semi(batch())  # 4 labelled + 4 unlabelled samples
    assert torch.isfinite(outputs["loss"])
    # at least 2 unlabelled slices are kept, so CutMix always has a partner slice
    assert seen == [("teacher", unlabelled_slices), ("student", 4), ("student", unlabelled_slices)]


def test_the_unlabelled_fraction_must_be_a_share() -> None:
    with pytest.raises(InputError, match="unlabelled fraction"):
        SemiConfig(unlabelled_fraction=0.0)
