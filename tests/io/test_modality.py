"""`salign_cli.io.modality`: the one list of modalities and how text maps onto it."""

from __future__ import annotations

import pytest

from salign_cli.io.modality import MODALITIES, parse_modality


@pytest.mark.parametrize(("text", "expected"), [("CT", "CT"), ("ct", "CT"), ("Mr", "MR")])
def test_parse_modality_ignores_case(text: str, expected: str) -> None:
    assert parse_modality(text) == expected


@pytest.mark.parametrize("text", ["PT", "MRI", "", " CT"])
def test_parse_modality_refuses_anything_else(text: str) -> None:
    assert parse_modality(text) is None


def test_the_modalities_are_ct_and_mr() -> None:
    assert MODALITIES == ("CT", "MR")
