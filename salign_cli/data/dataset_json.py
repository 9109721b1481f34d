"""The one reader of a dataset's ``dataset.json`` (Medical Segmentation Decathlon or nnU-Net v2).

The two layouts say the same things differently:

- MSD: ``"modality": {"0": "MRI"}`` and ``"labels": {"0": "background", "1": "Anterior"}``;
- nnU-Net v2: ``"channel_names": {"0": "CT"}`` and ``"labels": {"background": 0, "liver": 1}``
  (region entries, whose values are lists, are skipped: salign trains one class per value).

The index stores what it says per dataset folder; ``salign evaluate`` names classes with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salign_cli.errors import InputError
from salign_cli.io.modality import Modality

DATASET_JSON = "dataset.json"


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset folder's ``dataset.json`` says; ``None`` where it says nothing."""

    root: Path
    name: str | None = None
    modality: Modality | None = None
    label_names: Mapping[int, str] | None = None  # class value -> name, e.g. {0: "background"}


def read_dataset_json(root: Path) -> DatasetInfo:
    """Name, modality (of channel 0) and label names from ``root/dataset.json``.

    Raises :class:`InputError` naming the file when it cannot be read or is not a JSON object.
    Example: for the MSD hippocampus folder, ``label_names == {0: "background", 1: "Anterior",
    2: "Posterior"}`` and ``modality == "MR"``.
    """
    path = root / DATASET_JSON
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(
            f"{path}: cannot read dataset.json ({reason}); fix the JSON or remove the file"
        ) from None
    channels = payload.get("modality") or payload.get("channel_names") or {}
    first_channel = channels.get("0") if isinstance(channels, dict) else None
    name = payload.get("name")
    return DatasetInfo(
        root=root,
        name=str(name) if name else None,
        modality=_modality_from_text(str(first_channel)) if first_channel else None,
        label_names=_label_names(payload.get("labels")) or None,
    )


def find_dataset_json(labels: Path) -> Path | None:
    """The folder whose ``dataset.json`` describes ``labels`` (a label file or folder): the
    labels' folder or the one above it (MSD ``labelsTr/``), else ``None``."""
    folder = labels if labels.is_dir() else labels.parent
    for candidate in (folder, folder.parent):
        if (candidate / DATASET_JSON).is_file():
            return candidate
    return None


def _label_names(declared: Any) -> dict[int, str]:
    names: dict[int, str] = {}
    for key, value in (declared if isinstance(declared, dict) else {}).items():
        if isinstance(value, str) and str(key).lstrip("-").isdigit():  # MSD: "1": "Anterior"
            names[int(key)] = value
        elif isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: "Anterior": 1
            names[value] = str(key)
    return dict(sorted(names.items()))


def _modality_from_text(text: str) -> Modality:
    """MSD writes "CT", "MRI", "T2", "FLAIR"...: CT when the word CT appears, else MR."""
    return "CT" if re.search(r"\bCT\b", text, re.IGNORECASE) else "MR"
