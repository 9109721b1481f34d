"""The frozen-feature probe: hypercolumn shapes, the test split never touched, Dice in range."""

from __future__ import annotations

from pathlib import Path

import torch

from salign_cli.bench.probe import hypercolumns, probe
from salign_cli.data.synthetic import write_dataset
from salign_cli.model.unet import UNet2D, UNetConfig


def test_hypercolumns_stack_every_level_at_full_size() -> None:
    unet = UNet2D(UNetConfig(width=4, depth=2)).eval()
    features = hypercolumns(unet, torch.zeros(3, 20, 28).numpy(), torch.device("cpu"))
    # bottleneck 16 + decoder 8 + 4 channels, each upsampled to the slice's 20 x 28
    assert tuple(features.shape) == (3, 16 + 8 + 4, 20, 28)


def test_probe_keeps_off_the_test_split(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", cases=6, test_cases=0)
    result = probe(
        "scratch", data, workspace=tmp_path / "ws", labels=1, validation_cases=2,
        test_cases=2, steps=10, device="cpu",
    )  # fmt: skip
    test = {"synthetic_004", "synthetic_005"}  # the last two ids
    assert not (set(result.labelled_case_ids) | set(result.validation_case_ids)) & test
    assert len(result.labelled_case_ids) == 1 and len(result.validation_case_ids) == 2
    assert set(result.dice) == {"vessel", "organ"}
    assert 0.0 <= result.mean <= 1.0
