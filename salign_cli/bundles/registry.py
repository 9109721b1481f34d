"""The torch-free registry of named salign bundles (``salign_cli/_weights/registry.json``).

A registry entry maps a short name (``salign/sal-unet2d-mri-base``) to a Hub repository, a pinned
40-hex commit and the sha256 of the weights at that commit, so that ``--model NAME`` always means
the same bytes. Entries that are planned but not uploaded say ``"published": false`` and carry no
revision or hash: the CLI reports them as unpublished instead of pretending they can be fetched.

The file lives in one place, inside the package (package data), so a checkout and an installed
wheel read the same registry; maintainers edit it there. Model cards (``card``: a path relative
to the registry, e.g. ``cards/NAME.md``) sit beside it.

A registry entry may also name a bundle that ships inside the package (``"bundled"``: a folder
under ``salign_cli/_weights/``), so ``--model hippocampus`` works offline on a fresh install; the
bundle's own ``salign.json`` pins its weights by sha256, checked when it is loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from salign_cli.errors import InputError, SalignError

REGISTRY_SCHEMA_VERSION = 1
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "_weights"  # shipped with the package
_ENTRY_KEYS = {
    "repo_id",
    "revision",
    "sha256",
    "published",
    "kind",
    "modality",
    "classes",
    "card",
    "description",
    "bundled",
}


def registry_path() -> Path:
    """The registry file: ``salign_cli/_weights/registry.json``."""
    return BUNDLED_DIR / "registry.json"


def safe_join(base: Path, relative: str, what: str) -> Path:
    """``base / relative``, refusing absolute paths and any ``..`` that could leave ``base``.

    Raises ``InputError`` naming ``what`` (the file that held the path) when the path escapes.
    """
    parts = PurePosixPath(relative.replace("\\", "/"))
    if (
        not relative
        or parts.is_absolute()
        or ".." in parts.parts
        or re.match(r"^[A-Za-z]:", relative)
    ):
        raise InputError(f"{what}: path {relative!r} must be relative and stay inside {base}")
    return base.joinpath(*parts.parts)


@dataclass(frozen=True)
class RegistryEntry:
    """One named bundle. ``revision`` and ``sha256`` are set exactly when ``published`` is true."""

    name: str
    repo_id: str
    revision: str | None
    sha256: str | None
    published: bool
    kind: str
    modality: str
    classes: dict[str, str]
    card: str | None
    description: str
    bundled: str | None = None  # a folder under BUNDLED_DIR holding the bundle itself

    @property
    def bundled_folder(self) -> Path | None:
        """The shipped bundle's folder, or ``None`` when this entry ships none (or it is absent)."""
        if self.bundled is None:
            return None
        folder = safe_join(BUNDLED_DIR, self.bundled, f"registry entry {self.name}")
        return folder if (folder / "salign.json").is_file() else None

    @property
    def spec(self) -> str:
        """``repo_id@revision`` for published entries, else the bare repo id."""
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def _parse_entry(name: str, raw: Any, source: Path) -> RegistryEntry:
    where = f"{source} [{name}]"
    if not isinstance(raw, dict):
        raise SalignError(f"{where}: an entry must be a JSON object")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    missing = sorted({"repo_id", "published", "kind", "modality", "classes"} - set(raw))
    if unknown or missing:
        raise SalignError(f"{where}: unknown keys {unknown} / missing keys {missing}")
    published = raw["published"]
    revision, sha256 = raw.get("revision"), raw.get("sha256")
    if published is True:
        if not (isinstance(revision, str) and COMMIT_PATTERN.fullmatch(revision)):
            raise SalignError(f"{where}: a published entry needs a 40-hex commit as revision")
        if not (isinstance(sha256, str) and SHA256_PATTERN.fullmatch(sha256)):
            raise SalignError(f"{where}: a published entry needs the weights' sha256 (64 hex)")
    elif published is False:
        if revision is not None or sha256 is not None:
            raise SalignError(f"{where}: an unpublished entry must not claim a revision or sha256")
    else:
        raise SalignError(f"{where}: 'published' must be true or false")
    card = raw.get("card")
    if card is not None:
        safe_join(source.parent, str(card), where)
    bundled = raw.get("bundled")
    if bundled is not None:
        safe_join(BUNDLED_DIR, str(bundled), where)
    return RegistryEntry(
        name=name,
        repo_id=str(raw["repo_id"]),
        revision=revision,
        sha256=sha256,
        published=published,
        kind=str(raw["kind"]),
        modality=str(raw["modality"]),
        classes={str(k): str(v) for k, v in dict(raw["classes"]).items()},
        card=card,
        description=str(raw.get("description", "")),
        bundled=None if bundled is None else str(bundled),
    )


@dataclass(frozen=True)
class Registry:
    """The parsed registry file; ``entries`` keeps the file's order."""

    path: Path
    entries: dict[str, RegistryEntry]

    def get(self, name: str) -> RegistryEntry | None:
        """The entry called ``name`` (case-sensitive, like Hub repo ids), or ``None``."""
        return self.entries.get(name)

    def find_by_sha256(self, sha256: str) -> RegistryEntry | None:
        """The published entry whose weights hash is ``sha256`` (identifies a carried-in bundle)."""
        return next((e for e in self.entries.values() if e.sha256 == sha256), None)

    def card_path(self, entry: RegistryEntry) -> Path | None:
        """The entry's model card beside the registry (for a bundled entry without one, the
        shipped bundle's own ``README.md``), or ``None`` when absent."""
        if entry.card is None:
            folder = entry.bundled_folder
            own = None if folder is None else folder / "README.md"
            return own if own is not None and own.is_file() else None
        path = safe_join(self.path.parent, entry.card, str(self.path))
        return path if path.is_file() else None


def load_registry(path: Path | None = None) -> Registry:
    """Read and validate the registry (default: :func:`registry_path`). Torch-free, milliseconds.

    Example::

        entry = load_registry().get("salign/sal-unet2d-mri-base")
        entry.published   # False until the weights are really on the Hub
    """
    source = path or registry_path()
    try:
        payload = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SalignError(f"{source}: the weights registry is missing; reinstall salign") from None
    except json.JSONDecodeError as error:
        raise SalignError(f"{source}: not valid JSON ({error})") from None
    version = payload.get("schema_version")
    if version != REGISTRY_SCHEMA_VERSION:
        raise SalignError(
            f"{source}: registry schema_version {version!r}, this salign reads "
            f"{REGISTRY_SCHEMA_VERSION}; upgrade salign (pip install -U salign)"
        )
    bundles = payload.get("bundles")
    if not isinstance(bundles, dict):
        raise SalignError(f"{source}: 'bundles' must map names to entries")
    entries = {name: _parse_entry(name, raw, source) for name, raw in bundles.items()}
    return Registry(path=source, entries=entries)
