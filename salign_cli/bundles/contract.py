"""The bundle contract: ``salign.json`` as a typed, validated dataclass.

``salign.json`` says everything inference needs (architecture, classes, modality, preprocessing,
inference defaults) and where the weights came from (pre-training and fine-tuning provenance,
evaluation), and pins the weights by sha256. Its sections are parsed once, here, into the
classes the rest of salign uses (`UNetConfig`, `PreprocessConfig`, `InferenceDefaults`,
`FinetuneRecipe`), so no caller re-reads a dictionary. The JSON layout is unchanged since
schema version 1, so every bundle written before still loads.

The config classes live beside the tensor code that uses them, so parsing a contract imports
torch; the limits here do not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from salign_cli import __version__
from salign_cli.bundles.registry import SHA256_PATTERN
from salign_cli.infer.defaults import LEGACY, InferenceDefaults
from salign_cli.io.modality import MODALITIES

if TYPE_CHECKING:
    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.model.unet import UNetConfig
    from salign_cli.train.recipe import FinetuneRecipe

SCHEMA_VERSION = 1
KINDS = ("pretrained", "finetuned")
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


def _check_limits(architecture: Mapping[str, Any]) -> None:
    """The architecture's sizes against `LIMITS`, on the raw JSON before a config is built."""
    for key in ("in_channels", "num_classes"):
        value = architecture.get(key)
        _require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"architecture.{key} must be a positive integer, got {value!r}",
        )
    for key in ("width", "depth", "max_channels", "num_classes", "in_channels"):
        value = architecture.get(key)
        _require(
            not isinstance(value, (int, float)) or value <= LIMITS[key],
            f"architecture.{key} = {value!r} exceeds salign's limit of {LIMITS[key]} "
            "(a hostile or corrupt bundle)",
        )


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


def _section_error(name: str, error: Exception) -> ValueError:
    return ValueError(f"invalid {name}: {error}")


def _architecture_from(payload: Any) -> UNetConfig:
    from salign_cli.model.unet import UNetConfig

    _require(isinstance(payload, dict), "architecture must be an object")
    _check_limits(payload)
    try:
        return UNetConfig.from_dict(payload)
    except (ValueError, TypeError) as error:
        raise _section_error("architecture", error) from None


def _preprocessing_from(payload: Any, modality: str) -> PreprocessConfig:
    """``modality`` fills a section that omits its own (as early bundles may)."""
    from salign_cli.data.preprocess import PreprocessConfig
    from salign_cli.errors import InputError

    _require(isinstance(payload, dict), "preprocessing must be an object")
    try:
        return PreprocessConfig.from_dict({"modality": modality, **payload})
    except (ValueError, TypeError, LookupError, InputError) as error:
        raise _section_error("preprocessing", error) from None


@dataclass(frozen=True)
class BundleContract:
    """The ``salign.json`` of a bundle; validated on construction (``ValueError`` on violation).

    - ``architecture``: the U-Net (`UNetConfig`) the weights fit.
    - ``classes``: ``{"0": "background", "1": "anterior", ...}`` (ids as strings, JSON keys).
    - ``preprocessing``: how scans become network input (`PreprocessConfig`); its modality must
      equal ``modality`` and its ``context`` the architecture's input channels.
    - ``pretraining``: required for ``kind="pretrained"``: ``method``, ``steps`` (plus e.g.
      ``data`` summary, ``base_model``). ``finetuning``: required for ``kind="finetuned"``:
      ``labelled_case_ids``, ``seed`` (plus e.g. ``base_model``, the ``recipe``).
    - ``evaluation``: e.g. ``{"per_class_dice": {"anterior": 0.87}, "held_out_cases": 40}``.
    - ``inference``: what ``salign segment`` applies unless told otherwise; ``None`` in bundles
      older than it (`inference_defaults` is then `LEGACY`).
    - ``weights_sha256``: hex sha256 of ``model.safetensors``; ``None`` only before
      ``save_bundle`` fills it in.
    """

    kind: str
    architecture: UNetConfig
    modality: str
    classes: dict[str, str]
    preprocessing: PreprocessConfig
    pretraining: dict[str, Any] | None = None
    finetuning: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    inference: InferenceDefaults | None = None
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
        _check_limits(self.architecture.to_dict())
        _check_classes(self.classes, self.num_classes, self.kind)
        _require(
            self.preprocessing.modality == self.modality,
            f"preprocessing.modality {self.preprocessing.modality!r} differs from "
            f"modality {self.modality!r}",
        )
        for name in ("pretraining", "finetuning"):
            value = getattr(self, name)
            _require(value is None or isinstance(value, dict), f"{name} must be an object or null")
        section, keys = _REQUIRED_PROVENANCE[self.kind]
        missing = [k for k in keys if k not in (getattr(self, section) or {})]
        _require(not missing, f"a {self.kind} bundle needs {section} with {missing}")
        _check_evaluation(self.evaluation)
        context = self.preprocessing.context
        _require(
            self.in_channels == 2 * context + 1,
            f"architecture.in_channels {self.in_channels} does not match preprocessing.context "
            f"{context} (expected {2 * context + 1}: the slice and {context} neighbours per side)",
        )
        _require(
            self.weights_sha256 is None
            or (
                isinstance(self.weights_sha256, str)
                and bool(SHA256_PATTERN.fullmatch(self.weights_sha256))
            ),
            "weights_sha256 must be 64 lowercase hex digits",
        )

    @property
    def inference_defaults(self) -> InferenceDefaults:
        """The ``inference`` section, or `LEGACY` (what segment did before it existed)."""
        return self.inference or LEGACY

    @property
    def in_channels(self) -> int:
        return self.architecture.in_channels

    @property
    def num_classes(self) -> int:
        return self.architecture.num_classes

    @property
    def class_names(self) -> list[str]:
        """Names in id order: ``class_names[label_value]``."""
        return [self.classes[str(i)] for i in range(len(self.classes))]

    @property
    def recipe(self) -> FinetuneRecipe | None:
        """How a fine-tuned bundle was trained (``finetuning.recipe``); ``None`` when absent.

        Parsed when asked, not on load: a recipe is provenance, and one written by an older
        salign must not stop its weights from loading. ``ValueError`` when it is malformed.
        """
        from salign_cli.errors import InputError
        from salign_cli.train.recipe import FinetuneRecipe

        payload = (self.finetuning or {}).get("recipe")
        if payload is None:
            return None
        try:
            return FinetuneRecipe.from_dict(payload)
        except (TypeError, LookupError, InputError) as error:
            raise _section_error("finetuning.recipe", error) from None

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
        return {
            "schema_version": self.schema_version,
            "salign_version": self.salign_version,
            "kind": self.kind,
            "architecture": self.architecture.to_dict(),
            "modality": self.modality,
            "classes": dict(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "pretraining": self.pretraining,
            "finetuning": self.finetuning,
            "evaluation": self.evaluation,
            "inference": None if self.inference is None else self.inference.to_dict(),
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> BundleContract:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys and malformed sections
        are a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - known)
        _require(not unknown, f"unknown keys {unknown}")
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in payload
        )
        _require(not missing, f"missing keys {missing}")
        inference = payload.get("inference")
        return cls(
            **{
                **payload,
                "architecture": _architecture_from(payload["architecture"]),
                "preprocessing": _preprocessing_from(payload["preprocessing"], payload["modality"]),
                "inference": None if inference is None else InferenceDefaults.from_dict(inference),
            }
        )
