"""Preprocessing: known answers for normalisation, slice-axis choice, resampling and the exact way back."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from nifti import write_nifti

from salign_cli.data import preprocess
from salign_cli.data.preprocess import (
    CONTENT_MARGIN_PX,
    PreprocessConfig,
    SliceCache,
    choose_slice_axis,
    content_box,
    default_target_spacing,
    median_inplane_spacing,
    normalise_intensity,
    parse_spacing,
    prepare_scan,
    resampled_size,
    restore_labels,
    restore_scores,
)
from salign_cli.errors import InputError
from salign_cli.io.volume import Volume, read_volume


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.stack([(labels == c).astype(np.float32) for c in range(classes)])


def _volume(array: np.ndarray, affine: np.ndarray) -> Volume:
    return Volume(array=array, affine=affine)


LPS_AFFINE = np.diag([-1.0, -2.0, 3.0, 1.0])
OBLIQUE_AFFINE = np.array(
    [[0.0, 0.0, 2.5, 10.0], [-0.866, 0.5, 0.0, -4.0], [0.5, 0.866, 0.0, 7.0], [0, 0, 0, 1]]
)


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        ((0.8, 0.8, 5.0), 2),
        ((3.0, 1.0, 1.0), 0),
        ((1.0, 4.0, 1.0), 1),
        ((1.0, 1.0, 1.0), 2),
        ((1.0, 1.05, 1.0), 2),
    ],
)
def test_slice_axis_is_the_coarsest_axis_or_axial_when_isotropic(spacing, expected):
    assert choose_slice_axis(spacing) == expected


def test_ct_window_clips_then_scales_to_unit_range():
    hu = np.array([-2000.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0])
    out = normalise_intensity(hu, PreprocessConfig(modality="CT"))
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_mr_is_percentile_clipped_then_z_scored():
    values = np.concatenate([np.arange(1000, dtype=np.float32), [1e6]])  # one huge outlier
    out = normalise_intensity(values, PreprocessConfig(modality="MR", mr_percentiles=(0.0, 99.0)))
    # the outlier is clipped to the 99th percentile, so it sits near the top of the bulk
    assert out[-1] == pytest.approx(out.max())
    assert out.mean() == pytest.approx(0.0, abs=1e-5)
    assert out.std() == pytest.approx(1.0, abs=1e-4)
    assert out[-1] < 2.0


def test_constant_volume_normalises_to_zeros_not_nan():
    out = normalise_intensity(np.full((4, 4, 4), 7.0), PreprocessConfig(modality="MR"))
    assert np.array_equal(out, np.zeros((4, 4, 4), dtype=np.float32))


@pytest.mark.parametrize(
    ("size", "spacing", "target", "expected"),
    [(100, 0.5, 1.0, 50), (10, 3.0, 1.0, 30), (7, 1.0, None, 7), (1, 0.1, 5.0, 1)],
)
def test_resampled_size_keeps_the_physical_extent(size, spacing, target, expected):
    assert resampled_size(size, spacing, target) == expected


def test_config_round_trips_and_rejects_nonsense():
    config = PreprocessConfig(
        modality="CT", slice_axis=1, target_spacing_mm=(0.7, 0.8), ct_window=(-200, 300)
    )
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InputError):
        PreprocessConfig(modality="PET")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        PreprocessConfig(slice_axis=3)
    with pytest.raises(InputError):
        PreprocessConfig(target_spacing_mm=(0.0, 1.0))


def test_lps_marker_lands_where_the_canonical_flip_puts_it():
    shape = (5, 6, 7)
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[1, 2, 3] = 500.0  # in LPS voxel order; canonical flips x and y
    prepared = prepare_scan(
        _volume(array, LPS_AFFINE), PreprocessConfig(modality="CT", slice_axis=2)
    )
    assert prepared.slices.shape == (7, 5, 6)
    assert np.unravel_index(prepared.slices.argmax(), prepared.slices.shape) == (
        3,
        5 - 1 - 1,
        6 - 1 - 2,
    )


@pytest.mark.parametrize(
    "affine", [np.eye(4), LPS_AFFINE, OBLIQUE_AFFINE], ids=["ras", "lps", "oblique"]
)
@pytest.mark.parametrize("slice_axis", [0, 1, 2, None])
def test_labels_survive_prepare_and_restore_exactly(affine, slice_axis):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(6, 7, 8))
    volume = _volume(rng.normal(size=(6, 7, 8)).astype(np.float32), affine)
    prepared = prepare_scan(
        volume, PreprocessConfig(slice_axis=slice_axis), _volume(labels, affine)
    )
    restored = restore_labels(_one_hot(prepared.labels, 3), prepared, volume)
    assert np.array_equal(restored, labels)
    scores = restore_scores(_one_hot(prepared.labels, 3), prepared, volume)
    assert scores.shape == (6, 7, 8, 3)
    assert np.array_equal(scores.argmax(-1), labels)


def test_two_fold_upsampling_then_restore_recovers_labels_exactly():
    # nearest x2 up, then bilinear (align_corners=False) x2 down averages two equal neighbours
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=(8, 9, 3))
    affine = np.diag([2.0, 2.0, 6.0, 1.0])
    volume = _volume(rng.normal(size=labels.shape).astype(np.float32), affine)
    prepared = prepare_scan(
        volume, PreprocessConfig(target_spacing_mm=(1.0, 1.0)), _volume(labels, affine)
    )
    assert prepared.slice_axis == 2
    assert prepared.slices.shape == (3, 16, 18)
    assert np.array_equal(restore_labels(_one_hot(prepared.labels, 4), prepared, volume), labels)


@pytest.mark.parametrize("classes", [2, 3])
def test_restored_labels_are_the_argmax_of_the_resampled_scores_in_the_smallest_type(classes):
    # The torch path must equal the definition: bilinear resampling of each class map to the
    # original in-plane size, then the first maximal class (ties included: float16 scores tie).
    rng = np.random.default_rng(2)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    volume = _volume(rng.normal(size=(23, 19, 40)).astype(np.float32), affine)
    prepared = prepare_scan(volume, PreprocessConfig(target_spacing_mm=(1.5, 1.5)))
    depth, height, width = prepared.slices.shape
    scores = rng.random((classes, depth, height, width)).round(1).astype(np.float16)
    resized = preprocess._resize_slices(scores.astype(np.float32), (23, 19), nearest=False)
    expected = np.moveaxis(resized.argmax(axis=0), 0, 2)  # RAS input: only the slice axis moves
    restored = restore_labels(scores, prepared, volume)
    assert restored.dtype == np.uint8
    assert np.array_equal(restored, expected)


@pytest.mark.parametrize("modality", ["CT", "MR"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_in_place_normalisation_equals_the_plain_expression_bit_for_bit(modality, dtype):
    array = (np.random.default_rng(3).normal(200, 600, size=(30, 20, 10))).astype(dtype)
    untouched = array.copy()
    config = PreprocessConfig(modality=modality)
    values = np.asarray(array, dtype=np.float32)
    if modality == "CT":
        low, high = config.ct_window
        expected = ((np.clip(values, low, high) - (low + high) / 2) / ((high - low) / 2)).astype(
            np.float32
        )
    else:
        clipped = np.clip(values, *np.percentile(values, config.mr_percentiles))
        expected = ((clipped - float(clipped.mean())) / float(clipped.std())).astype(np.float32)
    result = preprocess.normalise_intensity(array, config)
    assert result.dtype == np.float32 and np.array_equal(result, expected)
    assert np.array_equal(array, untouched)  # the caller's voxels are never changed


def test_label_geometry_mismatch_and_fractional_labels_are_input_errors(tmp_path: Path):
    volume = _volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(InputError, match="does not match"):
        prepare_scan(
            volume,
            PreprocessConfig(),
            Volume(np.zeros((4, 4, 5)), np.eye(4), path=tmp_path / "l.nii.gz"),
        )
    with pytest.raises(InputError, match="does not match"):
        prepare_scan(
            volume,
            PreprocessConfig(),
            Volume(np.zeros((4, 4, 4)), LPS_AFFINE, path=tmp_path / "l.nii.gz"),
        )
    with pytest.raises(InputError, match="non-integer"):
        prepare_scan(
            volume,
            PreprocessConfig(),
            Volume(np.full((4, 4, 4), 0.5), np.eye(4), path=tmp_path / "l.nii.gz"),
        )


def test_median_inplane_spacing_uses_the_in_plane_axes():
    spacings = [(0.8, 0.8, 5.0), (0.7, 0.7, 5.0), (0.9, 0.9, 3.0)]
    assert median_inplane_spacing(spacings, slice_axis=None) == pytest.approx((0.8, 0.8))
    assert median_inplane_spacing(spacings, slice_axis=0) == pytest.approx((0.8, 5.0))


@pytest.mark.parametrize(
    ("spacings", "modality", "spacing", "expected"),
    [
        # CT at 0.7-0.9 mm: the median 0.8 is raised to the 1.5 mm floor on both axes
        ([(0.8, 0.8, 5.0), (0.7, 0.7, 5.0), (0.9, 0.9, 3.0)], "CT", "auto", (1.5, 1.5)),
        # CT already coarser than the floor keeps its median; one axis below it is raised alone
        ([(2.0, 1.2, 5.0), (2.0, 1.2, 5.0)], "CT", "auto", (2.0, 1.5)),
        # MR: nnU-Net's median, no floor
        ([(0.8, 0.8, 5.0), (0.7, 0.7, 5.0), (0.9, 0.9, 3.0)], "MR", "auto", (0.8, 0.8)),
        ([(0.8, 0.8, 5.0)], "CT", "native", None),
        ([(0.8, 0.8, 5.0)], "CT", 1.0, (1.0, 1.0)),
        ([(0.8, 0.8, 5.0)], "MR", "2.5", (2.5, 2.5)),  # as the CLI passes it
    ],
)
def test_default_target_spacing_is_the_median_with_a_ct_floor(
    spacings, modality, spacing, expected
):
    assert default_target_spacing(spacings, modality, spacing) == expected


@pytest.mark.parametrize("text", ["fine", "0", "-1.5", "nan", "inf", ""])
def test_spacing_option_rejects_anything_but_auto_native_or_a_positive_number(text):
    with pytest.raises(InputError, match="spacing must be auto, native or a positive"):
        parse_spacing(text)


def _save(array: np.ndarray, path: Path) -> Path:
    return write_nifti(path, array, np.diag([1.0, 1.0, 2.0, 1.0]))


def test_slice_cache_builds_once_then_memory_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    image = _save(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), tmp_path / "a.nii.gz")
    label = _save(
        (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3).astype(np.uint8), tmp_path / "a_seg.nii.gz"
    )
    cache = SliceCache(tmp_path / "cache")
    config = PreprocessConfig(modality="MR")
    first = cache.get_or_build(image, config, label_path=label)
    assert first.slices.dtype == np.float16 and isinstance(first.slices, np.memmap)
    assert first.slices.shape == (6, 4, 5) and first.labels.shape == (6, 4, 5)
    assert np.array_equal(first.labels[2], (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3)[:, :, 2])

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("a cached scan must not be decoded again")

    monkeypatch.setattr(preprocess, "read_volume", no_decoding)
    again = cache.get_or_build(image, config, label_path=label)
    assert np.array_equal(np.asarray(again.slices), np.asarray(first.slices))
    monkeypatch.setattr(preprocess, "read_volume", read_volume)

    # another recipe is another entry; a corrupt entry is rebuilt
    assert cache.key("hash-a", config, "l") != cache.key(
        "hash-a", PreprocessConfig(modality="CT"), "l"
    )
    assert cache.key("hash-a", config, "l") != cache.key("hash-a", config, "other-label")
    entry = next((tmp_path / "cache").glob("*[0-9a-f].npy"))
    entry.write_bytes(entry.read_bytes()[:40])
    rebuilt = cache.get_or_build(image, config, label_path=label)
    assert rebuilt.slices.shape == (6, 4, 5)
    assert not list((tmp_path / "cache").glob(".*partial*"))

    # an edited label with an unchanged image must not be served from the old entry
    _save(np.full((4, 5, 6), 2, dtype=np.uint8), label)
    relabelled = cache.get_or_build(image, config, label_path=label)
    assert np.all(np.asarray(relabelled.labels) == 2)


def test_a_label_edited_in_the_middle_with_size_and_mtime_kept_is_not_served_stale(
    tmp_path: Path,
):
    # an uncompressed label over 2 MiB: the index's fast hash reads only its first and last MiB
    shape = (150, 150, 120)  # 2.7 MB of uint8
    labels = np.zeros(shape, np.uint8)
    labels[70:80, 70:80, 60] = 1
    image = _save(
        np.random.default_rng(0).normal(size=shape).astype(np.float32), tmp_path / "a.nii"
    )
    label = _save(labels, tmp_path / "a_seg.nii")
    cache = SliceCache(tmp_path / "cache")
    config = PreprocessConfig(modality="MR", slice_axis=2)
    first = cache.get_or_build(image, config, label_path=label)
    assert int(np.asarray(first.labels[60]).max()) == 1

    from salign_cli.io.hashing import content_hash

    before = label.stat()
    fast_hash = content_hash(label)
    # class 1 → 2 in the middle slice, edited in place (NIfTI-1: voxels from byte 352, x fastest)
    data = bytearray(label.read_bytes())
    for y in range(70, 80):
        start = 352 + 70 + 150 * y + 150 * 150 * 60
        data[start : start + 10] = bytes([2] * 10)
    label.write_bytes(bytes(data))
    os.utime(label, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert label.stat().st_size == before.st_size and content_hash(label) == fast_hash
    again = cache.get_or_build(image, config, label_path=label)
    assert int(np.asarray(again.labels[60]).max()) == 2


def test_real_anisotropic_ct_is_sliced_across_the_5mm_axis(fixtures_dir: Path):
    volume = read_volume(fixtures_dir / "spleen2_ct.nii.gz")
    labels = read_volume(fixtures_dir / "spleen2_ct_seg.nii.gz")
    prepared = prepare_scan(
        volume, PreprocessConfig(modality="CT", target_spacing_mm=(1.5, 1.5)), labels
    )
    assert prepared.slice_axis == 2
    assert prepared.slices.shape == (26, round(164 * 0.794922 / 1.5), round(166 * 0.794922 / 1.5))
    assert prepared.slices.min() >= -1.0 and prepared.slices.max() <= 1.0
    restored = restore_labels(_one_hot(prepared.labels, 2), prepared, volume)
    assert restored.shape == volume.shape
    # down- then up-sampling blurs borders a little; the spleen must still overlap almost fully
    reference = labels.array > 0
    dice = 2 * (reference & (restored > 0)).sum() / (reference.sum() + (restored > 0).sum())
    assert dice > 0.95


def _ct_slices(shape: tuple[int, int, int], body: tuple[slice, slice], depth_index: int = 0):
    """Normalised CT slices of air (-1000 HU -> -1) with soft tissue (40 HU) in ``body`` of one
    slice."""
    slices = np.full(shape, -1.0, dtype=np.float32)
    slices[depth_index, body[0], body[1]] = 0.04
    return slices


def test_the_content_box_holds_the_body_with_its_margin_and_the_network_multiple():
    ct = PreprocessConfig(modality="CT")
    margin = CONTENT_MARGIN_PX
    # body rows 40..59, columns 50..69 of one of three slices: + margin, then widened to 16
    slices = _ct_slices((3, 128, 160), (slice(40, 60), slice(50, 70)), depth_index=2)
    rows, columns = content_box(slices, ct, multiple=16)  # type: ignore[misc]
    assert (rows.start, rows.stop) == (40 - margin, 60 + margin + 12)  # 52 -> 64: after
    assert (columns.start, columns.stop) == (50 - margin, 70 + margin + 12)
    # near the far edge the widening goes before the box: rows 100..119 + 16 -> 84..128 (44),
    # to 48 the last row is the slice's and the other 4 go before it
    slices = _ct_slices((1, 128, 160), (slice(100, 120), slice(0, 160)))
    rows, columns = content_box(slices, ct, multiple=16)  # type: ignore[misc]
    assert (rows.start, rows.stop) == (80, 128)
    assert (columns.start, columns.stop) == (0, 160)


@pytest.mark.parametrize(
    ("config", "slices"),
    [
        # MR has no absolute background level
        (PreprocessConfig(modality="MR"), _ct_slices((1, 64, 64), (slice(30, 34), slice(30, 34)))),
        # all air: nothing to bound
        (PreprocessConfig(modality="CT"), np.full((2, 64, 64), -1.0, dtype=np.float32)),
        # the body reaches every edge
        (PreprocessConfig(modality="CT"), _ct_slices((1, 64, 64), (slice(10, 64), slice(0, 54)))),
        # a window that clips air and body to one value cannot tell them apart
        (
            PreprocessConfig(modality="CT", ct_window=(-400.0, 400.0)),
            _ct_slices((1, 64, 64), (slice(30, 34), slice(30, 34))),
        ),
    ],
)
def test_no_content_box_where_it_would_be_the_whole_slice_or_cannot_be_told(config, slices):
    assert content_box(slices, config, multiple=16) is None
