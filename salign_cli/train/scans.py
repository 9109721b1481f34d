"""Which scans a training run uses: unlabelled scans (pre-training, semi-supervision) and
labelled cases (fine-tuning, the benchmarks), drawn from the workspace index.

Both stages and the benchmarks choose scans the same way, so the choice lives here rather than
in one stage that the others import: scans are indexed first, those with index errors are left
out with a note, one modality per run, and labelled sets drawn with a seed are nested (the
cases for N = 1 are among those for N = 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from salign_cli.config import known_fields
from salign_cli.data.index.paths import folder_key, lies_under
from salign_cli.data.preprocess import PreprocessConfig, SliceCache, default_target_spacing
from salign_cli.errors import InputError, OptionError
from salign_cli.workspace import Workspace

if TYPE_CHECKING:
    from salign_cli.data.index.records import ScanRecord


class CacheReporter(Protocol):
    """Hears how far filling the slice cache has got."""

    def on_cache(self, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class ScanEntry:
    """One scan used without its labels (pre-training, semi-supervision): where it is and the
    hash the cache is keyed by."""

    case_id: str
    image_path: str
    content_hash: str
    modality: str
    spacing_mm: tuple[float, float, float]

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ScanEntry:
        values = known_fields(cls, payload, "scan entry")
        return cls(**{**values, "spacing_mm": tuple(values["spacing_mm"])})

    @classmethod
    def from_record(cls, record: ScanRecord) -> ScanEntry:
        return cls(
            case_id=record.case_id,
            image_path=str(record.image_path),
            content_hash=str(record.content_hash),
            modality=record.modality,
            spacing_mm=tuple(float(s) for s in record.spacing_mm or (1.0, 1.0, 1.0)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class LabelledCase:
    """A labelled scan: where its image and label are, and the hash the slice cache is keyed by."""

    case_id: str
    image_path: str
    label_path: str
    content_hash: str
    modality: str
    spacing_mm: tuple[float, float, float]
    label_values: tuple[int, ...] = ()  # classes the index found in the label file

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> LabelledCase:
        values = known_fields(cls, payload, "labelled case")
        return cls(
            **{
                **values,
                "spacing_mm": tuple(values["spacing_mm"]),
                "label_values": tuple(values.get("label_values", ())),
            }
        )


def resolve_scans(
    folders: Sequence[Path],
    workspace: Workspace,
    *,
    index_first: bool = True,
    notify: Callable[[str], None] | None = None,
) -> list[ScanEntry]:
    """Scans under ``folders`` (indexed first, incrementally), or every indexed scan if none given.

    Scans the index found errors in are skipped, each with a note through ``notify``. Raises
    `InputError` for a folder without a readable scan or an empty index (`checked_records`).
    """
    records = checked_records(folders, workspace, index_first=index_first, notify=notify)
    return [ScanEntry.from_record(record) for record in records]


def checked_records(
    folders: Sequence[Path],
    workspace: Workspace,
    *,
    index_first: bool = True,
    notify: Callable[[str], None] | None = None,
) -> list[ScanRecord]:
    """`indexed_records` of ``folders``, refusing with an `InputError` a folder that does not
    exist or holds no readable scan, and an index with no scan at all."""
    keys = [folder_key(f) for f in folders]
    for folder in keys:
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder; pass a folder of scans")
    records = indexed_records(keys, workspace, index_first=index_first, notify=notify)
    for folder in keys:
        if not any(lies_under(r.image_path, [folder]) for r in records):
            raise InputError(
                f"{folder}: no readable scan found (.nii, .nii.gz, .nrrd, .mha, .mhd); "
                "point salign at a folder of 3D scans"
            )
    if not records:
        raise InputError(
            f"{workspace.index_path}: no indexed scans; run `salign index DIR` or pass folders"
        )
    return records


def indexed_records(
    folders: Sequence[Path],
    workspace: Workspace,
    *,
    index_first: bool = True,
    notify: Callable[[str], None] | None = None,
) -> list[ScanRecord]:
    """Usable index records (no errors; labelled or not) under ``folders`` (all if none), after
    indexing the folders (by rank 0 only under DDP) when ``index_first``; the unusable ones are
    reported through ``notify``."""
    from salign_cli.data.index import index_folders, load_index, skipped_scan_notes, usable_scans

    if folders and index_first:
        records = index_folders(list(folders), workspace).records
    else:
        records = load_index(workspace) if workspace.index_path.is_file() else []
    records = [
        record for record in records if not folders or lies_under(record.image_path, folders)
    ]
    if notify:
        for note in skipped_scan_notes(records):
            notify(note)
    return usable_scans(records)


def preprocess_config_for(
    scans: Sequence[ScanEntry], spacing: str | float = "auto"
) -> PreprocessConfig:
    """One modality for the whole run and its target spacing (`default_target_spacing`:
    ``auto`` = the median in-plane spacing, floored at 1.5 mm for CT)."""
    modality = single_modality(
        (scan.modality for scan in scans),
        "pre-train on one modality at a time (pass folders of one modality)",
    )
    return PreprocessConfig(
        modality=modality,  # type: ignore[arg-type]
        target_spacing_mm=default_target_spacing([s.spacing_mm for s in scans], modality, spacing),
    )


def single_modality(modalities: Iterable[str], advice: str) -> str:
    """The one modality of a run's scans; scans of several (or none) are an `InputError` that
    ends with ``advice``."""
    found = sorted(set(modalities))
    if len(found) != 1:
        raise InputError(f"the scans mix modalities {found}; {advice}")
    return found[0]


def resolve_labelled_cases(
    folders: Sequence[Path], workspace: Workspace, notify: Callable[[str], None] | None = None
) -> tuple[list[LabelledCase], dict[int, str]]:
    """Labelled scans under ``folders`` (indexed first) or every labelled scan in the index.

    Also returns the class names ``dataset.json`` gives for them (``{}`` when none). Labelled
    scans with index errors are skipped, each with a note through ``notify``. Raises
    `InputError` when there is no usable labelled scan.
    """
    from salign_cli.data import index as scan_index

    roots = [folder_key(f) for f in folders]
    for folder in roots:
        if not folder.is_dir():
            raise OptionError("data", f"{folder}: no such folder; pass a folder of labelled scans")
    if roots:
        scan_index.index_folders(roots, workspace)
    records = [
        r
        for r in scan_index.load_index(workspace)
        if r.is_labelled and (not roots or lies_under(r.image_path, roots))
    ]
    if notify:
        for note in scan_index.skipped_scan_notes(records):
            notify(note)
    records = scan_index.labelled_scans(records)
    if not records:
        where = ", ".join(map(str, roots)) or str(workspace.index_path)
        raise InputError(
            f"{where}: no usable labelled scan (image with a label file, e.g. imagesTr/ + "
            "labelsTr/); index labelled data with `salign index DIR` or pass --data DIR"
        )
    datasets = scan_index.load_datasets(workspace)
    names: dict[int, str] = {}
    for record in records:
        info = datasets.get(record.dataset_root)
        if info is not None and info.label_names:
            names = {**dict(info.label_names), **names}
    cases = [
        LabelledCase(
            case_id=r.case_id,
            image_path=str(r.image_path),
            label_path=str(r.label_path),
            content_hash=str(r.content_hash),
            modality=r.modality,
            spacing_mm=tuple(float(s) for s in r.spacing_mm),  # type: ignore[union-attr,arg-type]
            label_values=tuple(int(v) for v in r.label_values or ()),
        )
        for r in records
    ]
    return cases, names


def seeded_order(case_ids: Iterable[str], seed: int) -> list[str]:
    """The sorted ids permuted by ``seed``: labelled sets are prefixes of this order."""
    ordered = sorted(case_ids)
    permutation = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in permutation]


def split_cases(
    case_ids: Sequence[str],
    *,
    labels: int | None = None,
    chosen: Sequence[str] = (),
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """``(labelled, validation)`` ids: N drawn with ``seed`` (or ``chosen``), the rest validation.

    Both lists are sorted. Raises `InputError` for an unknown id or too few cases.

    >>> split_cases(["a", "b", "c"], chosen=["c"])
    (['c'], ['a', 'b'])
    """
    available = set(case_ids)
    if chosen:
        unknown = [c for c in chosen if c not in available]
        if unknown:
            raise OptionError(
                "cases",
                f"{','.join(unknown)}: not among the {len(available)} labelled scans "
                f"(e.g. {', '.join(sorted(available)[:3])}); check the ids with `salign index`",
            )
        labelled = set(chosen)
    else:
        assert labels is not None
        if labels > len(available):
            raise OptionError(
                "labels",
                f"{labels}: only {len(available)} labelled scans are available; "
                "pass a smaller N or index more labelled scans",
            )
        labelled = set(seeded_order(available, seed)[:labels])
    return sorted(labelled), sorted(available - labelled)


def class_names_for(
    label_values: Iterable[int], dataset_names: Mapping[int, str]
) -> dict[int, str]:
    """Class id → name for ids 0..max: ``dataset.json``'s names, else ``class_<id>``.

    The number of classes is one more than the largest id seen in the labels or named in
    ``dataset.json``; id 0 is ``background`` unless ``dataset.json`` says otherwise.
    """
    largest = max([0, *label_values, *dataset_names])
    names = {0: "background"} | {int(k): str(v) for k, v in dataset_names.items()}
    result = {i: names.get(i) or f"class_{i}" for i in range(largest + 1)}
    if len(set(result.values())) != len(result):
        result = {i: f"{name}_{i}" for i, name in result.items()}  # keep names unique
    if len(result) < 2:
        raise InputError("every label file is empty (only background); nothing to learn")
    return result


@dataclass(frozen=True, eq=False)
class LabelledSlices:
    """Scans as the network sees them: float16 image slices and (labelled scans) integer label
    slices ``[D, H, W]`` per scan — memory maps from the cache — and each canonical slice axis."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    slice_axes: list[int]


def load_cached_slices(
    cases: Sequence[LabelledCase | ScanEntry],
    config: PreprocessConfig,
    cache: SliceCache,
    reporter: CacheReporter | None = None,
    *,
    rebuild: bool = False,
    workers: int | None = None,
) -> LabelledSlices:
    """Every scan's prepared slices from the slice cache (entries built in ``workers`` threads
    where missing, or all of them again with ``rebuild``); labels for the `LabelledCase` ones
    (a run passes either labelled cases or unlabelled `ScanEntry` ones). The one loader of the
    cache: pre-training, fine-tuning, the probe and `salign suggest` all read through it."""

    def one(case: LabelledCase | ScanEntry) -> tuple[np.ndarray, np.ndarray | None, int]:
        label_path = Path(case.label_path) if isinstance(case, LabelledCase) else None
        cached = cache.get_or_build(
            Path(case.image_path), config, label_path=label_path, rebuild=rebuild
        )
        return cached.slices, cached.labels, cached.slice_axis

    loaded = LabelledSlices([], [], [])
    threads = workers or min(4, max(1, len(cases)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done, (image, label, axis) in enumerate(pool.map(one, cases), start=1):
            loaded.images.append(image)
            if label is not None:
                loaded.labels.append(label)
            loaded.slice_axes.append(axis)
            if reporter is not None:
                reporter.on_cache(done, len(cases))
    return loaded


def resolve_unlabelled_scans(
    source: str,
    folders: Sequence[Path],
    workspace: Workspace,
    *,
    held_back: set[str],
    modality: str,
    notify: Callable[[str], None] | None = None,
) -> list[ScanEntry]:
    """The unlabelled scans of a run (see `FinetuneOptions.unlabelled`).

    ``auto`` takes every usable indexed scan under ``folders`` (the whole index when none)
    whose case id is not ``held_back`` (the labelled, validation and excluded ids); a folder
    is indexed and taken whole. Scans of another modality are left out with a note.
    """
    if source == "none":
        return []
    if source == "auto":
        scans = resolve_scans(folders, workspace, index_first=False, notify=notify)
        scans = [scan for scan in scans if scan.case_id not in held_back]
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise OptionError(
                "unlabelled", f"{source}: no such folder; pass a folder of scans, auto or none"
            )
        scans = resolve_scans([folder], workspace, notify=notify)
    other = [scan for scan in scans if scan.modality != modality]
    if other and notify is not None:
        notify(
            f"{len(other)} unlabelled scan(s) are not {modality} (e.g. {other[0].image_path}); "
            "left out of semi-supervision"
        )
    return [scan for scan in scans if scan.modality == modality]
