"""The weight average: a hand-computed update, frozen copy, buffers followed, checkpointed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from salign_cli.train.ema import WeightAverage


def test_updates_follow_the_warmed_up_decay_by_hand() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(12.0)
    # update 1: d = min(0.9, 1/10) = 0.1 → 0.1 · 2 + 0.9 · 12 = 11
    average.update(model)
    assert average.model.weight.item() == pytest.approx(11.0)
    with torch.no_grad():
        model.weight.fill_(0.0)
    # update 2: d = min(0.9, 2/11) → 11 · 2/11 = 2
    average.update(model)
    assert average.model.weight.item() == pytest.approx(2.0)
    for _ in range(100):  # once (1 + n) / (10 + n) > 0.9, d is the decay itself
        average.update(model)
    assert average.current_decay() == 0.9
    before = average.model.weight.item()
    with torch.no_grad():
        model.weight.fill_(10.0)
    average.update(model)
    assert average.model.weight.item() == pytest.approx(0.9 * before + 0.1 * 10.0)


def test_the_average_is_frozen_in_eval_mode_and_copies_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    average = WeightAverage(model, decay=0.5)
    assert not any(p.requires_grad for p in average.model.parameters())
    model.train()
    model(torch.randn(4, 1, 3, 3) + 5.0)  # moves the running mean
    average.update(model)
    assert torch.equal(average.model[1].running_mean, model[1].running_mean)
    average.train()
    assert not average.model.training  # the average always uses running statistics


def test_the_average_is_part_of_the_owner_state_dict() -> None:
    class Owner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(2, 2)
            self.ema = WeightAverage(self.net, 0.99)

    owner = Owner()
    assert {"ema.model.weight", "ema.model.bias", "ema.updates"} <= set(owner.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), 1.0)
