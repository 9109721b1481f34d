"""`open_bundle`: the one place a model name becomes a bundle folder.

``--model`` (segment), ``--from`` (pretrain, finetune, the probe) and the Python API all come
here, so a name means the same everywhere: nothing given → the newest finished run of the
stage that produces such a bundle; a bundle folder, or a run folder (its ``bundle/``); a
registry name; a Hub id ``org/name[@revision]`` (see :mod:`salign_cli.bundles.hub`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from salign_cli.bundles.hub import fetch_bundle
from salign_cli.bundles.layout import RUN_BUNDLE_FOLDER
from salign_cli.bundles.spec import ResolvedBundle, parse_spec
from salign_cli.errors import InputError

if TYPE_CHECKING:
    from salign_cli.workspace import Workspace

logger = logging.getLogger("salign")

RunKind = Literal["pretrain", "finetune"]


def _no_run_error(workspace: Workspace, run_kind: RunKind) -> InputError:
    """No spec given and no finished run to fall back on: say which stage makes one."""
    if run_kind == "pretrain":
        return InputError(
            f"{workspace.runs_dir}: no finished pre-training run; run `salign pretrain SCANS` "
            "first, or pass --from scratch (or --from a bundle / org/name)"
        )
    return InputError(
        f"no model: the workspace {workspace.root} has no fine-tuned bundle; fine-tune one "
        "(salign pretrain SCANS, then salign finetune --labels N), or pass --model with a "
        "bundle folder or a Hub id org/name[@revision] (see salign weights list)"
    )


def latest_bundle_spec(workspace: Workspace, run_kind: RunKind) -> str:
    """The bundle folder of the newest finished ``run_kind`` run, as a spec string.

    ``InputError`` naming the workspace and the fix when there is none.
    """
    run = workspace.latest_run(run_kind)
    if run is None:
        raise _no_run_error(workspace, run_kind)
    return str(run / RUN_BUNDLE_FOLDER)


def open_bundle(
    spec: str | Path | None,
    workspace: Workspace | None = None,
    *,
    run_kind: RunKind = "finetune",
    force: bool = False,
    contract_only: bool = False,
    notify: Callable[[str], None] | None = None,
) -> ResolvedBundle:
    """Find (or fetch) the bundle ``spec`` names and say where it was found.

    ``spec``: ``None`` = the newest finished ``run_kind`` run in ``workspace`` (default: the
    workspace ``Workspace.resolve()`` picks); a ``Path`` is always a folder (a bundle or a run
    folder), never a Hub name; a string is parsed by `parse_spec`. ``force`` re-downloads even
    if cached; ``contract_only`` fetches just ``salign.json``. ``notify`` receives one-line
    notes such as "network down, using the cached copy" (default: the ``salign`` logger's
    warning, so a fallback is never silent). The folder is not verified here: that is
    ``load_bundle``'s job.

    Raises ``InputError`` (bad spec, unknown repo or revision, no run to fall back on) or
    ``SalignError`` (no network and no cached copy).

    Example::

        open_bundle("hippocampus").folder      # the bundle shipped with salign
        open_bundle(None, workspace).spec      # ".../runs/finetune-<time>/bundle"
    """
    if spec is None:
        from salign_cli.workspace import Workspace

        spec = latest_bundle_spec(workspace or Workspace.resolve(), run_kind)
    if isinstance(spec, Path):
        if not spec.is_dir():
            raise InputError(f"{spec}: no such bundle folder")
        spec = str(spec)
    parsed = parse_spec(spec)
    if parsed.folder is not None:
        return ResolvedBundle(spec=spec, folder=parsed.folder, source="local")
    folder, revision, source = fetch_bundle(
        parsed, force=force, contract_only=contract_only, notify=notify or logger.warning
    )
    return ResolvedBundle(spec, folder, source, parsed.repo_id, revision, commit=folder.name)
