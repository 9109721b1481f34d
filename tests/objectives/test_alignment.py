"""LA / WLA losses and the collapse monitor, against answers computed by hand or by brute force."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from salign_cli.objectives.alignment import (
    collapse_monitor,
    is_collapsed,
    local_alignment_loss,
    window_alignment_loss,
)


def unit(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(shape, generator=generator, dtype=torch.float64), dim=1)


def positions_as_map(vectors: list[list[float]]) -> torch.Tensor:
    """Unit vectors (one per position) as a ``[1, c, 1, n]`` embedding."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, len(vectors[0]), 1, len(vectors))


# ---- full LA: hand-computed cases ------------------------------------------------------------


def test_identical_slices_with_distinct_positions_align_perfectly() -> None:
    # Position p carries basis vector e_p, so A = I: the best match of p is p with similarity 1.
    n = 16
    x = torch.eye(n, dtype=torch.float64).reshape(1, n, 4, 4)
    assert local_alignment_loss(x, x, variant="literal") == 0
    # Sharp: row p of softmax(I / τ) has max e^{1/τ} / (e^{1/τ} + (n − 1)) = 1 / (1 + (n−1)e^{−1/τ}).
    tau = 0.01
    expected = 1 - 1 / (1 + (n - 1) * math.exp(-1 / tau))
    loss = local_alignment_loss(x, x, variant="sharp", temperature=tau)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert loss.item() < 1e-40


def test_two_position_case_by_hand() -> None:
    # x_i: p0 = p1 = (1, 0); x_j: q0 = (1, 0), q1 = (0, 1).  A = [[1, 0], [1, 0]].
    x_i = positions_as_map([[1.0, 0.0], [1.0, 0.0]])
    x_j = positions_as_map([[1.0, 0.0], [0.0, 1.0]])
    # Literal, i→j: row maxima 1, 1 → 0.  j→i: column maxima 1 (q0), 0 (q1) → (0 + 1) / 2.
    literal = {"i→j": 0.0, "j→i": 0.5}
    # Sharp, τ = 0.5.  Rows [1, 0]: max softmax = e²/(e² + 1), loss e⁻²/(1 + e⁻²) each.
    # Columns [1, 1] and [0, 0]: softmax uniform, max 1/2, loss 1/2 each.
    row_loss = math.exp(-2) / (1 + math.exp(-2))
    sharp = {"i→j": row_loss, "j→i": 0.5}
    for variant, expected in (("literal", literal), ("sharp", sharp)):
        one_way = local_alignment_loss(x_i, x_j, variant=variant, temperature=0.5, symmetric=False)
        other_way = local_alignment_loss(
            x_j, x_i, variant=variant, temperature=0.5, symmetric=False
        )
        both = local_alignment_loss(x_i, x_j, variant=variant, temperature=0.5, symmetric=True)
        assert one_way.item() == pytest.approx(expected["i→j"], abs=1e-12)
        assert other_way.item() == pytest.approx(expected["j→i"], abs=1e-12)
        assert both.item() == pytest.approx((expected["i→j"] + expected["j→i"]) / 2, abs=1e-12)


def test_literal_uses_the_absolute_error_for_negative_similarities() -> None:
    # Opposite vectors: the best (only) match has cosine −1, so |1 − (−1)| = 2.
    x_i = positions_as_map([[1.0, 0.0]])
    x_j = positions_as_map([[-1.0, 0.0]])
    assert local_alignment_loss(x_i, x_j, variant="literal").item() == pytest.approx(2.0)


def test_collapsed_embedding_fools_literal_but_not_sharp() -> None:
    # Every position the same unit vector: all A = 1, so literal LA is 0, while each softmax row is
    # uniform over hw = 20 candidates, so sharp LA is 1 − 1/20.
    x = F.normalize(torch.ones(2, 8, 4, 5, dtype=torch.float64), dim=1)
    assert local_alignment_loss(x, x, variant="literal").item() == pytest.approx(0.0, abs=1e-12)
    assert local_alignment_loss(x, x, variant="sharp").item() == pytest.approx(1 - 1 / 20)
    monitor = collapse_monitor(x)
    assert monitor["feature_std"] == pytest.approx(0.0, abs=1e-6)
    assert monitor["mean_offdiag_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert is_collapsed(monitor)


def test_collapsed_embedding_under_a_window_counts_the_candidates_in_each_window() -> None:
    # 3×3 map, radius 1: corners see 4 candidates, edges 6, the centre 9.
    x = F.normalize(torch.ones(1, 4, 3, 3, dtype=torch.float64), dim=1)
    expected = 1 - (4 * (1 / 4) + 4 * (1 / 6) + 1 / 9) / 9
    loss = window_alignment_loss(x, x, radius=1, variant="sharp")
    assert loss.item() == pytest.approx(expected, abs=1e-12)


# ---- WLA against full LA and against a brute-force windowed reference --------------------------


@pytest.mark.parametrize("variant", ["sharp", "literal"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("radius", [6, 50])
def test_covering_window_equals_full_alignment(variant: str, symmetric: bool, radius: int) -> None:
    # 5×7 map: radius >= max(h, w) − 1 = 6 covers the whole map from every position.
    x_i = unit((2, 6, 5, 7), seed=0).requires_grad_()
    x_j = unit((2, 6, 5, 7), seed=1).requires_grad_()
    kwargs = {"variant": variant, "temperature": 0.1, "symmetric": symmetric}
    full = local_alignment_loss(x_i, x_j, **kwargs)
    windowed = window_alignment_loss(x_i, x_j, radius=radius, **kwargs)
    assert abs(full.item() - windowed.item()) < 1e-6
    full_grads = torch.autograd.grad(full, (x_i, x_j))
    window_grads = torch.autograd.grad(windowed, (x_i, x_j))
    for full_grad, window_grad in zip(full_grads, window_grads, strict=True):
        torch.testing.assert_close(window_grad, full_grad, rtol=1e-6, atol=1e-9)


def brute_force_window_loss(
    x_i: torch.Tensor, x_j: torch.Tensor, radius: int, variant: str, tau: float
) -> torch.Tensor:
    """Reference for one direction: the full hw × hw matrix with out-of-window entries removed."""
    _, _, h, w = x_i.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    in_window = ((ys[:, None] - ys[None, :]).abs() <= radius) & (
        (xs[:, None] - xs[None, :]).abs() <= radius
    )
    similarity = torch.einsum("bcp,bcq->bpq", x_i.flatten(2), x_j.flatten(2))
    similarity = similarity.masked_fill(~in_window, float("-inf"))
    if variant == "literal":
        return (1 - similarity.amax(-1)).abs().mean()
    return (1 - (similarity / tau).softmax(-1).amax(-1)).mean()


@pytest.mark.parametrize("variant", ["sharp", "literal"])
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_window_matches_a_brute_force_masked_reference(variant: str, radius: int) -> None:
    x_i, x_j = unit((2, 5, 6, 9), seed=2), unit((2, 5, 6, 9), seed=3)
    expected = 0.5 * (
        brute_force_window_loss(x_i, x_j, radius, variant, 0.2)
        + brute_force_window_loss(x_j, x_i, radius, variant, 0.2)
    )
    loss = window_alignment_loss(x_i, x_j, radius=radius, variant=variant, temperature=0.2)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-9)


def test_radius_zero_literal_is_the_mean_same_position_error() -> None:
    x_i, x_j = unit((2, 4, 3, 5), seed=4), unit((2, 4, 3, 5), seed=5)
    cosine_same_position = (x_i * x_j).sum(dim=1)
    expected = (1 - cosine_same_position).abs().mean()
    loss = window_alignment_loss(x_i, x_j, radius=0, variant="literal", symmetric=False)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


# ---- memory: no hw × hw tensor -----------------------------------------------------------------


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple | list) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def largest_tensor_of(loss_fn, side: int) -> int:
    batch, channels = 2, 8
    x_i = unit((batch, channels, side, side), seed=6).float().requires_grad_()
    x_j = unit((batch, channels, side, side), seed=7).float().requires_grad_()
    with LargestTensor() as tracker:
        loss_fn(x_i, x_j).backward()
    return tracker.largest


def test_window_alignment_never_creates_a_quadratic_tensor() -> None:
    for side in (16, 32):
        hw = side * side
        largest = largest_tensor_of(lambda a, b: window_alignment_loss(a, b, radius=3), side)
        # Nothing bigger than one embedding (B·c·hw) — far below hw² (65k / 1M entries).
        assert largest <= 2 * 8 * hw
    # The tracker does see quadratic tensors when they exist: full LA builds B·hw².
    assert largest_tensor_of(local_alignment_loss, 16) >= 2 * (16 * 16) ** 2


# ---- alignment on real-looking features --------------------------------------------------------


def random_conv_features(image: torch.Tensor) -> torch.Tensor:
    """A fixed random 5×5 conv to 16 channels, then unit norm: local appearance descriptors."""
    weight = torch.randn(16, 1, 5, 5, generator=torch.Generator().manual_seed(8))
    return F.normalize(F.conv2d(image, weight, padding=2), dim=1)


@pytest.mark.parametrize("variant", ["sharp", "literal"])
def test_a_shifted_copy_aligns_better_than_an_unrelated_image(variant: str) -> None:
    # Every position of the shifted copy has its exact match one pixel away (borders aside),
    # so both LA and WLA (radius 3 ≥ 1) must score it clearly better than an unrelated image.
    generator = torch.Generator().manual_seed(9)
    image = torch.randn(1, 1, 32, 32, generator=generator)
    unrelated = torch.randn(1, 1, 32, 32, generator=generator)
    shifted = torch.roll(image, shifts=1, dims=-1)
    anchor = random_conv_features(image)
    for loss_fn in (local_alignment_loss, window_alignment_loss):
        matched = loss_fn(anchor, random_conv_features(shifted), variant=variant)
        mismatched = loss_fn(anchor, random_conv_features(unrelated), variant=variant)
        assert matched + 0.15 < mismatched, (loss_fn.__name__, matched, mismatched)


# ---- collapse monitor and input checks ---------------------------------------------------------


def test_collapse_monitor_by_hand() -> None:
    # Two positions (1, 0) and (0.6, 0.8): per-channel sample std of [1, 0.6] and [0, 0.8] is
    # |a − b| / sqrt(2); the only pair of different positions has cosine 0.6.
    x = positions_as_map([[1.0, 0.0], [0.6, 0.8]])
    monitor = collapse_monitor(x)
    expected_std = (0.4 / math.sqrt(2) + 0.8 / math.sqrt(2)) / 2
    assert monitor["feature_std"] == pytest.approx(expected_std, abs=1e-6)
    assert monitor["mean_offdiag_similarity"] == pytest.approx(0.6, abs=1e-6)
    assert not is_collapsed(monitor)


def test_collapse_monitor_pairs_positions_across_the_batch() -> None:
    # Orthonormal positions spread over two batch items: every off-diagonal cosine is 0.
    x = torch.eye(4).reshape(2, 2, 4).transpose(1, 2).reshape(2, 4, 1, 2)
    assert collapse_monitor(x)["mean_offdiag_similarity"] == pytest.approx(0.0, abs=1e-7)


def test_spread_embeddings_are_not_collapsed() -> None:
    monitor = collapse_monitor(unit((4, 128, 8, 8), seed=10))
    assert monitor["feature_std"] == pytest.approx(1 / math.sqrt(128), rel=0.1)
    assert abs(monitor["mean_offdiag_similarity"]) < 0.01
    assert not is_collapsed(monitor)


def test_bad_inputs_are_refused() -> None:
    x = unit((1, 4, 3, 3), seed=11)
    with pytest.raises(ValueError, match="equal shape"):
        local_alignment_loss(x, x[..., :2])
    with pytest.raises(ValueError, match="variant"):
        window_alignment_loss(x, x, variant="soft")
    with pytest.raises(ValueError, match="temperature"):
        local_alignment_loss(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="radius"):
        window_alignment_loss(x, x, radius=-1)
