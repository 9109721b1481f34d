"""Loading and saving bundles: ``model.safetensors`` + ``salign.json`` + ``README.md``.

A bundle is the only thing that travels between training and inference, on disk and on the Hub
alike. Loading checks the contract, the hash and the tensor names before a single weight is
used, and never unpickles anything: weights are safetensors only. Torch is imported only by the
functions that handle tensors.

Example::

    folder = save_bundle(run_dir / "bundle", model.state_dict(), contract)
    bundle = load_bundle(folder)                 # or load_bundle("org/name@v1")
    model = build_model(bundle).eval()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salign_cli.bundles.card import render_card
from salign_cli.bundles.contract import LIMITS, BundleContract
from salign_cli.bundles.files import read_contract, verify_weights
from salign_cli.bundles.layout import CARD_FILE, CONTRACT_FILE, WEIGHTS_FILE
from salign_cli.bundles.resolve import RunKind, open_bundle
from salign_cli.bundles.spec import ResolvedBundle
from salign_cli.errors import InputError
from salign_cli.io.atomic import atomic_path, write_json
from salign_cli.io.hashing import file_sha256

if TYPE_CHECKING:
    import torch

    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.model.unet import UNet2D, UNetConfig
    from salign_cli.workspace import Workspace


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded, verified bundle: where it was found, its contract and its tensors (on the CPU)."""

    resolved: ResolvedBundle
    contract: BundleContract
    state_dict: dict[str, torch.Tensor]

    @property
    def folder(self) -> Path:
        return self.resolved.folder


def _check_tensor_names(tensors: Mapping[str, Any], contract: BundleContract, where: Path) -> None:
    """Every tensor the contract's architecture needs is present with the right shape.

    Extra tensors (pre-training heads) are allowed: they travel with the bundle and
    :func:`build_model` ignores them. The expected shapes come from a U-Net built on the
    ``meta`` device, which allocates no memory.
    """
    import torch

    from salign_cli.model.unet import UNet2D

    with torch.device("meta"):
        expected = UNet2D(contract.architecture).state_dict()
    missing = [name for name in expected if name not in tensors]
    wrong = [
        name
        for name, tensor in expected.items()
        if name in tensors and tuple(tensors[name].shape) != tuple(tensor.shape)
    ]
    if missing or wrong:
        raise InputError(
            f"{where / WEIGHTS_FILE}: weights do not fit the architecture in {CONTRACT_FILE} "
            f"({len(missing)} tensors missing, e.g. {missing[:3]}; {len(wrong)} with the wrong "
            f"shape, e.g. {wrong[:3]}); re-export the bundle from its run"
        )


def _check_parameter_count(contract: BundleContract, where: Path) -> None:
    """The architecture's weight count, counted on the ``meta`` device (nothing allocated)."""
    import torch

    from salign_cli.model.unet import UNet2D

    with torch.device("meta"):
        count = sum(p.numel() for p in UNet2D(contract.architecture).parameters())
    if count > LIMITS["parameters"]:
        raise InputError(
            f"{where / CONTRACT_FILE}: the architecture has {count:,} weights, over salign's "
            f"limit of {LIMITS['parameters']:,} (a hostile or corrupt bundle)"
        )


def _check_safetensors_header(data: bytes, where: Path) -> None:
    """The 8-byte little-endian header length of a safetensors file, checked before the
    header is parsed: it must fit the file and salign's limit."""
    if len(data) < 8:
        raise InputError(f"{where}: too short to be a safetensors file; re-download the bundle")
    header = int.from_bytes(data[:8], "little")
    if header > min(len(data) - 8, LIMITS["safetensors_header_bytes"]):
        raise InputError(
            f"{where}: safetensors header claims {header:,} bytes in a {len(data):,}-byte file "
            "(a hostile or corrupt bundle); re-download the bundle"
        )


def save_bundle(
    folder: Path,
    state_dict: Mapping[str, torch.Tensor],
    contract: BundleContract,
    card_text: str | None = None,
) -> Path:
    """Write a bundle into ``folder`` and return it; every file is written atomically.

    The weights go first; their sha256 is then written into ``salign.json`` (whatever
    ``contract.weights_sha256`` held is replaced). The tensors are checked against the
    contract's architecture before anything is written, so a saved bundle always loads.
    ``card_text`` defaults to :func:`render_card`.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    # Copies on the CPU: safetensors refuses tensors that share storage or live on a GPU.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state_dict.items()}
    _check_tensor_names(tensors, contract, folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    with atomic_path(weights) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt"})
    final = dataclasses.replace(contract, weights_sha256=file_sha256(weights))
    write_json(folder / CONTRACT_FILE, final.to_dict())
    with atomic_path(folder / CARD_FILE) as temporary:
        temporary.write_text(card_text if card_text is not None else render_card(final), "utf-8")
    return folder


def load_bundle(
    spec: str | Path | None,
    workspace: Workspace | None = None,
    *,
    run_kind: RunKind = "finetune",
    notify: Callable[[str], None] | None = None,
) -> Bundle:
    """Load a verified bundle named as `open_bundle` takes it (a folder, a run folder, a
    registry name, ``org/name[@revision]``, or ``None`` for the workspace's newest run).

    Order of checks: contract (schema version, fields), sha256 of the weights, then tensor
    names and shapes against the architecture. Tensors are parsed by safetensors from the
    verified bytes; nothing is unpickled. ``notify`` receives notes such as "network down,
    using the cached copy".
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    resolved = open_bundle(spec, workspace, run_kind=run_kind, notify=notify)
    folder = resolved.folder
    source = None if resolved.source == "local" else resolved.spec
    contract = read_contract(folder)
    _check_parameter_count(contract, folder)
    data = verify_weights(folder, contract, source)
    _check_safetensors_header(data, folder / WEIGHTS_FILE)
    try:
        tensors = load_safetensors(data)
    except SafetensorError as error:
        raise InputError(
            f"{folder / WEIGHTS_FILE}: not a readable safetensors file ({error})"
        ) from None
    _check_tensor_names(tensors, contract, folder)
    return Bundle(resolved=resolved, contract=contract, state_dict=tensors)


def build_model(bundle: Bundle) -> UNet2D:
    """The U-Net the contract describes, with the bundle's weights (CPU, training mode).

    Call ``.eval()`` for inference and ``.to(device)`` as needed. Extra tensors in the bundle
    (pre-training heads) are not part of the U-Net and are left out.
    """
    from salign_cli.model.unet import UNet2D

    model = UNet2D(bundle.contract.architecture)
    own = model.state_dict()
    model.load_state_dict({name: bundle.state_dict[name] for name in own}, strict=True)
    return model


def untrained_bundle(
    folder: Path,
    classes: tuple[str, ...],
    *,
    modality: str = "MR",
    architecture: UNetConfig | None = None,
    preprocessing: PreprocessConfig | None = None,
    kind: str = "finetuned",
    seed: int = 0,
) -> Path:
    """Save a randomly initialised bundle with a valid contract and return its folder.

    For speed benchmarks (inference time does not depend on the weights) and for tests that
    need a loadable model. Its provenance says it was never trained, so it cannot pass for a
    real model. ``architecture`` defaults to a width-8, depth-2 U-Net for ``len(classes)``
    classes; ``preprocessing`` to ``PreprocessConfig(modality)``.
    """
    import torch

    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.model.unet import UNet2D, UNetConfig

    architecture = architecture or UNetConfig(num_classes=len(classes), width=8, depth=2)
    torch.manual_seed(seed)
    model = UNet2D(architecture)
    untrained = {"note": "random weights, never trained", "seed": seed}
    contract = BundleContract(
        kind=kind,
        architecture=architecture,
        modality=modality,
        classes={str(index): name for index, name in enumerate(classes)},
        preprocessing=preprocessing or PreprocessConfig(modality=modality),  # type: ignore[arg-type]
        finetuning={"labelled_case_ids": [], **untrained} if kind == "finetuned" else None,
        pretraining={"method": "scratch", "steps": 0, **untrained}
        if kind == "pretrained"
        else None,
    )
    return save_bundle(folder, model.state_dict(), contract)
