"""Turn ``--model`` into a bundle folder: a local folder, a registry name, or ``org/name[@revision]``.

Downloads go through ``huggingface_hub`` into its standard cache, so bundles are shared with every
other Hub tool and all its settings apply: ``HF_HOME``/``HF_HUB_CACHE`` (where), ``HF_ENDPOINT``
(a mirror), ``HF_TOKEN`` (private repos), ``HF_HUB_OFFLINE`` (never touch the network). Those
variables are read when a function is called (:mod:`salign_cli.hub_paths`), not at import.

How a Hub spec is resolved, in order:

1. ``HF_HUB_OFFLINE`` set: the cache only; if absent, an error with the offline recipe.
2. A 40-hex commit already cached: the cache, no network at all (a commit never changes).
3. Otherwise ask the Hub (one ``HEAD`` for ``salign.json``), then download the bundle files.
   If the Hub cannot be reached (firewall, outage) and a cached copy of that revision exists, it
   is used and a note says so through ``report``; if not, the error names the repository, the
   revision, the cache folder and the offline recipe.

A registry name (``salign/sal-unet2d-mri-base``) means its pinned commit, and the weights are
checked against the sha256 the registry pins, on top of the bundle's own ``salign.json`` hash.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from salign_cli import __version__
from salign_cli.errors import InputError, SalignError
from salign_cli.hub_paths import (
    hub_cache_dir,
    hub_endpoint,
    hub_offline,
    hub_token,
)
from salign_cli.io.atomic import atomic_path
from salign_cli.io.hashing import file_sha256
from salign_cli.model.bundle import (
    BUNDLE_FILES,
    CARD_FILE,
    CONTRACT_FILE,
    WEIGHTS_FILE,
    read_contract,
    verify_weights,
    weights_mismatch_error,
)
from salign_cli.registry import COMMIT_PATTERN, Registry, RegistryEntry, load_registry

logger = logging.getLogger("salign")

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
    """Where a bundle was found. ``commit`` is the Hub commit for ``hub``/``cache`` sources."""

    folder: Path
    source: Source
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None


def _valid_repo_id(text: str) -> bool:
    return bool(_REPO_ID.fullmatch(text)) and "--" not in text and ".." not in text


def parse_spec(text: str, registry: Registry | None = None) -> ModelSpec:
    """Parse ``--model``: an existing folder wins (a run folder stands for its ``bundle/``), then a
    registry name (its shipped bundle when it has one), then ``org/name[@rev]``.

    Raises ``InputError`` for anything else, and for registry names that are not published yet
    (unless an explicit ``@revision`` says which commit to take).
    """
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / CONTRACT_FILE).is_file() and (path / "bundle" / CONTRACT_FILE).is_file():
            path = path / "bundle"  # runs/finetune-<ts>/: the bundle that run finished
        return ModelSpec(text=text, folder=path.resolve())
    name, has_at, revision = text.partition("@")
    if has_at and not (_REVISION.fullmatch(revision) and ".." not in revision):
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
    if _valid_repo_id(name):
        return ModelSpec(text=text, repo_id=name, revision=revision or None)
    if text.startswith(_PATH_HINTS) or path.exists():
        raise InputError(f"{text}: no such bundle folder")
    raise InputError(
        f"{text}: not a bundle folder, a registry name (see salign weights list) or a "
        "Hub repo id org/name[@revision]"
    )


def _short(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _offline_recipe(spec: str, cache_dir: Path) -> str:
    return (
        f"offline recipe: where the network works run `salign weights download {spec}` with "
        f"HF_HUB_CACHE={cache_dir} (or carry the bundle folder over and run `salign weights "
        "import FOLDER`), then run salign here with HF_HUB_OFFLINE=1"
    )


def _not_cached(spec: ModelSpec, revision: str, reason: str) -> SalignError:
    cache_dir = hub_cache_dir()
    return SalignError(
        f"cannot get {spec.repo_id}@{revision}: {reason}, and it is not in the cache "
        f"{cache_dir}; {_offline_recipe(spec.text, cache_dir)}"
    )


def _fetch(
    repo_id: str, revision: str, files: tuple[str, ...], *, local_only: bool, force: bool
) -> Path:
    """Download (or, with ``local_only``, look up) ``files`` and return their snapshot folder."""
    from huggingface_hub import hf_hub_download

    paths = [
        Path(
            hf_hub_download(
                repo_id,
                name,
                revision=revision,
                cache_dir=hub_cache_dir(),
                endpoint=hub_endpoint(),
                token=hub_token(),
                local_files_only=local_only,
                force_download=force,
                library_name="salign",
                library_version=__version__,
            )
        )
        for name in files
    ]
    return paths[0].parent


def _cached(repo_id: str, revision: str, files: tuple[str, ...]) -> Path | None:
    """The cached snapshot folder holding ``files`` at ``revision`` (commit, tag or branch), if any."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return _fetch(repo_id, revision, files, local_only=True, force=False)
    except (LocalEntryNotFoundError, EntryNotFoundError):
        return None


def _is_network_failure(error: BaseException) -> bool:
    """Unreachable Hub (connection, timeout, proxy, offline switch, 5xx) vs a real answer (4xx)."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    if isinstance(error, HfHubHTTPError):
        return error.response is not None and error.response.status_code >= 500
    # LocalEntryNotFoundError: huggingface_hub's own "could not reach the Hub, nothing cached".
    return isinstance(error, (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError))


def _hub_answer_error(error: Exception, spec: ModelSpec, revision: str) -> InputError | None:
    """A one-line ``InputError`` for a Hub that answered "no", or ``None`` if not such an answer."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{spec.repo_id}@{revision} on {hub_endpoint()}"
    if isinstance(error, GatedRepoError):
        return InputError(
            f"{where}: gated repository; accept its terms on the Hub and set HF_TOKEN"
        )
    if isinstance(error, RepositoryNotFoundError):
        return InputError(
            f"{where}: no such model repository (if it is private, set HF_TOKEN or run hf auth login)"
        )
    if isinstance(error, RevisionNotFoundError):
        return InputError(f"{where}: no such revision (expected a tag, branch or 40-hex commit)")
    if isinstance(error, RemoteEntryNotFoundError):
        return InputError(
            f"{where}: not a complete salign bundle (needs {', '.join(BUNDLE_FILES)})"
        )
    if isinstance(error, HfHubHTTPError):
        return InputError(f"{where}: the Hub refused the request ({_short(error)})")
    return None


def _probe(repo_id: str, revision: str) -> None:
    """One ``HEAD`` for ``salign.json``: tells a down network apart from a wrong name, cheaply."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, CONTRACT_FILE, revision=revision, endpoint=hub_endpoint())
    get_hf_file_metadata(url, token=hub_token(), endpoint=hub_endpoint())


def _from_hub(
    spec: ModelSpec,
    revision: str,
    files: tuple[str, ...],
    force: bool,
    report: Callable[[str], None],
) -> tuple[Path, Source]:
    assert spec.repo_id is not None
    if hub_offline():
        if force:
            raise InputError("--force needs the network; unset HF_HUB_OFFLINE")
        folder = _cached(spec.repo_id, revision, files)
        if folder is None:
            raise _not_cached(spec, revision, "HF_HUB_OFFLINE is set")
        return folder, "cache"
    if not force and COMMIT_PATTERN.fullmatch(revision):
        folder = _cached(spec.repo_id, revision, files)
        if folder is not None:
            return folder, "cache"
    try:
        _probe(spec.repo_id, revision)
        return _fetch(spec.repo_id, revision, files, local_only=False, force=force), "hub"
    except Exception as error:
        answer = _hub_answer_error(error, spec, revision)
        if answer is not None:
            raise answer from None
        if not _is_network_failure(error):
            raise
        reason = f"cannot reach {hub_endpoint()} ({_short(error)})"
        folder = None if force else _cached(spec.repo_id, revision, files)
        if folder is None:
            raise _not_cached(spec, revision, reason) from None
        report(
            f"{reason}; using the cached copy of {spec.repo_id}@{revision} "
            f"(commit {folder.name[:12]}) from {folder}"
        )
        return folder, "cache"


def _check_registry_pin(spec: ModelSpec, folder: Path) -> None:
    if spec.pinned_by_registry and (folder / WEIGHTS_FILE).is_file():
        assert spec.entry is not None
        if file_sha256(folder / WEIGHTS_FILE) != spec.entry.sha256:
            raise weights_mismatch_error(
                folder / WEIGHTS_FILE, f"the salign registry for {spec.entry.name}", spec.text
            )


def resolve(
    spec_text: str,
    *,
    force: bool = False,
    contract_only: bool = False,
    report: Callable[[str], None] | None = None,
) -> ResolvedBundle:
    """Find or fetch the bundle ``spec_text`` names (see the module docstring for the order).

    ``force`` re-downloads even if cached; ``contract_only`` fetches just ``salign.json``
    (for ``salign weights info``). ``report`` receives one-line notes (default: the
    ``salign`` logger's warning, so a fallback to the cache is never silent).
    Raises ``InputError`` (bad spec, unknown repo or revision) or ``SalignError`` (no network
    and no cached copy).
    """
    spec = parse_spec(spec_text)
    if spec.folder is not None:
        return ResolvedBundle(folder=spec.folder, source="local")
    assert spec.repo_id is not None
    revision = spec.revision or "main"
    files = (CONTRACT_FILE,) if contract_only else BUNDLE_FILES
    folder, source = _from_hub(spec, revision, files, force, report or logger.warning)
    _check_registry_pin(spec, folder)
    return ResolvedBundle(
        folder=folder, source=source, repo_id=spec.repo_id, revision=revision, commit=folder.name
    )


def resolve_bundle(spec: str, report: Callable[[str], None] | None = None) -> Path:
    """The bundle folder for ``--model``/``--from`` (a local folder, registry name or Hub spec).

    This is what ``pretrain --from``, ``finetune --from`` and ``segment --model`` call; pass the
    folder to :func:`salign_cli.model.bundle.load_bundle` to verify and load it.
    """
    return resolve(spec, report=report).folder


@dataclass(frozen=True)
class CachedBundle:
    """A salign bundle found in the Hub cache (any repo with ``salign.json`` at its root)."""

    repo_id: str
    commit: str
    refs: tuple[str, ...]
    folder: Path
    complete: bool


def cached_bundles() -> list[CachedBundle]:
    """Bundles in the Hub cache, by repo then commit; torch-free and network-free.

    The cache is read by ``huggingface_hub.scan_cache_dir``, which knows its layout (and its
    changes between versions); a repository it reports as corrupt is left out, as ``hf cache
    ls`` leaves it out.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
            names = {file.file_name for file in revision.files}
            if CONTRACT_FILE in names:
                found.append(
                    CachedBundle(
                        repo_id=repo.repo_id,
                        commit=revision.commit_hash,
                        refs=tuple(sorted(revision.refs)),
                        folder=revision.snapshot_path,
                        complete=all(name in names for name in BUNDLE_FILES),
                    )
                )
    return found


def _place_in_cache(source: Path, repo_dir: Path, commit: str, name: str) -> None:
    """Copy one file into the cache's layout: ``blobs/<sha256>`` + ``snapshots/<commit>/<name>``.

    ``huggingface_hub`` has no public call that files local files into its cache, so these few
    lines write its documented layout; :func:`import_bundle` then asks ``huggingface_hub``
    itself to find the files (offline), so a layout it would not read fails the import. The
    snapshot entry is a relative symlink to the blob, like ``huggingface_hub`` makes; where
    symlinks are not allowed (Windows without developer mode) it is a copy, as there too.
    """
    blob = repo_dir / "blobs" / file_sha256(source)
    pointer = repo_dir / "snapshots" / commit / name
    blob.parent.mkdir(parents=True, exist_ok=True)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(blob) as temporary:
        shutil.copyfile(source, temporary)
    with atomic_path(pointer) as temporary:
        try:
            temporary.symlink_to(os.path.relpath(blob, pointer.parent))
        except OSError:
            shutil.copyfile(blob, temporary)


def import_bundle(folder: Path, as_spec: str | None = None) -> ResolvedBundle:
    """Copy a carried-in bundle folder into the Hub cache so ``--model NAME`` works offline.

    Which repository and commit it is filed under: ``as_spec`` (``org/name@<40-hex commit>`` or
    a registry name), else the published registry entry whose sha256 matches the weights. The
    bundle is verified first (contract, hash, and the registry's pinned hash where one applies).
    The returned folder is the one ``huggingface_hub`` itself finds in its cache afterwards.
    """
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; pass the bundle folder you copied over")
    for name in BUNDLE_FILES:
        if not (folder / name).is_file():
            raise InputError(
                f"{folder}: bundle lacks {name}; a bundle holds {', '.join(BUNDLE_FILES)}"
            )
    contract = read_contract(folder)
    verify_weights(folder, contract)
    registry = load_registry()
    if as_spec is not None:
        spec = parse_spec(as_spec, registry)
    else:
        entry = registry.find_by_sha256(str(contract.weights_sha256))
        if entry is None:
            raise InputError(
                f"{folder}: its weights match no published registry entry; say where it belongs "
                "with --as org/name@<40-hex commit>"
            )
        spec = ModelSpec(
            text=entry.name, repo_id=entry.repo_id, revision=entry.revision, entry=entry
        )
    if spec.folder is not None or not (spec.revision and COMMIT_PATTERN.fullmatch(spec.revision)):
        raise InputError(
            f"--as {as_spec}: needs a Hub repo and a 40-hex commit (org/name@<commit>) so the "
            "cached copy is pinned"
        )
    _check_registry_pin(spec, folder)
    assert spec.repo_id is not None
    repo_dir = hub_cache_dir() / repo_folder_name(repo_id=spec.repo_id, repo_type="model")
    for name in BUNDLE_FILES:
        _place_in_cache(folder / name, repo_dir, spec.revision, name)
    snapshot = _cached(spec.repo_id, spec.revision, BUNDLE_FILES)
    if snapshot is None:
        raise SalignError(
            f"{folder}: copied into {repo_dir} but huggingface_hub does not find it there; "
            "report this with your huggingface_hub version (pip show huggingface_hub)"
        )
    return ResolvedBundle(snapshot, "cache", spec.repo_id, spec.revision, spec.revision)


def bundle_folder_of(path: Path) -> Path:
    """A bundle folder itself, or a run folder's ``bundle/`` (what ``salign weights push`` takes)."""
    path = Path(path).expanduser()
    for candidate in (path, path / "bundle"):
        if (candidate / CONTRACT_FILE).is_file():
            return candidate
    raise InputError(
        f"{path}: neither a bundle folder nor a run folder with bundle/{CONTRACT_FILE}"
    )


@dataclass(frozen=True)
class PushResult:
    """What was published: enough to add a pinned entry to ``weights/registry.json``."""

    repo_id: str
    commit: str
    tag: str | None
    weights_sha256: str
    registry_entry: dict[str, Any]


def push_bundle(
    path: Path,
    repo_id: str,
    *,
    private: bool = False,
    tag: str | None = None,
    card: Path | None = None,
) -> PushResult:
    """Upload a verified bundle as one commit (``card`` replaces its ``README.md``); tag it.

    ``private`` applies when the repository is created by this call. Talks to ``$HF_ENDPOINT``
    with ``$HF_TOKEN`` (or the stored ``hf auth login`` token).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = bundle_folder_of(path)
    if not _valid_repo_id(repo_id):
        raise InputError(f"{repo_id}: not a Hub repo id; expected org/name")
    if tag is not None and not (_REVISION.fullmatch(tag) and ".." not in tag):
        raise InputError(f"--revision {tag}: not a valid tag name")
    if card is not None and not Path(card).is_file():
        raise InputError(f"--card {card}: no such file")
    contract = read_contract(folder)
    verify_weights(folder, contract)
    sources = {name: folder / name for name in BUNDLE_FILES}
    if card is not None:
        sources[CARD_FILE] = Path(card)
    elif not sources[CARD_FILE].is_file():
        raise InputError(f"{folder}: bundle lacks {CARD_FILE}; pass --card FILE")
    hub = HfApi(
        endpoint=hub_endpoint(),
        token=hub_token(),
        library_name="salign",
        library_version=__version__,
    )
    hub.create_repo(repo_id, private=private, exist_ok=True)
    info = hub.create_commit(
        repo_id,
        operations=[CommitOperationAdd(name, str(p)) for name, p in sources.items()],
        commit_message=f"salign {contract.kind} bundle (weights sha256 {contract.weights_sha256})",
    )
    if tag is not None:
        hub.create_tag(repo_id, tag=tag, revision=info.oid)
    entry = {
        "repo_id": repo_id,
        "revision": info.oid,
        "sha256": contract.weights_sha256,
        "published": True,
        "kind": contract.kind,
        "modality": contract.modality,
        "classes": contract.classes,
    }
    return PushResult(repo_id, info.oid, tag, str(contract.weights_sha256), entry)
