"""Run a trained 2D U-Net over a 3D scan and return labels on the scan's own voxel grid.

The path of one volume (every geometric step lives in :mod:`salign_cli.data.preprocess` and
:mod:`salign_cli.io.volume`; this module only schedules them):

1. :func:`~salign_cli.data.preprocess.prepare_scan` with the bundle's recipe: canonical (RAS)
   orientation, slice axis first, in-plane resampling to the model's spacing, normalisation;
2. slices in batches on the device (a CT's only inside the box that holds the patient,
   `content_box`: the air around it is background), each with the bundle's ``context``
   neighbours as extra channels (2.5D; CUDA: bf16 autocast; CUDA and CPU: channels_last;
   batch norm folded into the convolutions, which is exact in eval mode and ~1.5x faster on
   CPU); optional test-time augmentation averages the softmax over the mirrored views the
   network was trained on (``mirror``: ``lr`` = the left-right axis, ``all`` = both in-plane
   axes);
3. softmax probabilities (float16 on the host) go back through
   :func:`~salign_cli.data.preprocess.restore_labels`: resampled to the original in-plane grid,
   argmax, slice axis and orientation undone — so the labels have exactly the input's shape.

2D inputs (one slice) are segmented as one slice of the singleton axis, whatever the bundle's
slice axis says, and give a one-slice mask.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from salign_cli.data.preprocess import (
    PreparedScan,
    PreprocessConfig,
    coarsened,
    content_box,
    mirror_axes,
    prepare_scan,
    restore_labels,
    restore_scores,
    with_context,
)
from salign_cli.device import resolve_device, uses_channels_last
from salign_cli.errors import OptionError
from salign_cli.infer.postprocess import keep_largest_component
from salign_cli.infer.quality import MaskQuality, expected_dice
from salign_cli.io.volume import Volume, canonical_grid

if TYPE_CHECKING:
    from salign_cli.bundles.contract import BundleContract
    from salign_cli.bundles.spec import ResolvedBundle
    from salign_cli.workspace import Workspace

# ``on_progress(done, total)``: slices segmented so far out of the scan's slices.
SliceProgress = Callable[[int, int], None]

# Slices per forward pass. On a CPU larger batches are no faster and a width-32 U-Net at 512²
# holds ~250 MB of activations per slice; a GPU wants more work per launch.
DEFAULT_BATCH_SIZE = {"cuda": 32, "mps": 8, "cpu": 4}
# CPU thread plan: a forward pass over fewer pixels than this (4 slices of 128²) runs on one
# torch thread. Splitting a small convolution costs more in OpenMP hand-offs than it saves, and
# the extra thread fights the reader and writer threads of `segment` for the same cores: on 2
# cores, 8 x 8 x 4 files took 0.28 s each with 2 torch threads and 0.023 s with 1.
SMALL_BATCH_PIXELS = 4 * 128 * 128


def cpu_threads_for(batch_pixels: int, available: int) -> int:
    """Torch intra-op threads for forward passes of ``batch_pixels`` pixels on a CPU.

    >>> cpu_threads_for(4 * 64 * 64, 8), cpu_threads_for(4 * 272 * 272, 8)
    (1, 8)
    """
    return 1 if batch_pixels < SMALL_BATCH_PIXELS else max(1, available)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` torch intra-op threads, then restore the previous number."""
    previous = torch.get_num_threads()
    if count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count != previous:
            torch.set_num_threads(previous)


def tta_flips(axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every combination of flips of the in-plane ``axes`` (0 = rows, 1 = columns) as tensor
    dims of a ``[B, C, H, W]`` batch, the identity first.

    >>> tta_flips((0,)), tta_flips((0, 1))
    ([(), (-2,)], [(), (-2,), (-1,), (-2, -1)])
    """
    dims = [-2 + axis for axis in axes]
    flips: list[tuple[int, ...]] = [()]
    for dim in dims:
        flips += [(*flip, dim) for flip in flips]
    return flips


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` with every Conv2d → BatchNorm2d pair folded into one conv.

    Exact up to float rounding in eval mode (the norm is then an affine map per channel); it
    removes a full pass over every feature map, which is what limits CPU inference at 512².
    Instance norm (statistics of the input itself) cannot be folded and is left alone.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            conv, norm = module[index], module[index + 1]
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d:
                module[index] = fuse_conv_bn_eval(conv, norm)
                module[index + 1] = nn.Identity()
    return folded


@dataclass(frozen=True, eq=False)
class Prediction:
    """One volume's result on its own voxel grid.

    ``labels``: integer ``volume.shape`` (uint8, uint16 beyond 255 classes).
    ``probabilities``: float16 ``[*volume.shape, C]`` softmax, only when asked for.
    ``quality``: the model's expected Dice of its mask (`salign_cli.infer.quality`).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    quality: MaskQuality | None = None


@dataclass(frozen=True, eq=False)
class BundleOrigin:
    """Where a :meth:`Predictor.from_bundle` model came from: the spec as given, the resolved
    folder and Hub revision (``resolved``), and the bundle's contract (classes, modality,
    inference defaults)."""

    resolved: ResolvedBundle
    contract: BundleContract


class Predictor:
    """A model, the preprocessing it was trained with, and a device: volume in, labels out.

    ``spacing_factor`` > 1 runs the network on a coarser in-plane grid than it was trained on
    (`coarsened`; ``segment --fast``): factor² fewer pixels per slice, labels still on the
    input's grid, at some cost in accuracy.

    Example::

        predictor = Predictor(model, PreprocessConfig(modality="CT"), device="cpu")
        prediction = predictor.predict(read_volume("ct.nii.gz"))
        write_labels(prediction.labels, like=volume, path="ct_seg.nii.gz")

    or, from a trained bundle: ``Predictor.from_bundle("hippocampus")``.
    """

    origin: BundleOrigin | None = None  # set by from_bundle

    def __init__(
        self,
        model: nn.Module,
        preprocess: PreprocessConfig,
        *,
        device: torch.device | str = "cpu",
        batch_size: int | None = None,
        tta: bool = False,
        mirror: str = "all",
        spacing_factor: float = 1.0,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise OptionError("batch_size", f"must be at least 1, got {batch_size}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.preprocess = preprocess
        self.batch_size = batch_size or DEFAULT_BATCH_SIZE.get(self.device.type, 4)
        self.tta = tta
        self.mirror = mirror
        self.spacing_factor = spacing_factor
        # the most threads torch may use: its setting when the predictor is built (the machine's
        # cores, or what OMP_NUM_THREADS / torch.set_num_threads asked for)
        self.max_threads = torch.get_num_threads()
        # any module with a UNetConfig-like ``config`` (tests pass small stand-ins)
        self.num_classes = int(cast(Any, model).config.num_classes)
        # the network's input size multiple (2**depth for the U-Net; 1 for stand-ins without one)
        self._downsampling = 2 ** int(getattr(cast(Any, model).config, "depth", 0))
        prepared_model = fold_batch_norm(model).to(self.device)
        if uses_channels_last(self.device):
            prepared_model = prepared_model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub lacks it
        self.model = prepared_model

    @classmethod
    def from_bundle(
        cls,
        spec: str | None,
        *,
        workspace: Workspace | None = None,
        device: torch.device | str = "auto",
        batch_size: int | None = None,
        tta: bool | None = None,
        spacing_factor: float = 1.0,
        notify: Callable[[str], None] | None = None,
    ) -> Predictor:
        """The predictor of a fine-tuned bundle, exactly as ``salign segment --model spec`` runs it.

        ``spec``: a bundle folder, a run folder (its ``bundle/``), a registry name (``"hippocampus"``
        ships with salign and needs no network) or a Hub id ``org/name[@revision]``; ``None``:
        the newest fine-tuned run in ``workspace`` (see `open_bundle`). The weights
        are verified against the bundle's sha256; ``tta=None`` takes the bundle's inference
        default, and the TTA mirror always comes from the bundle; ``spacing_factor`` as in the
        class (``segment --fast``). ``notify`` receives one-line notes
        (e.g. a Hub fallback to the cache). ``.origin`` says what was loaded. Raises
        :class:`InputError` for a bundle without a trained segmentation head.

        >>> predictor = Predictor.from_bundle("hippocampus", device="cpu")   # doctest: +SKIP
        """
        from salign_cli.bundles.store import build_model, load_bundle

        device = device if isinstance(device, torch.device) else resolve_device(device)
        bundle = load_bundle(spec, workspace, run_kind="finetune", notify=notify)
        contract, spec = bundle.contract, bundle.resolved.spec
        if contract.kind != "finetuned":
            raise OptionError(
                "model",
                f"{spec}: a {contract.kind} bundle has no trained segmentation head; "
                f"fine-tune it first (salign finetune --from {spec} --labels N)",
            )
        defaults = contract.inference_defaults
        predictor = cls(
            build_model(bundle).eval(),
            contract.preprocessing,
            device=device,
            batch_size=batch_size,
            tta=defaults.tta if tta is None else tta,
            mirror=defaults.mirror,
            spacing_factor=spacing_factor,
        )
        predictor.origin = BundleOrigin(bundle.resolved, contract)
        return predictor

    def largest_component(self, override: bool | None = None) -> bool:
        """Whether to keep each class's largest connected part: ``override`` when given (the
        ``--largest-component`` flag), else the bundle's default (fine-tuning keeps it when it
        raised Dice); ``False`` for a model not loaded from a bundle."""
        if override is not None:
            return override
        return bool(self.origin and self.origin.contract.inference_defaults.largest_component)

    # -- one volume -----------------------------------------------------------------------------

    def prepare(self, volume: Volume) -> PreparedScan:
        """The bundle's preprocessing; a 2D image is sliced across its singleton axis."""
        return prepare_scan(volume, self._config_for(volume))

    def predict(
        self,
        volume: Volume,
        *,
        prepared: PreparedScan | None = None,
        with_probabilities: bool = False,
        on_progress: SliceProgress | None = None,
    ) -> Prediction:
        """Segment ``volume``; ``prepared`` may come from :meth:`prepare` run ahead in a thread.

        ``on_progress(done, total)`` is called after every batch of slices (``total`` = the
        slices along the scan's slice axis), so a long scan can show its own progress bar.
        """
        prepared = prepared if prepared is not None else self.prepare(volume)
        flips: list[tuple[int, ...]] = (
            tta_flips(mirror_axes(self.mirror, prepared.slice_axis)) if self.tta else [()]
        )
        with torch_threads(self._threads_for(prepared)):
            probabilities = self._scan_probabilities(prepared.slices, flips, on_progress)
            quality = expected_dice(probabilities)
            labels = restore_labels(probabilities, prepared, volume)
            restored = None
            if with_probabilities:
                restored = restore_scores(probabilities, prepared, volume).astype(np.float16)
        return Prediction(labels=labels, probabilities=restored, quality=quality)

    def slice_probabilities(
        self,
        slices: np.ndarray,
        flips: list[tuple[int, ...]] | None = None,
        on_progress: SliceProgress | None = None,
    ) -> np.ndarray:
        """Softmax of every slice: float32 ``[D, H, W]`` in, float16 ``[C, D, H, W]`` out.

        ``flips`` (tensor dims of a ``[B, C, H, W]`` batch, see `tta_flips`) are averaged over;
        ``None`` = no test-time augmentation. ``on_progress(stop, D)`` follows every batch.
        """
        depth = slices.shape[0]
        context = self.preprocess.context
        out = np.empty((self.num_classes, *slices.shape), dtype=np.float16)
        with torch.inference_mode(), self._autocast():
            for start in range(0, depth, self.batch_size):
                stop = min(start + self.batch_size, depth)
                batch = torch.from_numpy(with_context(slices, start, stop, context))
                batch = batch.to(self.device, non_blocking=True)
                if uses_channels_last(self.device):
                    batch = batch.contiguous(memory_format=torch.channels_last)
                probabilities = self._softmax(batch, flips or [()])
                out[:, start : start + len(batch)] = (
                    probabilities.to(torch.float16).permute(1, 0, 2, 3).cpu().numpy()
                )
                if on_progress is not None:
                    on_progress(stop, depth)
        return out

    # -- internals ------------------------------------------------------------------------------

    def _scan_probabilities(
        self,
        slices: np.ndarray,
        flips: list[tuple[int, ...]],
        on_progress: SliceProgress | None,
    ) -> np.ndarray:
        """`slice_probabilities` of a scan's slices, run only on the box that holds a CT's
        patient (`content_box`); every pixel outside it is background with probability 1."""
        box = content_box(slices, self.preprocess, multiple=self._downsampling)
        if box is None:
            return self.slice_probabilities(slices, flips, on_progress)
        rows, columns = box
        inside = self.slice_probabilities(
            np.ascontiguousarray(slices[:, rows, columns]), flips, on_progress
        )
        out = np.zeros((self.num_classes, *slices.shape), dtype=np.float16)
        out[0] = 1.0
        out[:, :, rows, columns] = inside
        return out

    def _softmax(self, batch: torch.Tensor, flips: list[tuple[int, ...]]) -> torch.Tensor:
        total = None
        for dims in flips:
            flipped = batch.flip(dims) if dims else batch
            probabilities = torch.softmax(self.model(flipped).float(), dim=1)
            probabilities = probabilities.flip(dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
        assert total is not None
        return total / len(flips)

    def _threads_for(self, prepared: PreparedScan) -> int:
        """The CPU thread plan (`cpu_threads_for`) within the threads torch was given."""
        if self.device.type != "cpu":
            return torch.get_num_threads()
        batch = min(self.batch_size, len(prepared.slices))
        height, width = prepared.resampled_shape
        return cpu_threads_for(batch * height * width, self.max_threads)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _config_for(self, volume: Volume) -> PreprocessConfig:
        config = self.preprocess
        singleton_axes = _singleton_canonical_axes(volume)
        if len(singleton_axes) == 1 and volume.array.size > 1:
            config = dataclasses.replace(config, slice_axis=singleton_axes[0])
        if self.spacing_factor != 1.0:
            config = coarsened(config, volume, self.spacing_factor)
        return config


def _singleton_canonical_axes(volume: Volume) -> list[int]:
    """Canonical axes of size 1 (a 2D image has one); computed from the header, not the voxels."""
    shape, _ = canonical_grid(volume)
    return [axis for axis, size in enumerate(shape) if size == 1]


def segment_volume(
    predictor: Predictor,
    volume: Volume,
    *,
    largest_component: bool,
    prepared: PreparedScan | None = None,
    with_probabilities: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Prediction:
    """The predictor's labels for ``volume`` plus ``segment``'s post-processing (the largest
    connected part of each class when ``largest_component``): one path for files and arrays."""
    prediction = predictor.predict(
        volume, prepared=prepared, with_probabilities=with_probabilities, on_progress=on_progress
    )
    if not largest_component:
        return prediction
    labels = keep_largest_component(prediction.labels, range(1, predictor.num_classes))
    return dataclasses.replace(prediction, labels=labels)
