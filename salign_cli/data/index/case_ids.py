"""Unique case ids for scans that share a name in different folders."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path


def _distinguishing_prefixes(folders: Sequence[tuple[str, ...]]) -> list[str]:
    """Per path (its folder names, nearest first): the folder names that tell it apart.

    Depths where all share a name are skipped; e.g. ``A/imagesTr`` and ``B/imagesTr`` → ``A``, ``B``.
    """
    chosen: list[list[str]] = [[] for _ in folders]
    for depth in range(max(len(chain) for chain in folders)):
        names = [chain[depth] if depth < len(chain) else "" for chain in folders]
        if len(set(names)) == 1:
            continue
        for parts, name in zip(chosen, names, strict=True):
            parts.insert(0, name)
        if len({tuple(parts) for parts in chosen}) == len(folders):
            break
    return ["_".join(part for part in parts if part) for parts in chosen]


def assign_case_ids(image_paths_and_names: Sequence[tuple[Path, str]]) -> dict[Path, str]:
    """Unique case ids: the case name, prefixed by distinguishing folder names when repeated."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path, name in sorted(image_paths_and_names):
        groups[name].append(path)
    ids: dict[Path, str] = {}
    for name, paths in groups.items():
        if len(paths) == 1:
            ids[paths[0]] = name
            continue
        chains = [tuple(reversed(path.parent.parts[1:])) for path in paths]
        for path, prefix in zip(paths, _distinguishing_prefixes(chains), strict=True):
            ids[path] = f"{prefix}_{name}" if prefix else name
    taken: Counter[str] = Counter()
    for path in sorted(ids):  # last resort (same name, same folder: case.nii.gz and case.nrrd)
        taken[ids[path]] += 1
        if taken[ids[path]] > 1:
            ids[path] = f"{ids[path]}-{taken[ids[path]]}"
    return ids
