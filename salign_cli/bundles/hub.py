"""The Hugging Face Hub: fetch a bundle at a revision (falling back to the cache), and publish one.

Downloads go through ``huggingface_hub`` into its standard cache, so bundles are shared with every
other Hub tool and all its settings apply: ``HF_HOME``/``HF_HUB_CACHE`` (where), ``HF_ENDPOINT``
(a mirror), ``HF_TOKEN`` (private repos), ``HF_HUB_OFFLINE`` (never touch the network). Those
variables are read when a function is called (:mod:`salign_cli.bundles.hub_paths`), not at import.

How a Hub spec is fetched, in order:

1. ``HF_HUB_OFFLINE`` set: the cache only; if absent, an error with the offline recipe.
2. A 40-hex commit already cached: the cache, no network at all (a commit never changes).
3. Otherwise ask the Hub (one ``HEAD`` for ``salign.json``), then download the bundle files.
   If the Hub cannot be reached (firewall, outage) and a cached copy of that revision exists, it
   is used and a note says so through ``notify``; if not, the error names the repository, the
   revision, the cache folder and the offline recipe.

A registry name (``salign/sal-unet2d-mri-base``) means its pinned commit, and the weights are
checked against the sha256 the registry pins, on top of the bundle's own ``salign.json`` hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from salign_cli import __version__
from salign_cli.bundles.files import (
    read_contract,
    verify_weights,
    weights_mismatch_error,
)
from salign_cli.bundles.hub_paths import hub_cache_dir, hub_endpoint, hub_offline, hub_token
from salign_cli.bundles.layout import (
    BUNDLE_FILES,
    CARD_FILE,
    CONTRACT_FILE,
    WEIGHTS_FILE,
    bundle_folder_in,
)
from salign_cli.bundles.registry import COMMIT_PATTERN
from salign_cli.bundles.spec import ModelSpec, Source, valid_repo_id, valid_revision
from salign_cli.errors import InputError, OptionError, SalignError
from salign_cli.io.hashing import file_sha256


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


def cached_snapshot(repo_id: str, revision: str, files: tuple[str, ...]) -> Path | None:
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
    notify: Callable[[str], None],
) -> tuple[Path, Source]:
    assert spec.repo_id is not None
    if hub_offline():
        if force:
            raise OptionError("force", "needs the network; unset HF_HUB_OFFLINE")
        folder = cached_snapshot(spec.repo_id, revision, files)
        if folder is None:
            raise _not_cached(spec, revision, "HF_HUB_OFFLINE is set")
        return folder, "cache"
    if not force and COMMIT_PATTERN.fullmatch(revision):
        folder = cached_snapshot(spec.repo_id, revision, files)
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
        folder = None if force else cached_snapshot(spec.repo_id, revision, files)
        if folder is None:
            raise _not_cached(spec, revision, reason) from None
        notify(
            f"{reason}; using the cached copy of {spec.repo_id}@{revision} "
            f"(commit {folder.name[:12]}) from {folder}"
        )
        return folder, "cache"


def check_registry_pin(spec: ModelSpec, folder: Path) -> None:
    """The registry's pinned sha256, when ``spec`` asked for the registry's own revision."""
    if spec.pinned_by_registry and (folder / WEIGHTS_FILE).is_file():
        assert spec.entry is not None
        if file_sha256(folder / WEIGHTS_FILE) != spec.entry.sha256:
            raise weights_mismatch_error(
                folder / WEIGHTS_FILE, f"the salign registry for {spec.entry.name}", spec.text
            )


def fetch_bundle(
    spec: ModelSpec,
    *,
    force: bool = False,
    contract_only: bool = False,
    notify: Callable[[str], None],
) -> tuple[Path, str, Source]:
    """The snapshot folder of the Hub bundle ``spec`` names, its revision and where it came from.

    ``contract_only`` fetches just ``salign.json`` (for ``salign weights info``). A registry
    entry's pinned sha256 is checked here, on top of the bundle's own hash checked on load.
    """
    assert spec.repo_id is not None
    revision = spec.revision or "main"
    files = (CONTRACT_FILE,) if contract_only else BUNDLE_FILES
    folder, source = _from_hub(spec, revision, files, force, notify)
    check_registry_pin(spec, folder)
    return folder, revision, source


@dataclass(frozen=True)
class PushResult:
    """What was published: enough to add a pinned entry to the registry."""

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

    found = bundle_folder_in(Path(path).expanduser())
    if found is None:
        raise InputError(
            f"{path}: neither a bundle folder nor a run folder with bundle/{CONTRACT_FILE}"
        )
    folder = found
    if not valid_repo_id(repo_id):
        raise InputError(f"{repo_id}: not a Hub repo id; expected org/name")
    if tag is not None and not valid_revision(tag):
        raise OptionError("revision", f"{tag}: not a valid tag name")
    if card is not None and not Path(card).is_file():
        raise OptionError("card", f"{card}: no such file")
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
