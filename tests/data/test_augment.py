"""Batched augmentation: known answers for crops, flips, rotation, scale and every intensity op.

Every expected value is built from first principles (slicing, torch.flip/rot90, closed-form
Gaussians and gamma curves in numpy), never from the module's own output.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from salign_cli.data.augment import (
    IDENTITY_PARAMS,
    AugmentConfig,
    apply_intensity,
    apply_spatial,
    augment_batch,
    bias_log_fields,
    draw_augment_params,
    identity_params,
    spatial_grid,
)
from salign_cli.data.preprocess import OUTSIDE_SCAN, mirror_axes
from salign_cli.errors import InputError

# float32 grid coordinates are exact to ~1e-6 px, so a "crop" is exact to that relative level.
CLOSE = {"rtol": 1e-6, "atol": 1e-4}
# Every intensity op off: isolates the geometry.
SPATIAL_ONLY = AugmentConfig(
    noise_p=0.0,
    blur_p=0.0,
    brightness_p=0.0,
    contrast_p=0.0,
    lowres_p=0.0,
    gamma_p=0.0,
    gamma_inverted_p=0.0,
)


def params_with(batch: int, **values: float) -> dict[str, torch.Tensor]:
    """Identity params for ``batch`` samples with the named keys set to one value for all."""
    params = identity_params(batch)
    for key, value in values.items():
        params[key] = torch.full_like(params[key], value)
    return params


def coded_canvas(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Pixel (b, c, y, x) = 10000·b + 1000·c + 10·y + x / 10: every value names its position."""
    b, c, y, x = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float32) for n in (batch, channels, height, width)),
        indexing="ij",
    )
    return 10000 * b + 1000 * c + 10 * y + x / 10


def within(values: torch.Tensor, low: float, high: float) -> bool:
    return bool(((values >= low) & (values <= high)).all())


def identity_draws(batch: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    return default_collate([draw_augment_params(rng, AugmentConfig(enabled=False))] * batch)


# ------------------------------------------------------------------------------------ spatial


def test_identity_params_give_the_exact_centre_crop() -> None:
    images = coded_canvas(2, 3, 12, 14)
    labels = torch.randint(0, 4, (2, 12, 14), generator=torch.Generator().manual_seed(0))
    valid = torch.zeros(2, 1, 12, 14, dtype=torch.uint8)
    valid[:, :, 1:9, 3:14] = 1  # the scan: rows 1..8, columns 3..13; the rest is canvas padding
    images = torch.where(valid.bool(), images, OUTSIDE_SCAN)

    out_images, out_labels, out_valid = augment_batch(
        images, labels, valid, identity_draws(2), (8, 10)
    )

    crop = (slice(None), slice(None), slice(2, 10), slice(2, 12))  # (12-8)/2 = 2, (14-10)/2 = 2
    expected_valid = valid[crop].bool()
    assert out_images.dtype == torch.float32 and out_images.shape == (2, 3, 8, 10)
    assert out_labels is not None and out_labels.dtype == torch.int64
    assert out_valid.dtype == torch.bool and out_valid.shape == (2, 1, 8, 10)
    assert torch.equal(out_valid, expected_valid)
    torch.testing.assert_close(out_images, images[crop], **CLOSE)
    assert torch.equal(out_labels, torch.where(expected_valid[:, 0], labels[:, 2:10, 2:12], 0))
    assert torch.all(out_images.masked_select(~out_valid) == OUTSIDE_SCAN)


def test_output_larger_than_canvas_pads_with_outside_scan() -> None:
    images = torch.full((1, 1, 4, 6), 5.0)
    out_images, out_labels, out_valid = augment_batch(
        images,
        torch.ones(1, 4, 6, dtype=torch.int64),
        torch.ones(1, 1, 4, 6),
        identity_params(1),
        (8, 8),
    )
    expected_valid = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    expected_valid[:, :, 2:6, 1:7] = True  # centred: (8-4)/2 = 2 rows, (8-6)/2 = 1 column
    assert torch.equal(out_valid, expected_valid)
    assert torch.equal(out_images, torch.where(expected_valid, 5.0, OUTSIDE_SCAN))
    assert out_labels is not None and torch.equal(out_labels, expected_valid[:, 0].long())


@pytest.mark.parametrize(("key", "dim"), [("flip_rows", -2), ("flip_cols", -1)])
def test_flip_equals_torch_flip_of_the_centre_crop(key: str, dim: int) -> None:
    images = coded_canvas(2, 2, 10, 12)
    labels = torch.arange(120).view(1, 10, 12).repeat(2, 1, 1)
    out_images, out_labels, _ = augment_batch(
        images, labels, torch.ones(2, 1, 10, 12), params_with(2, **{key: 1.0}), (6, 8)
    )
    torch.testing.assert_close(
        out_images, torch.flip(images[:, :, 2:8, 2:10], dims=(dim,)), **CLOSE
    )
    assert torch.equal(out_labels, torch.flip(labels[:, 2:8, 2:10], dims=(dim,)))


@pytest.mark.parametrize(("angle", "k"), [(math.pi / 2, -1), (-math.pi / 2, 1), (math.pi, 2)])
def test_quarter_turns_equal_rot90(angle: float, k: int) -> None:
    # Convention: output offset (r, c) reads source (cos·r − sin·c, sin·r + cos·c); at +90° that
    # is source (−c, r), i.e. torch.rot90 with k = −1 (clockwise as displayed, rows downwards).
    images = coded_canvas(1, 2, 9, 9)
    labels = torch.arange(81).view(1, 9, 9)
    out_images, out_labels, out_valid = augment_batch(
        images, labels, torch.ones(1, 1, 9, 9), params_with(1, angle=angle), (9, 9)
    )
    assert bool(out_valid.all())
    torch.testing.assert_close(out_images, torch.rot90(images, k, dims=(-2, -1)), **CLOSE)
    assert torch.equal(out_labels, torch.rot90(labels, k, dims=(-2, -1)))


@pytest.mark.parametrize(("scale", "slope"), [(2.0, 0.5), (0.5, 2.0)])
def test_scale_divides_the_slope_of_a_ramp(scale: float, slope: float) -> None:
    # Output offset p reads source p / scale: scale 2 zooms in (structures twice as large), so a
    # ramp of slope 1 per pixel becomes slope 1/2; scale 0.5 zooms out and doubles it.
    ramp = torch.arange(33, dtype=torch.float32).view(1, 1, 1, 33).expand(1, 1, 33, 33)
    out, _, valid = augment_batch(
        ramp, None, torch.ones(1, 1, 33, 33), params_with(1, scale=scale), (15, 15)
    )
    assert bool(valid.all())
    torch.testing.assert_close(out.diff(dim=-1), torch.full((1, 1, 15, 14), slope), **CLOSE)
    torch.testing.assert_close(out.diff(dim=-2), torch.zeros(1, 1, 14, 15), **CLOSE)
    assert out[0, 0, 7, 7].item() == pytest.approx(16.0, abs=1e-4)  # centres coincide


def test_image_and_label_stay_aligned_under_random_spatial_params() -> None:
    # Large constant blocks; the image is the label as a float. Wherever bilinear sampling lands
    # inside one block (the image is a whole number), nearest sampling must read the same block.
    blocks = torch.tensor([[0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1], [1, 2, 3, 0]])
    labels = blocks.repeat_interleave(10, 0).repeat_interleave(12, 1)[None].repeat(16, 1, 1)
    valid = torch.ones(16, 1, 40, 48)
    valid[:, :, :4] = 0  # a padding strip: never sampled into the scan
    config = AugmentConfig(
        rotation_p=1.0,
        scale_p=1.0,
        elastic_p=1.0,
        noise_p=0.0,
        blur_p=0.0,
        brightness_p=0.0,
        contrast_p=0.0,
        lowres_p=0.0,
        gamma_p=0.0,
        gamma_inverted_p=0.0,
    )
    params = default_collate(
        [draw_augment_params(np.random.default_rng([7, i]), config) for i in range(16)]
    )
    out_images, out_labels, out_valid = augment_batch(
        labels[:, None].float(), labels, valid, params, (32, 32)
    )
    inside_block = out_valid[:, 0] & ((out_images[:, 0] - out_images[:, 0].round()).abs() < 1e-4)
    assert inside_block.float().mean() > 0.5  # the check below covers most pixels
    assert torch.equal(out_labels[inside_block], out_images[:, 0][inside_block].round().long())
    assert set(out_labels.unique().tolist()) <= {0, 1, 2, 3}


def test_elastic_field_is_seeded_and_bounded_by_alpha() -> None:
    base = params_with(3, noise_seed=0)
    base["noise_seed"] = torch.tensor([11, 11, 12])
    bent = dict(base, elastic_alpha=torch.full((3,), 5.0), elastic_sigma=torch.full((3,), 4.0))
    straight = spatial_grid(base, (40, 40), (24, 32))
    grid = spatial_grid(bent, (40, 40), (24, 32))
    displacement = (grid - straight) * (40 - 1) / 2  # back to pixels (align_corners=True)
    magnitude = displacement.norm(dim=-1).amax(dim=(1, 2))
    torch.testing.assert_close(magnitude, torch.full((3,), 5.0), rtol=1e-4, atol=1e-4)
    assert torch.equal(grid[0], grid[1])  # same seed, same field
    assert not torch.allclose(grid[0], grid[2])


def test_apply_spatial_without_labels_and_with_bool_valid() -> None:
    images, labels, valid = apply_spatial(
        torch.ones(2, 1, 6, 6),
        None,
        torch.ones(2, 1, 6, 6, dtype=torch.bool),
        identity_params(2),
        (4, 4),
    )
    assert labels is None and bool(valid.all()) and torch.equal(images, torch.ones(2, 1, 4, 4))


# ------------------------------------------------------------------------------- intensity


def test_invalid_pixels_are_outside_scan_and_labels_stay_integer_after_every_op() -> None:
    images = torch.rand(4, 2, 20, 24, generator=torch.Generator().manual_seed(1)) * 3 - 1
    labels = torch.randint(0, 3, (4, 20, 24), generator=torch.Generator().manual_seed(2)) * 2
    valid = torch.ones(4, 1, 20, 24, dtype=torch.uint8)
    valid[:, :, :, :5] = 0
    params = params_with(
        4,
        angle=0.4,
        scale=1.2,
        elastic_alpha=3.0,
        elastic_sigma=4.0,
        noise_std=0.5,
        blur_sigma=1.0,
        brightness=2.0,
        contrast=1.3,
        lowres_zoom=0.5,
        gamma=2.0,
        gamma_invert=1.0,
    )
    out_images, out_labels, out_valid = augment_batch(images, labels, valid, params, (16, 16))
    assert out_labels is not None and out_labels.dtype == torch.int64
    assert set(out_labels.unique().tolist()) <= {0, 2, 4}
    assert bool((out_labels.masked_select(~out_valid[:, 0]) == 0).all())
    assert bool((out_images.masked_select(~out_valid) == OUTSIDE_SCAN).all())
    assert bool(out_images.isfinite().all()) and bool((~out_valid).any())


def test_brightness_multiplies_a_constant_region() -> None:
    valid = torch.zeros(2, 1, 8, 8)
    valid[:, :, 2:6, 1:7] = 1
    images = torch.where(valid.bool(), 2.0, OUTSIDE_SCAN).expand(2, 3, 8, 8)
    out = apply_intensity(images, valid, params_with(2, brightness=1.5))
    assert torch.equal(out, torch.where(valid.bool(), 3.0, OUTSIDE_SCAN).expand(2, 3, 8, 8))


def test_contrast_stays_in_the_old_range_and_keeps_the_mean_when_not_clipped() -> None:
    images = torch.randn(3, 2, 10, 10, generator=torch.Generator().manual_seed(3))
    valid = torch.ones(3, 1, 10, 10)
    valid[:, :, 0] = 0
    images = torch.where(valid.bool(), images, OUTSIDE_SCAN)
    inside = valid.bool().expand_as(images)
    old = images[inside]

    stretched = apply_intensity(images, valid, params_with(3, contrast=1.5))[inside]
    assert old.min() <= stretched.min() and stretched.max() <= old.max()
    assert stretched.max() == old.max()  # the largest value was pushed out and clipped back

    squeezed = apply_intensity(images, valid, params_with(3, contrast=0.5))
    for b in range(3):
        values, original = squeezed[b][inside[b]], images[b][inside[b]]
        assert values.mean().item() == pytest.approx(original.mean().item(), abs=1e-5)
        assert values.std().item() == pytest.approx(0.5 * original.std().item(), rel=1e-5)


@pytest.mark.parametrize("invert", [0.0, 1.0])
def test_gamma_one_is_the_identity(invert: float) -> None:
    images = torch.randn(2, 1, 7, 9, generator=torch.Generator().manual_seed(4))
    out = apply_intensity(
        images, torch.ones(2, 1, 7, 9), params_with(2, gamma=1.0, gamma_invert=invert)
    )
    assert torch.equal(out, images)


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_two_on_a_ramp_follows_the_curve_and_restores_mean_and_std(invert: bool) -> None:
    ramp = np.linspace(0.0, 1.0, 64)
    image = torch.tensor(ramp, dtype=torch.float32).view(1, 1, 8, 8)
    out = (
        apply_intensity(
            image, torch.ones(1, 1, 8, 8), params_with(1, gamma=2.0, gamma_invert=float(invert))
        )
        .double()
        .flatten()
        .numpy()
    )

    x = -ramp if invert else ramp
    curved = ((x - x.min()) / (x.max() - x.min())) ** 2  # min + range·unit², min 0 and range 1
    expected = (curved - curved.mean()) / curved.std() * x.std() + x.mean()
    expected = -expected if invert else expected
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.mean() == pytest.approx(ramp.mean(), abs=1e-5)
    assert out.std() == pytest.approx(ramp.std(), abs=1e-5)


def test_bias_strength_zero_is_the_identity_and_a_constant_slice_stays_constant() -> None:
    images = torch.randn(2, 2, 9, 11, generator=torch.Generator().manual_seed(7))
    valid = torch.ones(2, 1, 9, 11)
    assert torch.equal(apply_intensity(images, valid, params_with(2, bias_strength=0.0)), images)
    constant = torch.full((1, 1, 9, 11), 3.5)
    out = apply_intensity(constant, valid[:1], params_with(1, bias_strength=0.5))
    torch.testing.assert_close(out, constant)  # nothing above the minimum to shade


def test_bias_log_fields_peak_at_the_strength_are_seeded_and_smooth() -> None:
    fields = bias_log_fields([5, 5, 6, 6], [0.5, 0.5, 0.3, 0.0], (40, 60))
    assert fields.shape == (4, 1, 40, 60)
    assert torch.equal(fields[0], fields[1])  # a pure function of the seed
    assert fields[0].abs().max().item() == pytest.approx(0.5, rel=1e-6)
    assert fields[2].abs().max().item() == pytest.approx(0.3, rel=1e-6)
    assert not torch.allclose(fields[0] / 0.5, fields[2] / 0.3)  # another seed, another field
    assert torch.equal(fields[3], torch.zeros(1, 40, 60))
    # smooth over the 4×4 lattice's spacing h (13 rows, 20 columns here): neighbouring pixels
    # differ by less than 3·peak/h (white noise would differ by up to twice the peak)
    assert fields[0].diff(dim=-2).abs().max().item() < 3 * 0.5 / (39 / 3)
    assert fields[0].diff(dim=-1).abs().max().item() < 3 * 0.5 / (59 / 3)


def test_bias_shades_each_pixel_by_its_field_and_restores_mean_and_std() -> None:
    """Known answer from first principles: y = min + (x − min)·exp(field), then y's mean and
    std are mapped back to x's (over the valid pixels only)."""
    x = torch.linspace(1.0, 2.0, 8 * 10).view(1, 1, 8, 10)
    valid = torch.ones(1, 1, 8, 10)
    valid[..., :, :2] = 0  # the first two columns are padding
    params = params_with(1, bias_strength=0.4)
    params["noise_seed"] = torch.tensor([11])
    out = apply_intensity(x, valid, params).double()

    field = bias_log_fields([11], [0.4], (8, 10)).double().exp()[0, 0]
    inside = valid[0, 0].bool()
    xs = x[0, 0].double()
    low = xs[inside].min()
    y = low + (xs - low) * field
    expected = (y - y[inside].mean()) / y[inside].std(unbiased=False) * xs[inside].std(
        unbiased=False
    ) + xs[inside].mean()
    torch.testing.assert_close(out[0, 0][inside], expected[inside], atol=1e-5, rtol=0)
    assert bool((out[0, 0][~inside] == OUTSIDE_SCAN).all())
    # the field really moved pixels relative to each other: not an affine map of x
    ratio = (out[0, 0][inside] - out[0, 0][inside].min()) / (xs[inside] - low).clamp_min(1e-6)
    assert ratio[1:].std().item() > 0.05


def test_the_bias_draw_comes_last_so_older_configs_draw_the_same() -> None:
    plain = draw_augment_params(np.random.default_rng([4, 2]), AugmentConfig())
    shaded = draw_augment_params(np.random.default_rng([4, 2]), AugmentConfig(bias_p=1.0))
    assert all(torch.equal(plain[k], shaded[k]) for k in plain if k != "bias_strength")
    assert plain["bias_strength"].item() == 0.0
    assert 0.2 <= shaded["bias_strength"].item() <= 0.6


def test_noise_is_a_pure_function_of_std_and_seed() -> None:
    images = torch.zeros(2, 1, 64, 64)
    valid = torch.ones(2, 1, 64, 64)
    assert torch.equal(apply_intensity(images, valid, params_with(2, noise_std=0.0)), images)
    noisy = params_with(2, noise_std=1.0)
    noisy["noise_seed"] = torch.tensor([5, 6])
    first = apply_intensity(images, valid, noisy)
    assert torch.equal(first, apply_intensity(images, valid, noisy))
    assert not torch.equal(first[0], first[1])
    assert first.std().item() == pytest.approx(1.0, abs=0.05)
    assert first.mean().item() == pytest.approx(0.0, abs=0.05)


def test_blur_zero_is_identity_constant_stays_constant_and_impulse_is_a_gaussian() -> None:
    images = torch.randn(2, 2, 9, 11, generator=torch.Generator().manual_seed(5))
    valid = torch.ones(2, 1, 9, 11)
    assert torch.equal(apply_intensity(images, valid, params_with(2, blur_sigma=0.0)), images)

    partial = valid.clone()
    partial[:, :, :, :3] = 0  # padding must not darken the scan's edge
    constant = torch.where(partial.bool(), 4.0, OUTSIDE_SCAN).expand(2, 2, 9, 11)
    blurred = apply_intensity(constant, partial, params_with(2, blur_sigma=1.0))
    torch.testing.assert_close(blurred, constant, rtol=0, atol=1e-5)

    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    sigma = 0.8
    out = apply_intensity(impulse, torch.ones(1, 1, 15, 15), params_with(1, blur_sigma=sigma))
    taps = np.arange(-7, 8)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    # The implementation may truncate its kernel at 3σ: that drops ~1e-5 of the mass.
    np.testing.assert_allclose(out[0, 0].double().numpy(), np.outer(kernel, kernel), atol=1e-5)


def test_lowres_zoom_one_is_identity_and_keeps_constants() -> None:
    images = torch.randn(2, 1, 8, 10, generator=torch.Generator().manual_seed(6))
    valid = torch.ones(2, 1, 8, 10)
    assert torch.equal(apply_intensity(images, valid, params_with(2, lowres_zoom=1.0)), images)
    partial = valid.clone()
    partial[:, :, :2] = 0
    constant = torch.where(partial.bool(), -1.5, OUTSIDE_SCAN).expand(2, 1, 8, 10)
    out = apply_intensity(constant, partial, params_with(2, lowres_zoom=0.6))
    torch.testing.assert_close(out, constant, rtol=0, atol=1e-6)


def test_lowres_half_of_a_checkerboard_keeps_one_phase() -> None:
    # Nearest down-sampling 8 → 4 keeps pixels 0, 2, 4, 6 along each axis: all of colour (0, 0).
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = ((rows + cols) % 2).float().view(1, 1, 8, 8) * 2.0 + 1.0  # 1 on even, 3 on odd
    out = apply_intensity(board, torch.ones(1, 1, 8, 8), params_with(1, lowres_zoom=0.5))
    torch.testing.assert_close(out, torch.ones(1, 1, 8, 8), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------- parameters


def test_draws_are_a_pure_function_of_the_generator() -> None:
    first = draw_augment_params(np.random.default_rng([3, 9]), AugmentConfig(elastic_p=0.5))
    second = draw_augment_params(np.random.default_rng([3, 9]), AugmentConfig(elastic_p=0.5))
    assert first.keys() == second.keys() == IDENTITY_PARAMS.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert all(value.ndim == 0 for value in first.values())
    assert first["noise_seed"].dtype == torch.int64
    assert all(v.dtype == torch.float32 for k, v in first.items() if k != "noise_seed")


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig(enabled=False, rotation_p=1.0, scale_p=1.0, gamma_p=1.0),
        AugmentConfig(
            mirror_axes=(),
            rotation_p=0,
            scale_p=0,
            noise_p=0,
            blur_p=0,
            brightness_p=0,
            contrast_p=0,
            lowres_p=0,
            gamma_p=0,
            gamma_inverted_p=0,
        ),
    ],
    ids=["disabled", "all-probabilities-zero"],
)
def test_ops_not_drawn_hold_identity_values(config: AugmentConfig) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        params = draw_augment_params(rng, config)
        for key, identity in IDENTITY_PARAMS.items():
            if key != "noise_seed" or not config.enabled:
                assert params[key].item() == identity, key


def test_mirror_axes_choose_which_axes_may_flip() -> None:
    rng = np.random.default_rng(1)
    never = [draw_augment_params(rng, AugmentConfig(mirror_axes=())) for _ in range(200)]
    assert all(p["flip_rows"].item() == 0 and p["flip_cols"].item() == 0 for p in never)
    rows_only = [draw_augment_params(rng, AugmentConfig(mirror_axes=(0,))) for _ in range(200)]
    assert {p["flip_rows"].item() for p in rows_only} == {0.0, 1.0}
    assert {p["flip_cols"].item() for p in rows_only} == {0.0}


def test_certain_ops_draw_values_inside_their_ranges() -> None:
    config = AugmentConfig(
        rotation_p=1,
        max_rotation_deg=30,
        scale_p=1,
        elastic_p=1,
        noise_p=1,
        blur_p=1,
        brightness_p=1,
        contrast_p=1,
        lowres_p=1,
        gamma_p=1,
        gamma_inverted_p=0,
    )
    draws = default_collate(
        [draw_augment_params(np.random.default_rng([2, i]), config) for i in range(100)]
    )
    assert draws["angle"].abs().max() <= math.radians(30) + 1e-6
    assert bool((draws["angle"] != 0).all())
    assert within(draws["scale"], 0.7, 1.4)
    assert bool((draws["elastic_alpha"] == 8.0).all() and (draws["elastic_sigma"] == 6.0).all())
    assert within(draws["noise_std"], 0.0, math.sqrt(0.1) + 1e-6)
    assert within(draws["blur_sigma"], 0.5, 1.0)
    assert within(draws["lowres_zoom"], 0.5, 1.0)
    assert within(draws["gamma"], 0.7, 1.5)
    assert bool((draws["gamma_invert"] == 0).all())
    assert draws["flip_rows"].shape == (100,)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rotation_p": 1.5}, "rotation_p"),
        ({"gamma_inverted_p": -0.1}, "gamma_inverted_p"),
        ({"scale_range": (0.0, 1.0)}, "scale_range"),
        ({"contrast_range": (1.2, 0.8)}, "contrast_range"),
        ({"noise_variance": (-0.1, 0.1)}, "noise_variance"),
        ({"bias_strength": (-0.1, 0.5)}, "bias_strength"),
        ({"bias_p": 2.0}, "bias_p"),
        ({"mirror_axes": (2,)}, "mirror_axes"),
        ({"mirror_axes": (0, 0)}, "mirror_axes"),
        ({"lowres_zoom": (0.5, 2.0)}, "lowres_zoom"),
        ({"max_rotation_deg": -5.0}, "max_rotation_deg"),
        ({"elastic_sigma_px": 0.0}, "elastic_sigma_px"),
    ],
)
def test_config_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        AugmentConfig(**changes)  # type: ignore[arg-type]


def test_config_round_trips_through_json() -> None:
    config = AugmentConfig(mirror_axes=(1,), elastic_p=0.3, gamma_range=(0.8, 1.2))
    restored = AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.mirror_axes, tuple) and isinstance(restored.gamma_range, tuple)
    assert AugmentConfig.from_dict({}) == AugmentConfig()
    with pytest.raises(InputError, match="flip_probability"):
        AugmentConfig.from_dict({"flip_probability": 0.5})


def test_mirror_axes_refuses_values_it_does_not_know() -> None:
    # Issue 24: any unknown string (a typo, an unresolved "auto") meant "no mirroring" silently
    assert mirror_axes("none", 2) == ()
    for wrong in ("auto", "LR", ""):
        with pytest.raises(ValueError, match="mirror must be"):
            mirror_axes(wrong, 2)
