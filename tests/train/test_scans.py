"""Which scans a run uses: seeded, nested case selection, class names, labelled scans found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from salign_cli.data.synthetic import write_dataset
from salign_cli.errors import InputError
from salign_cli.train.scans import (
    class_names_for,
    resolve_labelled_cases,
    resolve_scans,
    resolve_unlabelled_scans,
    seeded_order,
    split_cases,
)
from salign_cli.workspace import Workspace


def test_given_cases_are_labelled_and_the_rest_validate() -> None:
    assert split_cases(["c", "a", "b", "d"], chosen=["d", "a"]) == (["a", "d"], ["b", "c"])


def test_seeded_selection_is_nested_and_reproducible() -> None:
    ids = [f"case_{i:03d}" for i in range(20)]
    one, _ = split_cases(ids, labels=1, seed=3)
    five, rest = split_cases(ids, labels=5, seed=3)
    assert set(one) <= set(five)  # N = 1 is among N = 5 for the same seed
    assert len(five) == 5 and len(rest) == 15 and not set(five) & set(rest)
    assert split_cases(list(reversed(ids)), labels=5, seed=3)[0] == five  # order of input is moot
    # The rule, stated independently: sorted ids permuted by numpy's seeded generator.
    permutation = np.random.default_rng(3).permutation(20)
    assert five == sorted(sorted(ids)[i] for i in permutation[:5])
    assert seeded_order(ids, 3)[0] == one[0]


def test_selection_errors_name_the_problem() -> None:
    with pytest.raises(InputError, match="zzz"):
        split_cases(["a", "b"], chosen=["zzz"])
    with pytest.raises(InputError, match="only 2 labelled"):
        split_cases(["a", "b"], labels=3)


def test_class_names_come_from_dataset_json_else_numbers() -> None:
    assert class_names_for([0, 1, 2], {0: "background", 1: "Anterior", 2: "Posterior"}) == {
        0: "background",
        1: "Anterior",
        2: "Posterior",
    }
    assert class_names_for([0, 3], {}) == {
        0: "background",
        1: "class_1",
        2: "class_2",
        3: "class_3",
    }
    with pytest.raises(InputError, match="only background"):
        class_names_for([0], {})


def test_a_data_folder_given_through_dot_dot_finds_its_labelled_scans(tmp_path: Path) -> None:
    synthetic = write_dataset(tmp_path / "data", cases=2, test_cases=0)
    (synthetic.parent / "elsewhere").mkdir(exist_ok=True)
    roundabout = synthetic.parent / "elsewhere" / ".." / synthetic.name
    cases, _ = resolve_labelled_cases([roundabout], Workspace(tmp_path / "ws").ensure())
    assert len(cases) == len(list((synthetic / "labelsTr").glob("*.nii.gz")))


def _linked_copy(source: Path, target: Path) -> Path:
    """``target`` mirrors ``source``'s tree with a symlink per file (how researchers share data)."""
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return target


def test_a_folder_of_linked_scans_is_a_folder_of_scans(tmp_path: Path) -> None:
    # Issue 24, bug 1: the index kept the links' targets, the check compared them with the
    # folder of links, and `salign pretrain DIR` said "no readable scan found".
    synthetic = write_dataset(tmp_path / "data", cases=2, test_cases=0)
    linked = _linked_copy(synthetic, tmp_path / "linked")
    workspace = Workspace(tmp_path / "ws").ensure()
    scans = resolve_scans([linked], workspace)
    assert len(scans) == 2
    assert all(Path(scan.image_path).parent == linked.resolve() / "imagesTr" for scan in scans)


def test_linked_labelled_scans_serve_as_labelled_and_unlabelled(tmp_path: Path) -> None:
    # Bug 1, second half: `salign finetune --data DIR` with linked files failed in its
    # semi-supervised step, which looks the folder's scans up in the index again.
    synthetic = write_dataset(tmp_path / "data", cases=3, test_cases=0)
    linked = _linked_copy(synthetic, tmp_path / "linked")
    workspace = Workspace(tmp_path / "ws").ensure()
    cases, _ = resolve_labelled_cases([linked], workspace)
    assert len(cases) == 3
    unlabelled = resolve_unlabelled_scans(
        "auto", [linked], workspace, held_back={cases[0].case_id}, modality="MR"
    )
    assert sorted(scan.case_id for scan in unlabelled) == sorted(c.case_id for c in cases[1:])
