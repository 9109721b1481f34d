"""`open_bundle`: the one way a model name (or none) becomes a bundle folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from salign_cli.bundles.layout import bundle_folder_in
from salign_cli.bundles.resolve import open_bundle
from salign_cli.bundles.store import load_bundle
from salign_cli.errors import InputError
from salign_cli.workspace import Workspace


def test_a_run_folder_stands_for_its_bundle(tmp_path: Path, make_bundle) -> None:
    run = tmp_path / "runs" / "finetune-1"
    shutil.copytree(make_bundle(), run / "bundle")
    assert bundle_folder_in(run) == run / "bundle"
    assert bundle_folder_in(run / "bundle") == run / "bundle"
    assert bundle_folder_in(tmp_path) is None  # no salign.json here or in bundle/


def test_no_spec_means_the_newest_finished_run_of_the_kind(tmp_path: Path, make_bundle) -> None:
    space = Workspace(tmp_path / "ws").ensure()
    older = space.new_run_dir("finetune")
    shutil.copytree(make_bundle(), older / "bundle")
    newer = space.new_run_dir("finetune")
    shutil.copytree(make_bundle(), newer / "bundle")
    space.new_run_dir("finetune")  # newest, but unfinished: no bundle yet
    resolved = open_bundle(None, space)
    assert resolved.spec == str(newer / "bundle")
    assert resolved.folder == (newer / "bundle").resolve() and resolved.source == "local"
    assert (resolved.repo_id, resolved.revision, resolved.commit) == (None, None, None)


def test_each_stage_says_how_to_make_the_missing_run(tmp_path: Path) -> None:
    space = Workspace(tmp_path / "ws").ensure()
    with pytest.raises(InputError, match=r"no finished pre-training run.*salign pretrain SCANS"):
        open_bundle(None, space, run_kind="pretrain")
    with pytest.raises(InputError, match=r"^no model: .*salign finetune --labels N"):
        open_bundle(None, space, run_kind="finetune")


def test_a_run_folder_given_as_text_keeps_the_text_as_its_spec(tmp_path: Path, make_bundle) -> None:
    run = tmp_path / "runs" / "pretrain-1"
    shutil.copytree(make_bundle(kind="pretrained"), run / "bundle")
    resolved = open_bundle(str(run))
    assert resolved.spec == str(run) and resolved.folder == (run / "bundle").resolve()
    with pytest.raises(InputError, match="no such bundle folder"):
        open_bundle(tmp_path / "missing")  # a Path is a folder, never a Hub name


def test_load_bundle_takes_the_same_names(tmp_path: Path, make_bundle) -> None:
    space = Workspace(tmp_path / "ws").ensure()
    run = space.new_run_dir("pretrain")
    shutil.copytree(make_bundle(kind="pretrained"), run / "bundle")
    bundle = load_bundle(None, space, run_kind="pretrain")
    assert bundle.contract.kind == "pretrained"
    assert bundle.folder == (run / "bundle").resolve() == bundle.resolved.folder
