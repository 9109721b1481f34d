"""The contract's sections are typed once, on load, and written back as they were read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salign_cli.bundles.contract import BundleContract
from salign_cli.bundles.files import read_contract
from salign_cli.data.preprocess import PreprocessConfig
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.model.unet import UNetConfig

SHIPPED = Path(__file__).resolve().parents[2] / "salign_cli" / "_weights" / "hippocampus"


def test_the_shipped_bundle_reads_into_typed_sections() -> None:
    contract = read_contract(SHIPPED)
    # values as written in salign_cli/_weights/hippocampus/salign.json
    assert contract.architecture == UNetConfig(in_channels=3, num_classes=3, width=16, depth=4)
    assert contract.preprocessing == PreprocessConfig(
        modality="MR", target_spacing_mm=(1.0, 1.0), context=1
    )
    assert contract.inference == InferenceDefaults(tta=True, mirror="lr", largest_component=False)
    recipe = contract.recipe
    assert recipe is not None and (recipe.profile, recipe.width, recipe.steps) == ("cpu", 16, 2500)


def test_a_contract_writes_back_the_json_it_was_read_from() -> None:
    payload = json.loads((SHIPPED / "salign.json").read_text())
    assert json.loads(json.dumps(BundleContract.from_dict(payload).to_dict())) == payload


def test_an_early_contract_without_inference_or_context_still_loads() -> None:
    early = {
        "schema_version": 1,
        "salign_version": "0.1.0",
        "kind": "pretrained",
        "architecture": {"in_channels": 1, "num_classes": 2, "width": 8, "depth": 2},
        "modality": "CT",
        "classes": {"0": "background"},
        "preprocessing": {"slice_axis": 2, "target_spacing_mm": [0.8, 0.8]},  # no modality
        "pretraining": {"method": "SAL", "steps": 5},
    }
    contract = BundleContract.from_dict(early)
    assert contract.preprocessing.modality == "CT" and contract.preprocessing.context == 0
    assert contract.inference is None and contract.inference_defaults == InferenceDefaults()
    assert contract.recipe is None and contract.architecture.norm == "batch"


def test_a_malformed_section_is_a_value_error_naming_it() -> None:
    payload = json.loads((SHIPPED / "salign.json").read_text())
    with pytest.raises(ValueError, match=r"invalid preprocessing: .*slice axis must be 0, 1 or 2"):
        BundleContract.from_dict({**payload, "preprocessing": {"modality": "MR", "slice_axis": 5}})
    with pytest.raises(ValueError, match=r"invalid architecture: .*norm"):
        BundleContract.from_dict(
            {**payload, "architecture": {**payload["architecture"], "norm": "x"}}
        )
