"""Security: no pickle is ever loaded, nothing leaves the machine without a Hub id, a tampered
bundle is refused, and paths written in a dataset or a bundle cannot reach outside their folder."""

from __future__ import annotations

import json
import pickle
import shutil
import socket

import pytest
from corpus import good_image, good_label, write_dataset
from nifti import write_nifti

from salign_cli.data.index import load_index

TRAIN = ("--size", "16", "--width", "4", "--device", "cpu", "--batch-size", "2", "-q")


@pytest.fixture
def no_pickle_no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every unpickling entry point and every socket connection or name lookup raises; the
    attempts are also recorded, so a caller that swallows the error is still caught."""
    import torch

    attempts: list[str] = []

    def refuse(what: str):
        def refused(*args, **kwargs):
            attempts.append(what)
            raise AssertionError(f"{what} called during the pipeline")

        return refused

    for name in ("load", "loads"):  # (Unpickler stays: libraries subclass it at import time)
        monkeypatch.setattr(pickle, name, refuse(f"pickle.{name}"))
    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    return attempts


@pytest.mark.slow
def test_the_whole_pipeline_loads_no_pickle_and_opens_no_socket(
    cli, tmp_path, no_pickle_no_network
):
    data = write_dataset(tmp_path / "dataset", cases=3)
    workspace = ("-w", str(tmp_path / "ws"))
    assert cli("index", str(data), *workspace).exit_code == 0
    pretrained = cli("pretrain", str(data), "--steps", "2", *TRAIN, *workspace)
    assert pretrained.exit_code == 0, pretrained.output
    resumed = cli("pretrain", "--resume", *workspace, "-q")  # reads a checkpoint back
    assert resumed.exit_code == 0, resumed.output
    finetuned = cli("finetune", "--labels", "1", "--steps", "2", *TRAIN, *workspace)
    assert finetuned.exit_code == 0, finetuned.output
    masks = tmp_path / "masks"
    segmented = cli(
        "segment", str(data / "imagesTr"), "-o", str(masks), "--device", "cpu", *workspace
    )
    assert segmented.exit_code == 0, segmented.output
    evaluated = cli("evaluate", str(masks), str(data / "labelsTr"))
    assert evaluated.exit_code == 0, evaluated.output
    assert no_pickle_no_network == []


def test_a_bundle_whose_weights_do_not_match_its_hash_is_refused(cli, tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "tampered")
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    scan = write_nifti(tmp_path / "scan.nii.gz", good_image(0))

    result = cli("segment", str(scan), "--model", str(bundle), "--device", "cpu")

    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert str(weights) in line and "sha256" in line
    assert not (tmp_path / "scan_seg.nii.gz").exists()


def test_paths_in_dataset_json_cannot_reach_outside_the_dataset(cli, tmp_path):
    outside = tmp_path / "outside"
    write_nifti(outside / "secret.nii.gz", good_image(9))
    write_nifti(outside / "secret_label.nii.gz", good_label())
    data = write_dataset(tmp_path / "inside")
    payload = json.loads((data / "dataset.json").read_text())
    payload["training"] = [
        {"image": "../../outside/secret.nii.gz", "label": "../../outside/secret_label.nii.gz"}
    ]
    (data / "dataset.json").write_text(json.dumps(payload))

    result = cli("index", str(data), "-w", str(tmp_path / "ws"))

    assert result.exit_code == 0, result.output
    records = load_index(tmp_path / "ws")
    assert records and all(record.image_path.is_relative_to(data) for record in records)
    assert all(record.label_path.is_relative_to(data) for record in records)


def test_paths_in_a_bundle_contract_are_never_followed(cli, tiny_bundle, tmp_path):
    """A bundle's files have fixed names; a contract that names another file is refused."""
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    (tmp_path / "evil.safetensors").write_bytes(b"not weights")
    contract = json.loads((bundle / "salign.json").read_text())
    contract["weights_file"] = "../evil.safetensors"
    (bundle / "salign.json").write_text(json.dumps(contract))
    scan = write_nifti(tmp_path / "scan.nii.gz", good_image(0))

    result = cli("segment", str(scan), "--model", str(bundle), "--device", "cpu")

    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert str(bundle / "salign.json") in line and "unknown keys ['weights_file']" in line
    assert not (tmp_path / "scan_seg.nii.gz").exists()
