"""Model bundles: ``model.safetensors`` + ``salign.json`` (the contract) + ``README.md`` (the card).

A bundle is the only thing that travels between training and inference, on disk and on the Hub
alike. ``salign.json`` says everything inference needs (architecture, classes, modality,
preprocessing) and where the weights came from (pre-training and fine-tuning provenance,
evaluation), and pins the weights by sha256. Loading checks the contract, the hash and the tensor
names before a single weight is used, and never unpickles anything: weights are safetensors only.

Reading a contract (:func:`read_contract`) and checking a hash (:func:`verify_weights`) are
torch-free, so ``salign weights list/info`` answer instantly; torch is imported only by the
functions that handle tensors.

Example::

    folder = save_bundle(run_dir / "bundle", model.state_dict(), contract)
    bundle = load_bundle(folder)                 # or load_bundle("org/name@v1")
    model = build_model(bundle).eval()
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salign_cli import __version__
from salign_cli.errors import InputError, SalignError
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.io.atomic import atomic_path, write_json
from salign_cli.io.hashing import bytes_sha256, file_sha256
from salign_cli.io.modality import MODALITIES

if TYPE_CHECKING:
    import torch

    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.model.unet import UNet2D, UNetConfig

SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONTRACT_FILE = "salign.json"
CARD_FILE = "README.md"
BUNDLE_FILES = (CONTRACT_FILE, CARD_FILE, WEIGHTS_FILE)
KINDS = ("pretrained", "finetuned")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Limits a bundle from the Hub must respect before anything is read whole or allocated: a
# hostile salign.json could otherwise ask for a network of terabytes, and a hostile safetensors
# header for gigabytes of JSON. Generous next to any real salign model (width 32: 7.8M weights).
LIMITS = {
    "contract_bytes": 1 << 20,
    "card_bytes": 1 << 20,
    "weights_bytes": 4 << 30,
    "safetensors_header_bytes": 100 << 20,
    "width": 512,
    "depth": 8,
    "max_channels": 4096,
    "num_classes": 1024,
    "in_channels": 17,  # the slice and 8 neighbours per side
    "parameters": 1_000_000_000,
}
# Provenance every bundle of a kind must carry, so a model card can always answer "trained how?".
_REQUIRED_PROVENANCE = {
    "pretrained": ("pretraining", ("method", "steps")),
    "finetuned": ("finetuning", ("labelled_case_ids", "seed")),
}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_classes(classes: Any, num_classes: int, kind: str) -> None:
    """Class ids are "0".."N-1" with unique names; a fine-tuned bundle names all N outputs."""
    _require(isinstance(classes, dict), "classes must map ids ('0', '1', ...) to names")
    ids = sorted(int(k) for k in classes if isinstance(k, str) and k.isdigit())
    _require(len(ids) == len(classes), "class ids must be non-negative integers written as strings")
    _require(ids == list(range(len(ids))), f"class ids must be 0..N-1 without gaps, got {ids}")
    names = list(classes.values())
    _require(all(isinstance(n, str) and n for n in names), "class names must be non-empty strings")
    _require(len(set(names)) == len(names), f"class names must be unique, got {names}")
    if kind == "finetuned":
        _require(
            len(classes) == num_classes,
            f"a fine-tuned bundle names every output: {num_classes} classes in the "
            f"architecture but {len(classes)} in classes",
        )


def _check_evaluation(evaluation: Any) -> None:
    _require(evaluation is None or isinstance(evaluation, dict), "evaluation must be an object")
    dice = (evaluation or {}).get("per_class_dice", {})
    _require(isinstance(dice, dict), "evaluation.per_class_dice must map class names to Dice")
    for name, value in dice.items():
        _require(
            isinstance(value, (int, float)) and 0.0 <= value <= 1.0,
            f"evaluation.per_class_dice[{name!r}] must be a number in [0, 1], got {value!r}",
        )


@dataclass(frozen=True)
class BundleContract:
    """The ``salign.json`` of a bundle; validated on construction (``ValueError`` on violation).

    - ``architecture``: ``UNetConfig.to_dict()`` (``in_channels``, ``num_classes``, ``width``,
      ``depth``, ``norm``, ...); rebuilt with ``UNetConfig.from_dict`` when weights are loaded.
    - ``classes``: ``{"0": "background", "1": "anterior", ...}`` (ids as strings, JSON keys).
    - ``preprocessing``: ``PreprocessConfig.to_dict()`` (modality, slice-axis rule, target
      in-plane spacing in mm, CT window, MR percentiles); its modality must equal ``modality``.
    - ``pretraining``: required for ``kind="pretrained"``: ``method``, ``steps`` (plus e.g.
      ``data`` summary, ``base_model``). ``finetuning``: required for ``kind="finetuned"``:
      ``labelled_case_ids``, ``seed`` (plus e.g. ``base_model`` = the bundle it started from).
    - ``evaluation``: e.g. ``{"per_class_dice": {"anterior": 0.87}, "held_out_cases": 40}``.
    - ``inference``: `InferenceDefaults` (``tta``, ``mirror``, ``largest_component``) that
      ``salign segment`` applies unless told otherwise; absent in bundles older than it.
    - ``weights_sha256``: hex sha256 of ``model.safetensors``; ``None`` only before
      :func:`save_bundle` fills it in.
    """

    kind: str
    architecture: dict[str, Any]
    modality: str
    classes: dict[str, str]
    preprocessing: dict[str, Any]
    pretraining: dict[str, Any] | None = None
    finetuning: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    inference: dict[str, Any] | None = None
    weights_sha256: str | None = None
    salign_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _require(
            self.schema_version == SCHEMA_VERSION,
            f"schema_version must be {SCHEMA_VERSION}, got {self.schema_version!r}",
        )
        _require(self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}")
        _require(
            self.modality in MODALITIES,
            f"modality must be one of {MODALITIES}, got {self.modality!r}",
        )
        _require(isinstance(self.architecture, dict), "architecture must be an object")
        for key in ("in_channels", "num_classes"):
            value = self.architecture.get(key)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"architecture.{key} must be a positive integer, got {value!r}",
            )
        for key in ("width", "depth", "max_channels", "num_classes", "in_channels"):
            value = self.architecture.get(key)
            _require(
                not isinstance(value, (int, float)) or value <= LIMITS[key],
                f"architecture.{key} = {value!r} exceeds salign's limit of {LIMITS[key]} "
                "(a hostile or corrupt bundle)",
            )
        _check_classes(self.classes, self.architecture["num_classes"], self.kind)
        _require(isinstance(self.preprocessing, dict), "preprocessing must be an object")
        _require(
            self.preprocessing.get("modality", self.modality) == self.modality,
            f"preprocessing.modality {self.preprocessing.get('modality')!r} differs from "
            f"modality {self.modality!r}",
        )
        for name in ("pretraining", "finetuning"):
            value = getattr(self, name)
            _require(value is None or isinstance(value, dict), f"{name} must be an object or null")
        section, keys = _REQUIRED_PROVENANCE[self.kind]
        missing = [k for k in keys if k not in (getattr(self, section) or {})]
        _require(not missing, f"a {self.kind} bundle needs {section} with {missing}")
        _check_evaluation(self.evaluation)
        InferenceDefaults.from_dict(self.inference)  # raises ValueError when malformed
        context = self.preprocessing.get("context", 0)
        _require(
            self.in_channels == 2 * context + 1,
            f"architecture.in_channels {self.in_channels} does not match preprocessing.context "
            f"{context} (expected {2 * context + 1}: the slice and {context} neighbours per side)",
        )
        _require(
            self.weights_sha256 is None
            or (
                isinstance(self.weights_sha256, str)
                and bool(_SHA256.fullmatch(self.weights_sha256))
            ),
            "weights_sha256 must be 64 lowercase hex digits",
        )

    @property
    def inference_defaults(self) -> InferenceDefaults:
        return InferenceDefaults.from_dict(self.inference)

    @property
    def in_channels(self) -> int:
        return int(self.architecture["in_channels"])

    @property
    def num_classes(self) -> int:
        return int(self.architecture["num_classes"])

    @property
    def class_names(self) -> list[str]:
        """Names in id order: ``class_names[label_value]``."""
        return [self.classes[str(i)] for i in range(len(self.classes))]

    @property
    def base_model(self) -> str | None:
        """The Hub bundle this one started from (``org/name``, revision dropped), if any."""
        for section in (self.finetuning, self.pretraining):
            base = (section or {}).get("base_model")
            if base:
                return str(base).split("@", 1)[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        """The ``salign.json`` payload, versions first so a reader sees them before anything else."""
        payload = dataclasses.asdict(self)
        head = ("schema_version", "salign_version", "kind")
        return {
            **{k: payload[k] for k in head},
            **{k: v for k, v in payload.items() if k not in head},
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> BundleContract:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (``ValueError``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - known)
        _require(not unknown, f"unknown keys {unknown}")
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in payload
        )
        _require(not missing, f"missing keys {missing}")
        return cls(**payload)


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded, verified bundle: its folder, its contract and its tensors (on the CPU)."""

    folder: Path
    contract: BundleContract
    state_dict: dict[str, torch.Tensor]


def _redownload_hint(source: str | None) -> str:
    if source:
        return f"re-download with salign weights download {source} --force"
    return "re-download it (salign weights download NAME --force) or re-export it from its run"


def weights_mismatch_error(weights: Path, pinned_by: str, source: str | None) -> InputError:
    """The one message for weights whose hash differs from the one that pins them."""
    return InputError(
        f"{weights}: weights do not match the sha256 in {pinned_by}; the bundle is corrupt or "
        f"was tampered with; {_redownload_hint(source)}"
    )


def _containment_root(folder: Path) -> Path:
    """Where a bundle's links may lead: the repository folder of a Hub cache snapshot (its blobs
    live there), else the bundle folder itself."""
    if folder.parent.name == "snapshots":
        return folder.parent.parent
    return folder


def _link_stays_inside(link: Path, root: Path) -> bool:
    return link.resolve().is_relative_to(root.resolve())


def bundle_file(folder: Path, name: str, limit_key: str) -> Path | None:
    """``folder/name`` if it exists, checked before it is read: a regular file inside the
    bundle within its size limit. ``None`` when it does not exist.

    A symbolic link could point anywhere on the machine, so one is followed only when it stays
    inside the bundle, or, for a Hub cache snapshot (``models--org--name/snapshots/<commit>``,
    whose entries ``huggingface_hub`` makes as links to ``../../blobs/<hash>``), inside that
    repository's cache folder."""
    path = Path(folder) / name
    if path.is_symlink() and not _link_stays_inside(path, _containment_root(Path(folder))):
        raise InputError(
            f"{path}: a symbolic link out of the bundle; a bundle's files must be inside its "
            "folder (a hostile bundle could point anywhere); re-download or re-export it"
        )
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; re-download or re-export the bundle")
    size = path.stat().st_size
    if size > LIMITS[limit_key]:
        raise InputError(
            f"{path}: {size:,} bytes, over salign's limit of {LIMITS[limit_key]:,} for this file "
            "(a hostile or corrupt bundle); re-download or re-export it"
        )
    return path


def read_contract(folder: Path) -> BundleContract:
    """Read and validate ``folder/salign.json`` (torch-free).

    Raises ``SalignError`` when the bundle was written by a newer salign (schema version), and
    ``InputError`` naming the file for anything else that is wrong (including a contract that
    is a symbolic link, too large, or asks for a network over `LIMITS`).
    """
    checked = bundle_file(Path(folder), CONTRACT_FILE, "contract_bytes")
    if checked is None:
        raise InputError(
            f"{folder}: not a salign bundle (no {CONTRACT_FILE}); a bundle folder holds "
            f"{', '.join(BUNDLE_FILES)}"
        )
    path = checked
    bundle_file(Path(folder), CARD_FILE, "card_bytes")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"{path}: not valid JSON ({error}); re-export or re-download the bundle"
        ) from None
    if not isinstance(payload, dict):
        raise InputError(f"{path}: must hold a JSON object; re-export or re-download the bundle")
    version = payload.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SalignError(
            f"{path}: bundle schema version {version} was written by salign "
            f"{payload.get('salign_version', '?')}; this salign {__version__} reads up to version "
            f"{SCHEMA_VERSION}; upgrade salign (pip install -U salign)"
        )
    try:
        return BundleContract.from_dict(payload)
    except (ValueError, TypeError) as error:
        raise InputError(f"{path}: invalid bundle contract: {error}") from None


def verify_weights(folder: Path, contract: BundleContract, source: str | None = None) -> bytes:
    """Read ``model.safetensors`` and check it against ``weights_sha256``; return the bytes.

    Returning the very bytes that were hashed (rather than re-opening the file) means what gets
    loaded is exactly what was verified. ``source`` (a ``--model`` spec) makes the fix concrete.
    """
    checked = bundle_file(Path(folder), WEIGHTS_FILE, "weights_bytes")
    if checked is None:
        raise InputError(f"{folder}: bundle has no {WEIGHTS_FILE}; {_redownload_hint(source)}")
    weights = checked
    if contract.weights_sha256 is None:
        raise InputError(
            f"{folder / CONTRACT_FILE}: weights_sha256 is missing; re-export the bundle"
        )
    data = weights.read_bytes()
    if bytes_sha256(data) != contract.weights_sha256:
        raise weights_mismatch_error(weights, CONTRACT_FILE, source)
    return data


def _check_tensor_names(tensors: Mapping[str, Any], contract: BundleContract, where: Path) -> None:
    """Every tensor the contract's architecture needs is present with the right shape.

    Extra tensors (pre-training heads) are allowed: they travel with the bundle and
    :func:`build_model` ignores them. The expected shapes come from a U-Net built on the
    ``meta`` device, which allocates no memory.
    """
    import torch

    from salign_cli.model.unet import UNet2D, UNetConfig

    try:
        config = UNetConfig.from_dict(contract.architecture)
    except (ValueError, TypeError) as error:
        raise InputError(f"{where / CONTRACT_FILE}: invalid architecture: {error}") from None
    with torch.device("meta"):
        expected = UNet2D(config).state_dict()
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

    from salign_cli.model.unet import UNet2D, UNetConfig

    try:
        config = UNetConfig.from_dict(contract.architecture)
    except (ValueError, TypeError) as error:
        raise InputError(f"{where / CONTRACT_FILE}: invalid architecture: {error}") from None
    with torch.device("meta"):
        count = sum(p.numel() for p in UNet2D(config).parameters())
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


def _check_preprocessing(contract: BundleContract, where: Path) -> None:
    from salign_cli.data.preprocess import PreprocessConfig

    try:
        PreprocessConfig.from_dict(contract.preprocessing)
    except (ValueError, TypeError, InputError) as error:
        raise InputError(f"{where / CONTRACT_FILE}: invalid preprocessing: {error}") from None


@dataclass(frozen=True)
class CardLicence:
    """A model card's licence in the Hub's terms: a Hub licence id (``cc-by-sa-4.0``), or
    ``other`` with a ``name`` (lowercase, dashes) and a ``link``, which the Hub requires for
    ``other``. ``ValueError`` when ``other`` lacks either."""

    license: str
    name: str | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        _require(
            self.license != "other" or bool(self.name and self.link),
            "license 'other' needs license_name and license_link",
        )


# salign cannot know the terms of the data a model was trained on; the weights inherit them. So
# a generated card says "other", names those terms, and links to its own licence section, which
# asks the publisher to state them.
UNSTATED_LICENCE = CardLicence("other", name="training-data-terms", link=CARD_FILE)
_UNSTATED_LICENCE_SECTION = (
    "## Licence\n\n"
    "The weights inherit the terms of the data they were trained on, which salign cannot know. "
    "Whoever publishes this bundle states them here (or uploads their own card with "
    "`salign weights push --card FILE`).\n"
)


@dataclass(frozen=True)
class CardDataset:
    """The data a model was trained and scored on: ``id`` (a Hub dataset id or a short slug; the
    card's ``datasets`` and its evaluation results' dataset type) and a readable ``name``."""

    id: str
    name: str


def _eval_results(contract: BundleContract, dataset: CardDataset | None) -> list[Any]:
    """The contract's per-class Dice as Hub evaluation results (the card's ``model-index``)."""
    from huggingface_hub import EvalResult

    evaluation = contract.evaluation or {}
    cases = evaluation.get("held_out_cases")
    where = dataset.name if dataset else "held-out cases"
    return [
        EvalResult(
            task_type="image-segmentation",
            dataset_type=dataset.id if dataset else "held-out",
            dataset_name=f"{where} ({cases} held-out cases)" if cases else where,
            metric_type="dice",
            metric_name=f"Dice {name}",
            metric_value=float(value),
        )
        for name, value in evaluation.get("per_class_dice", {}).items()
    ]


def render_card(
    contract: BundleContract,
    title: str = "salign bundle",
    *,
    licence: CardLicence = UNSTATED_LICENCE,
    dataset: CardDataset | None = None,
    sections: str = "",
) -> str:
    """A Hub model card (YAML metadata + Markdown) generated from the contract alone.

    The metadata is ``huggingface_hub``'s own ``ModelCardData``, so it is what the Hub parses:
    licence fields (:class:`CardLicence`; by default :data:`UNSTATED_LICENCE`), ``datasets``
    (from ``dataset``), and the contract's per-class Dice as ``model-index`` evaluation results.
    ``sections`` (Markdown) is appended, e.g. the data's attribution.

    Example::

        card = render_card(contract, "my model", licence=CardLicence("cc-by-sa-4.0"))
        ModelCard(card).data.license  # "cc-by-sa-4.0"
    """
    from huggingface_hub import ModelCard, ModelCardData

    dice = (contract.evaluation or {}).get("per_class_dice", {})
    modality_tag = "ct" if contract.modality == "CT" else "mri"
    metadata = ModelCardData(
        license=licence.license,
        license_name=licence.name,
        license_link=licence.link,
        library_name="salign",
        tags=["medical", "segmentation", modality_tag, "self-supervised"],
        base_model=contract.base_model,
        datasets=[dataset.id] if dataset else None,
        metrics=["dice"] if dice else None,
        pipeline_tag="image-segmentation",
        model_name=title,
        eval_results=_eval_results(contract, dataset) or None,
    )
    body = [
        f"# {title}",
        "",
        f"A {contract.kind} salign 2D U-Net for {contract.modality} "
        f"({contract.in_channels} input channel(s), {contract.num_classes} outputs).",
        "",
        "## Intended use",
        "",
        "Research, not a medical device. Not validated for diagnosis, treatment or any clinical "
        "decision.",
        "",
        "## Classes",
        "",
        *(f"- {label}: {name}" for label, name in contract.classes.items()),
        "",
    ]
    if dice:
        split = (contract.evaluation or {}).get("split")
        body += ["## Evaluation (Dice on held-out cases)", ""]
        body += [f"Split: {split}.", ""] if split else []
        body += ["| class | Dice |", "|---|---|"]
        body += [f"| {name} | {value:.3f} |" for name, value in dice.items()]
        body.append("")
    body += [
        "## Use",
        "",
        "    salign segment scan.nii.gz -o mask.nii.gz --model <this repo or folder>",
        "",
        "`salign.json` holds the full contract (architecture, preprocessing, provenance, the "
        "sha256 of `model.safetensors`); salign refuses weights that do not match it.",
        "",
    ]
    if licence == UNSTATED_LICENCE:
        body.append(_UNSTATED_LICENCE_SECTION)
    if sections:
        body.append(sections)
    # ModelCard parses what it is given: a card it cannot read would fail here, not on the Hub.
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(body)))


def write_card(folder: Path, title: str = "salign bundle", **options: Any) -> Path:
    """Rewrite only ``folder/README.md`` from the bundle's ``salign.json`` (atomically).

    For a card whose format or wording changed: the weights and contract stay as they are.
    ``options`` are :func:`render_card`'s keyword arguments.
    """
    path = Path(folder) / CARD_FILE
    card = render_card(read_contract(Path(folder)), title, **options)
    with atomic_path(path) as temporary:
        temporary.write_text(card, "utf-8")
    return path


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


def load_bundle(spec_or_folder: str | Path, report: Callable[[str], None] | None = None) -> Bundle:
    """Load a verified bundle from a folder, a registry name or ``org/name[@revision]``.

    Order of checks: contract (schema version, fields), sha256 of the weights, then tensor
    names and shapes against the architecture. Tensors are parsed by safetensors from the
    verified bytes; nothing is unpickled. ``report`` receives notes such as "network down,
    using the cached copy" (see :func:`salign_cli.hub.resolve`).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from salign_cli.hub import resolve

    if isinstance(spec_or_folder, Path):  # a Path is always a folder, never a Hub name
        if not spec_or_folder.is_dir():
            raise InputError(f"{spec_or_folder}: no such bundle folder")
        folder, source = spec_or_folder, None
    else:
        resolved = resolve(spec_or_folder, report=report)
        folder = resolved.folder
        source = None if resolved.source == "local" else spec_or_folder
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
    _check_preprocessing(contract, folder)
    return Bundle(folder=folder, contract=contract, state_dict=tensors)


def build_model(bundle: Bundle) -> UNet2D:
    """The U-Net the contract describes, with the bundle's weights (CPU, training mode).

    Call ``.eval()`` for inference and ``.to(device)`` as needed. Extra tensors in the bundle
    (pre-training heads) are not part of the U-Net and are left out.
    """
    from salign_cli.model.unet import UNet2D, UNetConfig

    model = UNet2D(UNetConfig.from_dict(bundle.contract.architecture))
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
        architecture=architecture.to_dict(),
        modality=modality,
        classes={str(index): name for index, name in enumerate(classes)},
        preprocessing=(preprocessing or PreprocessConfig(modality=modality)).to_dict(),  # type: ignore[arg-type]
        finetuning={"labelled_case_ids": [], **untrained} if kind == "finetuned" else None,
        pretraining={"method": "scratch", "steps": 0, **untrained}
        if kind == "pretrained"
        else None,
    )
    return save_bundle(folder, model.state_dict(), contract)
