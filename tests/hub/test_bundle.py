"""Bundles: what save_bundle writes, and what load_bundle refuses (never unpickling anything)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from salign_cli.bundles.card import CardDataset, CardLicence, write_card
from salign_cli.bundles.contract import BundleContract
from salign_cli.bundles.files import read_contract
from salign_cli.bundles.store import build_model, load_bundle, save_bundle
from salign_cli.errors import InputError, SalignError
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.model.unet import UNet2D, UNetConfig


def _contract(**changes: object) -> BundleContract:
    """A contract parsed from ``salign.json``-shaped sections, as it enters from a file."""
    base = {
        "kind": "finetuned",
        "architecture": UNetConfig(num_classes=2, width=8, depth=2).to_dict(),
        "modality": "CT",
        "classes": {"0": "background", "1": "liver"},
        "preprocessing": {"modality": "CT", "slice_axis": 2, "target_spacing_mm": [1.0, 1.0]},
        "finetuning": {"labelled_case_ids": ["case_01"], "seed": 7},
    }
    return BundleContract.from_dict({**base, **changes})


def test_save_writes_weights_hash_contract_and_card(tiny_bundle: Path) -> None:
    payload = json.loads((tiny_bundle / "salign.json").read_text())
    # The hash is the plain sha256 of the file's bytes, computed here independently.
    expected = hashlib.sha256((tiny_bundle / "model.safetensors").read_bytes()).hexdigest()
    assert payload["weights_sha256"] == expected
    assert payload["schema_version"] == 1
    assert list(payload)[:3] == ["schema_version", "salign_version", "kind"]
    assert payload["classes"] == {"0": "background", "1": "anterior", "2": "posterior"}
    assert payload["finetuning"] == {"labelled_case_ids": ["hippocampus_001"], "seed": 0}
    card = (tiny_bundle / "README.md").read_text()
    metadata = ModelCard.load(tiny_bundle / "README.md").data
    assert metadata.library_name == "salign"
    assert metadata.tags == ["medical", "segmentation", "mri", "self-supervised"]
    assert metadata.metrics == ["dice"]
    assert "not a medical device" in card
    assert "| anterior | 0.500 |" in card


def test_a_generated_card_states_an_unknown_licence_the_way_the_hub_accepts(
    tiny_bundle: Path,
) -> None:
    # The Hub requires license_name and license_link with "other"; the link is the card itself,
    # whose licence section asks the publisher to state the training data's terms.
    metadata = ModelCard.load(tiny_bundle / "README.md").data
    assert (metadata.license, metadata.license_name, metadata.license_link) == (
        "other",
        "training-data-terms",
        "README.md",
    )
    assert "## Licence" in (tiny_bundle / "README.md").read_text()
    with pytest.raises(ValueError, match="license_name"):
        CardLicence("other")


def test_card_eval_results_hold_the_contract_dice(tiny_bundle: Path) -> None:
    write_card(
        tiny_bundle,
        "tiny",
        licence=CardLicence("cc-by-sa-4.0"),
        dataset=CardDataset("msd-task04-hippocampus", "MSD Task04 Hippocampus"),
        sections="## Training data\n\nA line of attribution.\n",
    )
    card = ModelCard.load(tiny_bundle / "README.md")
    assert card.data.license == "cc-by-sa-4.0" and card.data.license_name is None
    assert card.data.datasets == ["msd-task04-hippocampus"]
    assert card.data.model_name == "tiny"
    # written by write_tiny_bundle: {"anterior": 0.5, "posterior": 0.25}
    dice = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert dice == {"Dice anterior": 0.5, "Dice posterior": 0.25}
    assert {(r.metric_type, r.task_type, r.dataset_type) for r in card.data.eval_results} == {
        ("dice", "image-segmentation", "msd-task04-hippocampus")
    }
    assert "A line of attribution." in card.text and "## Licence" not in card.text
    # only the card was rewritten: the weights still match the contract
    load_bundle(tiny_bundle)


def test_a_card_without_evaluation_has_no_eval_results(tmp_path: Path) -> None:
    folder = save_bundle(
        tmp_path / "b",
        UNet2D(UNetConfig(num_classes=2, width=8, depth=2)).state_dict(),
        _contract(),
    )
    metadata = ModelCard.load(folder / "README.md").data
    assert metadata.eval_results is None and metadata.metrics is None
    assert metadata.datasets is None


def test_round_trip_gives_identical_tensors_and_logits(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = UNet2D(UNetConfig(num_classes=2, width=8, depth=2)).eval()
    save_bundle(tmp_path / "b", model.state_dict(), _contract())
    bundle = load_bundle(tmp_path / "b")
    assert bundle.contract == dataclasses.replace(
        _contract(), weights_sha256=bundle.contract.weights_sha256
    )
    for name, tensor in model.state_dict().items():
        assert torch.equal(bundle.state_dict[name], tensor)
    rebuilt = build_model(bundle).eval()
    image = torch.randn(1, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(rebuilt(image), model(image))


def test_tampered_weights_are_refused(tiny_bundle: Path) -> None:
    weights = tiny_bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"do not match the sha256 in salign\.json.*tampered"):
        load_bundle(tiny_bundle)


def test_newer_schema_asks_to_upgrade(tiny_bundle: Path) -> None:
    path = tiny_bundle / "salign.json"
    payload = json.loads(path.read_text())
    path.write_text(json.dumps({**payload, "schema_version": 2, "salign_version": "9.0"}))
    with pytest.raises(SalignError, match=r"schema version 2 .*salign 9\.0.*upgrade salign"):
        read_contract(tiny_bundle)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: {**p, "colour": "red"}, r"unknown keys \['colour'\]"),
        (lambda p: {k: v for k, v in p.items() if k != "classes"}, r"missing keys \['classes'\]"),
        (lambda p: {**p, "modality": "PET"}, "modality must be one of"),
    ],
)
def test_bad_contract_names_the_file(tiny_bundle: Path, edit, message: str) -> None:
    path = tiny_bundle / "salign.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(InputError, match=message) as caught:
        read_contract(tiny_bundle)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": {"0": "background", "2": "liver"}}, "without gaps"),
        ({"classes": {"0": "background"}}, "names every output"),
        ({"classes": {"0": "a", "1": "a"}}, "unique"),
        ({"preprocessing": {"modality": "MR"}}, "differs from modality"),
        ({"finetuning": None}, "needs finetuning"),
        ({"kind": "pretrained", "finetuning": None}, "needs pretraining"),
        ({"evaluation": {"per_class_dice": {"liver": 1.5}}}, r"in \[0, 1\]"),
        ({"weights_sha256": "abc"}, "64 lowercase hex"),
        ({"inference": {"tta": "yes"}}, "true or false"),
        ({"inference": {"mirror": "diagonal"}}, "inference.mirror"),
        ({"inference": {"sharpen": True}}, "unknown inference key"),
        ({"preprocessing": {"modality": "CT", "context": 1}}, "does not match preprocessing"),
    ],
)
def test_contract_validation(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _contract(**changes)


def test_inference_defaults_default_to_what_older_bundles_did() -> None:
    contract = _contract()  # no inference section, as every bundle before it
    assert contract.inference_defaults == InferenceDefaults(
        tta=False, mirror="all", largest_component=False
    )
    chosen = {"tta": True, "mirror": "lr", "largest_component": True}
    assert _contract(inference=chosen).inference_defaults.to_dict() == chosen


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    wider = UNet2D(UNetConfig(num_classes=2, width=16, depth=2)).state_dict()
    with pytest.raises(InputError, match="do not fit the architecture"):
        save_bundle(tmp_path / "b", wider, _contract())
    assert not (tmp_path / "b" / "model.safetensors").exists()


def test_edited_architecture_is_refused_on_load(tiny_bundle: Path) -> None:
    path = tiny_bundle / "salign.json"
    payload = json.loads(path.read_text())
    payload["architecture"]["width"] = 16  # the contract no longer describes the weights
    path.write_text(json.dumps(payload))
    with pytest.raises(InputError, match=r"do not fit the architecture.*with the wrong shape"):
        load_bundle(tiny_bundle)


class _Exploit:
    """Unpickling this creates a file: proof that a loader unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mknod, (str(self.marker),))


def test_a_pickle_disguised_as_weights_is_never_unpickled(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    weights = tiny_bundle / "model.safetensors"
    weights.write_bytes(pickle.dumps(_Exploit(marker)))
    path = tiny_bundle / "salign.json"
    payload = json.loads(path.read_text())
    payload["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    path.write_text(json.dumps(payload))
    # refused at the header-length check, or by safetensors' parser; never unpickled
    with pytest.raises(InputError, match="safetensors"):
        load_bundle(tiny_bundle)
    assert not marker.exists()


def test_a_missing_folder_path_is_never_taken_for_a_hub_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such bundle folder"):
        load_bundle(tmp_path / "org" / "name")


def test_an_untrained_bundle_loads_and_says_it_was_never_trained(tmp_path: Path) -> None:
    from salign_cli.bundles.store import build_model, load_bundle, untrained_bundle

    folder = untrained_bundle(tmp_path / "b", ("background", "organ"), modality="CT")
    bundle = load_bundle(folder)
    assert bundle.contract.kind == "finetuned" and bundle.contract.modality == "CT"
    assert "never trained" in bundle.contract.finetuning["note"]
    assert build_model(bundle).config.num_classes == 2


# ---------------------------------------------------------------------------------------------
# hostile bundles: refused before anything is allocated, each with one line naming the file


def _edit_contract(folder: Path, **changes: object) -> None:
    path = folder / "salign.json"
    payload = json.loads(path.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            payload[section][field] = value
        else:
            payload[section] = value
    path.write_text(json.dumps(payload))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture__width": 10**6}, "architecture.width = 1000000 exceeds"),
        ({"architecture__depth": 40}, "architecture.depth = 40 exceeds"),
        ({"architecture__num_classes": 10**7}, "num_classes = 10000000 exceeds"),
        ({"architecture__in_channels": 999}, "in_channels = 999 exceeds"),
    ],
)
def test_absurd_architectures_are_refused_from_the_contract(
    tiny_bundle: Path, changes: dict, message: str
) -> None:
    _edit_contract(tiny_bundle, **changes)
    with pytest.raises(InputError, match=message) as caught:
        load_bundle(tiny_bundle)
    assert "\n" not in str(caught.value) and "salign.json" in str(caught.value)


def test_an_architecture_within_each_limit_but_huge_overall_is_refused(tiny_bundle: Path) -> None:
    # every field under its limit, yet billions of weights: counted on the meta device
    _edit_contract(
        tiny_bundle, architecture__width=512, architecture__depth=8, architecture__max_channels=4096
    )
    with pytest.raises(InputError, match="weights, over salign's limit"):
        load_bundle(tiny_bundle)


def test_a_safetensors_header_longer_than_its_file_is_refused(tiny_bundle: Path) -> None:
    weights = tiny_bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")  # a header "length" of a terabyte
    weights.write_bytes(bytes(data))
    _edit_contract(tiny_bundle, weights_sha256=hashlib.sha256(bytes(data)).hexdigest())
    with pytest.raises(InputError, match="header claims 1,099,511,627,776 bytes"):
        load_bundle(tiny_bundle)


def test_symbolic_links_in_a_bundle_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.safetensors"
    (tiny_bundle / "model.safetensors").rename(elsewhere)
    (tiny_bundle / "model.safetensors").symlink_to(elsewhere)
    with pytest.raises(InputError, match="a symbolic link"):
        load_bundle(tiny_bundle)


def test_a_hub_snapshot_may_link_to_its_blobs_but_not_out_of_its_repository(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "hf-cache" / "models--org--name"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for entry in tiny_bundle.iterdir():  # laid out as huggingface_hub does: links into blobs/
        blob = repo / "blobs" / entry.name
        entry.rename(blob)
        (snapshot / entry.name).symlink_to(Path("../..") / "blobs" / entry.name)
    assert load_bundle(snapshot).contract.num_classes == 3
    outside = tmp_path / "outside.safetensors"
    (repo / "blobs" / "model.safetensors").rename(outside)
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(outside)
    with pytest.raises(InputError, match="a symbolic link out of the bundle"):
        load_bundle(snapshot)


def test_an_oversized_contract_is_refused_before_it_is_read(tiny_bundle: Path) -> None:
    path = tiny_bundle / "salign.json"
    path.write_text(path.read_text() + " " * (2 << 20))  # still valid JSON, but 2 MiB
    with pytest.raises(InputError, match="over salign's limit"):
        load_bundle(tiny_bundle)
