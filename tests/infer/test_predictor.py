"""The predictor: devices, exact batch-norm folding, and labels on the input's exact grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from salign_cli.bundles.store import build_model, load_bundle
from salign_cli.data.preprocess import OUTSIDE_SCAN, PreprocessConfig, with_context
from salign_cli.device import resolve_device
from salign_cli.errors import InputError
from salign_cli.infer.predictor import (
    SMALL_BATCH_PIXELS,
    Predictor,
    cpu_threads_for,
    fold_batch_norm,
    tta_flips,
)
from salign_cli.io.volume import Volume, read_volume, to_canonical
from salign_cli.model.unet import UNet2D, UNetConfig


class SignNet(nn.Module):
    """Class 1 where the normalised intensity is positive: a model whose answer is known."""

    def __init__(self) -> None:
        super().__init__()
        self.config = UNetConfig(num_classes=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1) * 50.0


def mr_positive(array: np.ndarray) -> np.ndarray:
    """Where the MR z-score of the 0.5-99.5 percentile clip is positive (computed directly)."""
    low, high = np.percentile(array.astype(np.float64), (0.5, 99.5))
    clipped = np.clip(array.astype(np.float64), low, high)
    return clipped > clipped.mean()


def test_device_cpu_and_clear_errors_for_missing_accelerators():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no such CUDA GPU"):
            resolve_device("cuda:1")
    with pytest.raises(InputError, match="expected auto, cpu"):
        resolve_device("tpu")


def test_folding_batch_norm_keeps_the_output():
    torch.manual_seed(0)
    model = UNet2D(UNetConfig(width=4, depth=2)).eval()
    for module in model.modules():  # non-trivial statistics, as after training
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 1, 19, 23)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)


def test_ct_labels_are_exact_on_the_input_grid(fixtures_dir: Path):
    volume = read_volume(fixtures_dir / "totalseg_example_ct_sm.nii.gz")
    predictor = Predictor(SignNet(), PreprocessConfig(modality="CT"), batch_size=7)
    labels = predictor.predict(volume).labels
    # CT window (-1000, 1000) is centred on 0 HU: positive after normalisation iff HU > 0.
    np.testing.assert_array_equal(labels, volume.array > 0)
    assert labels.dtype == np.uint8


def test_lps_mr_labels_are_exact_on_the_input_grid(fixtures_dir: Path):
    volume = read_volume(fixtures_dir / "totalseg_example_mr_sm.nii.gz")
    assert volume.orientation == "LPS"
    for slice_axis in (0, 1, 2):  # whichever axis the slices are cut along
        predictor = Predictor(SignNet(), PreprocessConfig(modality="MR", slice_axis=slice_axis))
        labels = predictor.predict(volume).labels
        np.testing.assert_array_equal(labels, mr_positive(volume.array))


def test_resampled_prediction_has_the_input_shape(fixtures_dir: Path):
    volume = read_volume(fixtures_dir / "spleen2_ct.nii.gz")  # 0.79 x 0.79 x 5 mm
    config = PreprocessConfig(modality="CT", target_spacing_mm=(1.6, 1.6))
    prediction = Predictor(SignNet(), config).predict(volume, with_probabilities=True)
    assert prediction.labels.shape == volume.shape
    assert prediction.probabilities is not None
    assert prediction.probabilities.shape == (*volume.shape, 2)
    assert prediction.probabilities.dtype == np.float16
    np.testing.assert_allclose(prediction.probabilities.astype(np.float32).sum(-1), 1.0, atol=2e-3)
    # Resampling blurs only edges: far from 0 HU the class is unambiguous.
    clear = np.abs(volume.array) > 300
    agreement = (prediction.labels[clear] == (volume.array[clear] > 0)).mean()
    assert agreement > 0.97


@pytest.mark.parametrize(
    ("target_spacing_mm", "expected_mm"), [((1.5, 1.5), (3.0, 3.0)), (None, "twice native")]
)
def test_a_spacing_factor_of_two_halves_the_grid_and_keeps_the_input_grid(
    fixtures_dir: Path, target_spacing_mm, expected_mm
):
    volume = read_volume(fixtures_dir / "spleen2_ct.nii.gz")  # 164 x 166 x 26, ~0.79 mm, RAS
    inplane_mm = volume.spacing_mm[:2]
    config = PreprocessConfig(modality="CT", target_spacing_mm=target_spacing_mm)
    fast = Predictor(SignNet(), config, spacing_factor=2.0)
    prepared = fast.prepare(volume)
    coarse_mm = (3.0, 3.0) if expected_mm != "twice native" else tuple(2 * s for s in inplane_mm)
    assert prepared.resampled_shape == ((43, 44) if expected_mm != "twice native" else (82, 83))
    # the same physical extent on a grid coarse_mm apart: 164 * 0.79 / 3 = 43 (or 82) pixels
    assert prepared.resampled_shape == tuple(
        round(volume.shape[axis] * inplane_mm[axis] / coarse_mm[axis]) for axis in (0, 1)
    )
    labels = fast.predict(volume, prepared=prepared).labels
    assert labels.shape == volume.shape
    clear = np.abs(volume.array) > 300  # far from 0 HU the class survives the coarse grid
    assert (labels[clear] == (volume.array[clear] > 0)).mean() > 0.95


def test_flip_tta_of_a_flip_equivariant_model_changes_nothing(fixtures_dir: Path):
    volume = read_volume(fixtures_dir / "totalseg_example_ct_sm.nii.gz")
    config = PreprocessConfig(modality="CT")
    plain = Predictor(SignNet(), config).predict(volume).labels
    averaged = Predictor(SignNet(), config, tta=True).predict(volume).labels
    np.testing.assert_array_equal(averaged, plain)


@pytest.mark.parametrize("slice_axis", [None, 0, 2])
def test_a_2d_image_gives_a_one_slice_mask(slice_axis):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 30)).astype(np.float32)
    affine = np.diag([-0.5, 0.7, 3.0, 1.0])  # L-flipped, so the canonical grid differs
    volume = Volume(image.reshape(20, 30, 1), affine, stored_shape=(20, 30))
    config = PreprocessConfig(modality="MR", slice_axis=slice_axis)
    labels = Predictor(SignNet(), config).predict(volume).labels
    assert labels.shape == (20, 30, 1)
    np.testing.assert_array_equal(labels[..., 0], mr_positive(image))


def test_segmenting_a_canonical_copy_equals_canonicalising_the_mask(
    fixtures_dir: Path, make_bundle, tmp_path: Path
):
    """Orientation round trip with a real (randomly initialised) U-Net from a bundle."""
    path = fixtures_dir / "totalseg_example_mr_sm.nii.gz"
    volume = read_volume(path)
    canonical = to_canonical(volume)
    copy_path = tmp_path / "canonical.nii.gz"
    nib.save(nib.Nifti1Image(canonical.array, canonical.affine), copy_path)
    bundle = load_bundle(make_bundle(modality="MR", target_spacing_mm=(2.0, 2.5)))
    predictor = Predictor(build_model(bundle).eval(), bundle.contract.preprocessing)
    original_mask = predictor.predict(volume).labels
    copy_mask = predictor.predict(read_volume(copy_path)).labels
    assert len(np.unique(original_mask)) > 1  # a non-trivial mask, or the test proves nothing
    expected = to_canonical(Volume(original_mask, volume.affine)).array
    np.testing.assert_array_equal(copy_mask, expected)


def test_batch_size_must_be_positive():
    with pytest.raises(InputError, match="batch_size must be at least 1"):
        Predictor(SignNet(), PreprocessConfig(), batch_size=0)


def test_tta_flips_are_every_combination_of_the_allowed_axes():
    assert tta_flips(()) == [()]
    assert tta_flips((0,)) == [(), (-2,)]  # rows are dim -2 of [B, C, H, W]
    assert tta_flips((0, 1)) == [(), (-2,), (-1,), (-2, -1)]


def test_left_right_tta_averages_a_model_with_its_mirror_image():
    # A model that marks the top half of every slice: with left-right TTA (rows flipped), the
    # average of "top half" and "bottom half" is a tie everywhere, and argmax picks class 0.
    class TopHalf(nn.Module):
        config = UNetConfig(num_classes=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sign = -torch.ones_like(x[:, :1])
            sign[:, :, : x.shape[-2] // 2] = 1.0  # +1 on the top half, -1 below
            return torch.cat([-sign, sign], dim=1) * 10.0

    volume = Volume(np.ones((8, 6, 4), np.float32), np.eye(4))  # axial slices: rows = L-R
    config = PreprocessConfig(modality="MR")
    plain = Predictor(TopHalf(), config).predict(volume).labels
    assert plain[:4].all() and not plain[4:].any()
    mirrored = Predictor(TopHalf(), config, tta=True, mirror="lr").predict(volume).labels
    assert not mirrored.any()


def test_context_gives_the_network_the_same_stack_training_builds():
    seen: list[torch.Tensor] = []

    class Recorder(nn.Module):
        config = UNetConfig(num_classes=2, in_channels=3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(size=(5, 6, 7)).astype(np.float32), np.eye(4))
    config = PreprocessConfig(modality="MR", context=1)
    predictor = Predictor(Recorder(), config, batch_size=3)
    prepared = predictor.prepare(volume)
    predictor.predict(volume, prepared=prepared)
    stacked = torch.cat(seen).numpy()
    expected = with_context(prepared.slices, 0, len(prepared.slices), 1)
    np.testing.assert_array_equal(stacked, expected)
    assert (stacked[0, 0] == OUTSIDE_SCAN).all() and (stacked[-1, 2] == OUTSIDE_SCAN).all()


@pytest.mark.parametrize("tta", [False, True])
def test_progress_counts_slices_batch_by_batch_up_to_the_total(tta: bool):
    volume = Volume(np.random.default_rng(0).normal(size=(6, 7, 10)).astype(np.float32), np.eye(4))
    predictor = Predictor(
        SignNet(), PreprocessConfig(modality="MR", slice_axis=2), batch_size=4, tta=tta
    )
    calls: list[tuple[int, int]] = []
    predictor.predict(volume, on_progress=lambda done, total: calls.append((done, total)))
    # 10 axial slices in batches of 4: 4, 8, then the last 2; TTA views do not count twice.
    assert calls == [(4, 10), (8, 10), (10, 10)]


class ThreadRecorder(SignNet):
    """SignNet that notes how many torch threads each forward pass ran with."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.threads.append(torch.get_num_threads())
        return super().forward(x)


def test_thread_plan_is_one_thread_below_the_small_batch_size_else_all():
    assert SMALL_BATCH_PIXELS == 65_536  # 4 slices of 128 x 128
    assert cpu_threads_for(65_535, 2) == 1
    assert cpu_threads_for(65_536, 2) == 2
    assert cpu_threads_for(4 * 272 * 272, 16) == 16
    assert cpu_threads_for(10**6, 0) == 1


@pytest.mark.parametrize(("side", "expected_threads"), [(8, 1), (160, 2)])
def test_small_volumes_run_on_one_thread_and_the_setting_is_restored(side, expected_threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = PreprocessConfig(modality="MR", slice_axis=2)
        predictor = Predictor(ThreadRecorder(), config, batch_size=4)
        image = np.random.default_rng(0).normal(size=(side, side, 4)).astype(np.float32)
        labels = predictor.predict(Volume(image, np.eye(4))).labels
        # 4 slices of 8² = 256 pixels per pass: one thread; 4 of 160² = 102,400: both
        assert predictor.model.threads == [expected_threads]  # the predictor's (folded) copy
        assert torch.get_num_threads() == 2
        # float16 probabilities may flip a voxel whose z-score is ~0; every other one agrees
        assert (labels == mr_positive(image)).mean() > 0.999
    finally:
        torch.set_num_threads(previous)


def test_a_ct_is_segmented_only_inside_the_box_that_holds_the_patient():
    # A model that calls every pixel it is shown class 1: the mask is exactly the content box
    # (on the volume's grid), so air outside it is never sent through the network.
    shapes: list[tuple[int, ...]] = []

    class Everything(nn.Module):
        config = UNetConfig(num_classes=2, depth=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(x.shape))
            return torch.cat([torch.zeros_like(x), torch.ones_like(x)], dim=1)

    array = np.full((80, 96, 5), -1000, dtype=np.int16)  # RAS axial: slices are [x, y]
    array[30:50, 20:30, 2] = 40
    volume = Volume(array, np.eye(4))
    labels = Predictor(Everything(), PreprocessConfig(modality="CT")).predict(volume).labels
    expected = np.zeros_like(labels)
    # rows 30..49 + 16 air = 14..66 (52) -> 52 is a multiple of 4; columns 20..29 -> 4..46 (42)
    # -> 44 (widened after)
    expected[14:66, 4:48, :] = 1
    np.testing.assert_array_equal(labels, expected)
    assert {shape[-2:] for shape in shapes} == {(52, 44)}
