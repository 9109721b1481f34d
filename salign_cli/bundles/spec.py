"""What a ``--model``/``--from`` value names, and where the bundle was found.

A value is, in this order: an existing folder (a bundle, or a run folder standing for its
``bundle/``), a registry name (its shipped bundle when it has one, else its pinned Hub commit),
or a Hub id ``org/name[@tag|branch|40-hex commit]``. Parsing touches no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from salign_cli.bundles.layout import bundle_folder_in
from salign_cli.bundles.registry import Registry, RegistryEntry, load_registry
from salign_cli.errors import InputError

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_PATH_HINTS = ("/", "./", "../", "~", "\\")
Source = Literal["local", "hub", "cache"]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value: either ``folder`` or ``repo_id`` (+ optional ``revision``)."""

    text: str
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    entry: RegistryEntry | None = None

    @property
    def pinned_by_registry(self) -> bool:
        """True when the registry's pinned sha256 applies (its own revision was requested)."""
        return bool(self.entry and self.entry.published and self.revision == self.entry.revision)


@dataclass(frozen=True)
class ResolvedBundle:
    """Where a bundle was found: ``spec`` as given (or the run bundle it defaulted to), its
    ``folder``, and for ``hub``/``cache`` sources the Hub ``repo_id``, ``revision`` and
    ``commit``."""

    spec: str
    folder: Path
    source: Source
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None


def valid_repo_id(text: str) -> bool:
    """``org/name`` as the Hub spells it, with nothing that could step out of the cache."""
    return bool(_REPO_ID.fullmatch(text)) and "--" not in text and ".." not in text


def valid_revision(text: str) -> bool:
    """A tag, branch or commit name, with no ``..``."""
    return bool(_REVISION.fullmatch(text)) and ".." not in text


def parse_spec(text: str, registry: Registry | None = None) -> ModelSpec:
    """Parse ``--model``: an existing folder wins (a run folder stands for its ``bundle/``), then a
    registry name (its shipped bundle when it has one), then ``org/name[@rev]``.

    Raises ``InputError`` for anything else, and for registry names that are not published yet
    (unless an explicit ``@revision`` says which commit to take).
    """
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSpec(text=text, folder=(bundle_folder_in(path) or path).resolve())
    name, has_at, revision = text.partition("@")
    if has_at and not valid_revision(revision):
        raise InputError(f"{text}: {revision!r} is not a tag, branch or 40-hex commit")
    entry = (registry or load_registry()).get(name)
    if entry is not None:
        if entry.bundled_folder is not None and not revision:
            # shipped with salign: no network, and the bundle's own sha256 is checked on load
            return ModelSpec(text, folder=entry.bundled_folder, entry=entry)
        if not entry.published and not revision:
            raise InputError(
                f"{text}: listed in the salign registry but not published on the Hub yet; "
                "train your own (salign pretrain / salign finetune) or pass a bundle folder"
            )
        return ModelSpec(
            text, repo_id=entry.repo_id, revision=revision or entry.revision, entry=entry
        )
    if valid_repo_id(name):
        return ModelSpec(text=text, repo_id=name, revision=revision or None)
    if text.startswith(_PATH_HINTS) or path.exists():
        raise InputError(f"{text}: no such bundle folder")
    raise InputError(
        f"{text}: not a bundle folder, a registry name (see salign weights list) or a "
        "Hub repo id org/name[@revision]"
    )
