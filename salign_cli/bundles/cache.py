"""The Hub cache as salign sees it: the bundles in it, and filing a carried-in bundle into it.

The cache is ``huggingface_hub``'s own (``$HF_HUB_CACHE``), so ``hf cache ls`` and salign agree
on what is there; filing a bundle lets ``--model org/name@<commit>`` work offline.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from salign_cli.bundles.files import read_contract, verify_weights
from salign_cli.bundles.hub import cached_snapshot, check_registry_pin
from salign_cli.bundles.hub_paths import hub_cache_dir
from salign_cli.bundles.layout import BUNDLE_FILES, CONTRACT_FILE
from salign_cli.bundles.registry import COMMIT_PATTERN, load_registry
from salign_cli.bundles.spec import ModelSpec, ResolvedBundle, parse_spec
from salign_cli.errors import InputError, OptionError, SalignError
from salign_cli.io.atomic import atomic_path
from salign_cli.io.hashing import file_sha256


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
        raise OptionError(
            "as_spec",
            f"{as_spec}: needs a Hub repo and a 40-hex commit (org/name@<commit>) so the "
            "cached copy is pinned",
        )
    check_registry_pin(spec, folder)
    assert spec.repo_id is not None
    repo_dir = hub_cache_dir() / repo_folder_name(repo_id=spec.repo_id, repo_type="model")
    for name in BUNDLE_FILES:
        _place_in_cache(folder / name, repo_dir, spec.revision, name)
    snapshot = cached_snapshot(spec.repo_id, spec.revision, BUNDLE_FILES)
    if snapshot is None:
        raise SalignError(
            f"{folder}: copied into {repo_dir} but huggingface_hub does not find it there; "
            "report this with your huggingface_hub version (pip show huggingface_hub)"
        )
    return ResolvedBundle(spec.text, snapshot, "cache", spec.repo_id, spec.revision, spec.revision)
