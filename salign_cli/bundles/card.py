"""A bundle's model card (``README.md``), generated from its contract in the Hub's own format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salign_cli.bundles.contract import BundleContract
from salign_cli.bundles.files import read_contract
from salign_cli.bundles.layout import CARD_FILE
from salign_cli.io.atomic import atomic_path


@dataclass(frozen=True)
class CardLicence:
    """A model card's licence in the Hub's terms: a Hub licence id (``cc-by-sa-4.0``), or
    ``other`` with a ``name`` (lowercase, dashes) and a ``link``, which the Hub requires for
    ``other``. ``ValueError`` when ``other`` lacks either."""

    license: str
    name: str | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        if self.license == "other" and not (self.name and self.link):
            raise ValueError("license 'other' needs license_name and license_link")


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
