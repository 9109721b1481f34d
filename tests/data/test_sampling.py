"""Slice pairs and labelled slices: pair distances, shared crops, exact warps, determinism, shards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from salign_cli.data.augment import AugmentConfig, augment_batch
from salign_cli.data.preprocess import OUTSIDE_SCAN
from salign_cli.data.sampling import (
    LabelledSliceDataset,
    PairAugmentConfig,
    SlicePairDataset,
    SpatialParams,
    StepBatchSampler,
    warp,
)
from salign_cli.errors import InputError

# Spatial crop only: no flips, rotation, scale or intensity change, so outputs are exact crops.
CROP_ONLY = PairAugmentConfig(
    size=16,
    flip=False,
    max_rotation_deg=0.0,
    scale_range=(1.0, 1.0),
    gamma_range=(1.0, 1.0),
    contrast_range=(1.0, 1.0),
    noise_std=0.0,
)


def coded_volume(depth: int, height: int, width: int) -> np.ndarray:
    """voxel (k, y, x) = 10000·k + 100·y + x: every value names its own position."""
    k, y, x = np.meshgrid(np.arange(depth), np.arange(height), np.arange(width), indexing="ij")
    return (10000 * k + 100 * y + x).astype(np.float32)


def decode(value: float) -> tuple[int, int, int]:
    value = round(value)
    return value // 10000, (value % 10000) // 100, value % 100


def test_pairs_respect_the_distance_and_positions():
    depths = (5, 12, 30)
    volumes = [np.zeros((d, 20, 20), np.float16) for d in depths]
    data = SlicePairDataset(volumes, pair_distance=2, augment=CROP_ONLY, seed=3)
    seen_offsets = set()
    for index in range(400):
        sample = data[index]
        i, j, scan = int(sample["slice_i"]), int(sample["slice_j"]), int(sample["scan"])
        depth = depths[scan]
        assert 1 <= abs(i - j) <= 2 and 0 <= i < depth and 0 <= j < depth
        assert float(sample["z_i"]) == pytest.approx((i + 0.5) / depth)
        assert float(sample["z_j"]) == pytest.approx((j + 0.5) / depth)
        seen_offsets.add(j - i)
    assert seen_offsets == {-2, -1, 1, 2}


def test_both_slices_get_the_same_crop():
    volume = coded_volume(10, 40, 50)
    data = SlicePairDataset([volume], pair_distance=3, augment=CROP_ONLY, seed=0)
    for index in range(20):
        sample = data[index]
        image_i, image_j = sample["image_i"][0].numpy(), sample["image_j"][0].numpy()
        k_i, top, left = decode(image_i[0, 0])
        k_j, top_j, left_j = decode(image_j[0, 0])
        assert (k_i, k_j) == (int(sample["slice_i"]), int(sample["slice_j"]))
        assert (top, left) == (top_j, left_j)
        assert 0 <= top <= 40 - 16 and 0 <= left <= 50 - 16
        np.testing.assert_allclose(
            image_i, volume[k_i, top : top + 16, left : left + 16], atol=1e-2
        )
        np.testing.assert_allclose(
            image_j, volume[k_j, top : top + 16, left : left + 16], atol=1e-2
        )


def test_small_slices_are_padded_with_the_value_inference_pads_with():
    # 6 x 10 slice inside a 16 x 16 canvas; centred placement starts at (6-16)//2 = -5 and -3.
    rng = np.random.default_rng(0)
    image = rng.uniform(1.0, 2.0, size=(1, 6, 10)).astype(np.float32)
    out, inside = warp(image, SpatialParams(offset=(-5.0, -3.0)), 16)
    out = out[0].numpy()
    np.testing.assert_allclose(out[5:11, 3:13], image[0], atol=1e-6)
    mask = np.ones_like(out, dtype=bool)
    mask[5:11, 3:13] = False
    assert OUTSIDE_SCAN == 0.0  # the U-Net pads inference input with 0 (F.pad's value)
    np.testing.assert_array_equal(out[mask], OUTSIDE_SCAN)
    np.testing.assert_array_equal(inside.numpy(), ~mask)


def test_pair_intensity_augmentation_leaves_the_padding_alone():
    volume = np.random.default_rng(1).uniform(1.0, 2.0, size=(4, 6, 10)).astype(np.float32)
    no_resampling = PairAugmentConfig(
        size=16, max_rotation_deg=0.0, scale_range=(1.0, 1.0), noise_std=0.5
    )  # integer placement: the slice covers exactly 6 x 10 canvas pixels
    data = SlicePairDataset([volume], augment=no_resampling, seed=0)
    for index in range(5):
        image = data[index]["image_i"][0].numpy()
        assert np.count_nonzero(image != OUTSIDE_SCAN) == 6 * 10  # only the slice changed


def test_random_placement_keeps_the_whole_small_slice():
    volume = coded_volume(4, 6, 10) + 1.0
    data = SlicePairDataset([volume], augment=CROP_ONLY, seed=5)
    for index in range(10):
        sample = data[index]
        out = np.round(sample["image_i"][0].numpy(), 2)  # integer codes, up to float error
        whole = volume[int(sample["slice_i"])]
        assert np.isin(whole, out).all()  # every voxel of the 6 x 10 slice is in the 16 x 16 canvas
        assert np.count_nonzero(out != OUTSIDE_SCAN) == whole.size  # codes are all >= 1


def test_rotation_by_90_degrees_and_flips_are_exact():
    square = np.arange(16 * 16, dtype=np.float32).reshape(1, 16, 16)
    quarter, _ = warp(square, SpatialParams(offset=(0.0, 0.0), angle_rad=math.pi / 2), 16)
    # out[r, c] = in[S-1-c, r]: a clockwise quarter turn (derived by hand from the grid formula)
    np.testing.assert_allclose(quarter[0].numpy(), np.rot90(square[0], k=-1), atol=1e-3)
    flipped, _ = warp(square, SpatialParams(offset=(0.0, 0.0), flip=(True, False)), 16)
    np.testing.assert_allclose(flipped[0].numpy(), square[0, ::-1, :], atol=1e-3)
    zoomed, _ = warp(square, SpatialParams(offset=(0.0, 0.0), scale=2.0), 16)
    # scale 2 magnifies about the centre 7.5: output pixel 7.5 ± 1 reads input 7.5 ± 0.5
    assert float(zoomed[0, 8, 8] - zoomed[0, 7, 7]) == pytest.approx((16 + 1) * 0.5, abs=1e-3)


def test_same_index_same_sample_and_seed_changes_it():
    volume = np.random.default_rng(2).normal(size=(8, 30, 30)).astype(np.float16)
    first = SlicePairDataset([volume], seed=11)
    again = SlicePairDataset([volume], seed=11)
    other = SlicePairDataset([volume], seed=12)
    for index in (0, 7, 123456):
        a, b = first[index], again[index]
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(first[0]["image_i"], other[0]["image_i"])


def test_intensity_augmentation_is_independent_per_slice():
    slice_ = np.random.default_rng(3).normal(size=(24, 24)).astype(np.float32)
    volume = np.stack([slice_] * 6)  # identical slices: only the intensity augmentation differs
    spatial_only = PairAugmentConfig(
        size=16, gamma_range=(1.0, 1.0), contrast_range=(1.0, 1.0), noise_std=0.0
    )
    sample = SlicePairDataset([volume], augment=spatial_only, seed=0)[4]
    assert torch.equal(sample["image_i"], sample["image_j"])
    sample = SlicePairDataset([volume], augment=PairAugmentConfig(size=16), seed=0)[4]
    assert not torch.allclose(sample["image_i"], sample["image_j"])


def test_single_slice_scans_are_skipped_and_all_single_is_an_input_error():
    volumes = [np.zeros((1, 20, 20), np.float16), np.zeros((4, 20, 20), np.float16)]
    data = SlicePairDataset(volumes, names=["thin.nii.gz", "ok.nii.gz"])
    assert data.scans == [1]
    assert len(data.warnings) == 1 and "thin.nii.gz" in data.warnings[0]
    assert all(int(data[k]["scan"]) == 1 for k in range(10))
    with pytest.raises(InputError):
        SlicePairDataset([np.zeros((1, 20, 20), np.float16)])


def collate(samples: list[dict]) -> dict:
    return torch.utils.data.default_collate(samples)


def test_labelled_slices_keep_image_and_label_together_through_augmentation():
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, size=(5, 30, 26)).astype(np.float32)
    labels = (image > 0.5).astype(np.uint8) + (image > 0.8).astype(np.uint8)
    flips_and_crops = AugmentConfig(
        rotation_p=0, scale_p=0, noise_p=0, blur_p=0, brightness_p=0, contrast_p=0,
        lowres_p=0, gamma_p=0, gamma_inverted_p=0,
    )  # fmt: skip
    data = LabelledSliceDataset(
        [image], [labels], patch_size=(16, 16), augment=flips_and_crops, seed=0
    )
    batch = collate([data[index] for index in range(10)])
    images, warped_labels, valid = augment_batch(
        batch["image"], batch["label"], batch["valid"], batch["augment"], (16, 16)
    )
    assert warped_labels is not None and warped_labels.dtype == torch.int64
    expected = (images > 0.5).long() + (images > 0.8).long()
    inside = valid[:, 0]
    np.testing.assert_array_equal(warped_labels[inside].numpy(), expected[:, 0][inside].numpy())


def test_foreground_fraction_one_centres_every_patch_on_a_labelled_voxel():
    image = np.zeros((20, 40, 40), np.float32)
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[7, 3, 35] = 1  # one labelled voxel in one slice, far from the centre
    data = LabelledSliceDataset(
        [image], [labels], patch_size=(16, 16), foreground_fraction=1.0, seed=2
    )
    for index in range(8):
        sample = data[index]
        source = sample["label"].numpy()
        assert int(sample["slice"]) == 7
        assert source[source.shape[0] // 2, source.shape[1] // 2] == 1  # at the canvas centre
    uniform = LabelledSliceDataset(
        [image], [labels], patch_size=(16, 16), foreground_fraction=0.0, seed=2
    )
    assert len({int(uniform[index]["slice"]) for index in range(40)}) > 5


def test_context_channels_are_the_neighbouring_slices_and_outside_beyond_the_ends():
    volume = np.broadcast_to(np.arange(1, 5, dtype=np.float32)[:, None, None], (4, 8, 8)).copy()
    labels = np.zeros((4, 8, 8), np.uint8)
    data = LabelledSliceDataset(
        [volume], [labels], patch_size=(8, 8), context=1, foreground_fraction=0.0, seed=0,
        augment=AugmentConfig(enabled=False),
    )  # fmt: skip
    for index in range(12):
        sample = data[index]
        k = int(sample["slice"])
        inside = sample["valid"][0].bool()
        centre = sample["image"][:, inside][:, 0].tolist()
        expected = [k if k > 0 else OUTSIDE_SCAN, k + 1, k + 2 if k < 3 else OUTSIDE_SCAN]
        assert centre == expected  # slice k holds the value k + 1
        assert torch.all(sample["image"][:, ~inside] == OUTSIDE_SCAN)


def test_step_batch_sampler_shards_and_resumes():
    one = list(StepBatchSampler(8, 3))
    assert one == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24))]
    rank0 = list(StepBatchSampler(8, 3, rank=0, world_size=2))
    rank1 = list(StepBatchSampler(8, 3, rank=1, world_size=2))
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == one
    assert list(StepBatchSampler(8, 3, start_step=2)) == one[2:]
    with pytest.raises(InputError):
        StepBatchSampler(9, 3, world_size=2)


def test_pair_shift_moves_slice_j_by_at_most_the_shift_and_keeps_content():
    # two identical slices with one bright pixel: with no other augmentation, image_j is
    # image_i translated by an integer (dy, dx) with |dy|, |dx| <= shift
    volume = np.zeros((2, 40, 40), dtype=np.float32)
    volume[:, 20, 20] = 1.0
    data = SlicePairDataset(
        [volume],
        pair_distance=1,
        pair_shift=3,
        augment=PairAugmentConfig(
            size=32, enabled=False, gamma_range=(1, 1), contrast_range=(1, 1), noise_std=0.0
        ),
    )
    shifts = set()
    for index in range(40):
        sample = data[index]
        where_i = np.argwhere(sample["image_i"][0].numpy() > 0.5)
        where_j = np.argwhere(sample["image_j"][0].numpy() > 0.5)
        assert len(where_i) == len(where_j) == 1
        shift = tuple(int(v) for v in where_i[0] - where_j[0])
        assert max(abs(v) for v in shift) <= 3
        shifts.add(shift)
    assert len(shifts) > 5  # the shift really varies between samples


def test_pair_rotation_and_scale_move_the_match_off_the_same_pixel():
    # one bright pixel 10 px from the centre of two identical slices: an independent rotation
    # of slice j of up to 30 degrees moves it (a 1-degree turn already moves it ~0.2 px)
    volume = np.zeros((2, 40, 40), dtype=np.float32)
    volume[:, 20, 30] = 1.0
    data = SlicePairDataset(
        [volume],
        pair_distance=1,
        pair_rotation_deg=30.0,
        augment=PairAugmentConfig(size=40, enabled=False),
    )
    moved = 0
    for index in range(30):
        sample = data[index]
        brightest_i = np.unravel_index(sample["image_i"][0].argmax(), (40, 40))
        brightest_j = np.unravel_index(sample["image_j"][0].argmax(), (40, 40))
        moved += brightest_i != brightest_j
    assert moved >= 25


def test_pair_distance_may_differ_per_scan():
    volumes = [np.zeros((30, 8, 8), np.float16), np.zeros((30, 8, 8), np.float16)]
    data = SlicePairDataset(volumes, pair_distance=[1, 5], augment=CROP_ONLY, seed=0)
    offsets: dict[int, set[int]] = {0: set(), 1: set()}
    for index in range(300):
        sample = data[index]
        offsets[int(sample["scan"])].add(abs(int(sample["slice_j"]) - int(sample["slice_i"])))
    assert offsets[0] == {1} and offsets[1] == {1, 2, 3, 4, 5}
