"""`salign_cli.data.dataset_json`: the MSD and nnU-Net v2 layouts give the same facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salign_cli.data.dataset_json import find_dataset_json, read_dataset_json
from salign_cli.errors import InputError


def test_msd_hippocampus_dataset_json(hippocampus_dir: Path) -> None:
    info = read_dataset_json(hippocampus_dir)
    assert info.root == hippocampus_dir
    assert info.name == "Hippocampus"
    assert info.modality == "MR"  # "modality": {"0": "MRI"}
    assert info.label_names == {0: "background", 1: "Anterior", 2: "Posterior"}


def test_nnunet_v2_dataset_json_maps_names_to_values_and_skips_regions(tmp_path: Path) -> None:
    payload = {
        "name": "Dataset042_Liver",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumour": 2, "whole": [1, 2], "flag": True},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(payload))
    info = read_dataset_json(tmp_path)
    assert info.name == "Dataset042_Liver"
    assert info.modality == "CT"
    assert info.label_names == {0: "background", 1: "liver", 2: "tumour"}  # no region, no bool


@pytest.mark.parametrize(
    ("channel", "modality"), [("CT", "CT"), ("ct scan", "CT"), ("T2", "MR"), ("abdominal CT", "CT")]
)
def test_modality_is_ct_only_when_the_word_ct_appears(
    tmp_path: Path, channel: str, modality: str
) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": channel}}))
    assert read_dataset_json(tmp_path).modality == modality


def test_a_dataset_json_that_says_nothing_gives_nones(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("{}")
    info = read_dataset_json(tmp_path)
    assert (info.name, info.modality, info.label_names) == (None, None, None)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_an_unreadable_dataset_json_is_one_input_error_naming_the_file(
    tmp_path: Path, text: str
) -> None:
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(
        InputError, match=r"dataset\.json: cannot read dataset\.json .*fix the JSON"
    ):
        read_dataset_json(tmp_path)


def test_find_dataset_json_looks_beside_then_one_level_above_the_labels(tmp_path: Path) -> None:
    labels = tmp_path / "Task" / "labelsTr"
    labels.mkdir(parents=True)
    (labels / "a.nii.gz").write_bytes(b"")
    assert find_dataset_json(labels) is None
    (tmp_path / "Task" / "dataset.json").write_text("{}")
    assert find_dataset_json(labels) == tmp_path / "Task"
    assert find_dataset_json(labels / "a.nii.gz") == tmp_path / "Task"
    (labels / "dataset.json").write_text("{}")
    assert find_dataset_json(labels) == labels
