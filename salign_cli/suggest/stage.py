"""`salign suggest`: which unlabelled scans to label next, from a model's view of them.

The candidates are the indexed scans without a label; the scans that already have one cover
their part of the data. Every scan is embedded by the model's encoder
(`salign_cli.suggest.features`) and the pick is typical-and-diverse
(`salign_cli.suggest.selection`). The model is a pre-training run (its SAL features: the
cold start, before any label) or a fine-tuned one, whose expected Dice on each candidate
(`salign_cli.infer.quality`) also steers the pick toward the scans it is least sure of.
Whether this beats labelling random scans is measured, not assumed: benchmarks/suggest_vs_random.py
and docs/benchmarks.md ("Which scans to label").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from salign_cli.data.preprocess import PreprocessConfig, SliceCache
from salign_cli.device import resolve_device
from salign_cli.errors import InputError, OptionError
from salign_cli.suggest.features import scan_embeddings
from salign_cli.suggest.lists import Suggestion, SuggestResult
from salign_cli.suggest.selection import Pick, pick_typical_diverse
from salign_cli.train.scans import ScanEntry, checked_records, load_cached_slices
from salign_cli.workspace import Workspace

OnProgress = Callable[[str, int, int], None]  # (what, done, total)


def suggestion_pool(
    folders: Sequence[Path],
    workspace: Workspace,
    *,
    exclude: Sequence[str] = (),
    notify: Callable[[str], None] | None = None,
) -> tuple[list[ScanEntry], list[ScanEntry]]:
    """(candidates, labelled): the usable indexed scans under ``folders`` (the whole index when
    none; folders are indexed first) without a label, and those with one. ``exclude`` ids
    (a test split) are in neither."""
    records = checked_records(folders, workspace, notify=notify)
    excluded = set(exclude)
    candidates: list[ScanEntry] = []
    labelled: list[ScanEntry] = []
    for record in records:
        if record.case_id not in excluded:
            (labelled if record.is_labelled else candidates).append(ScanEntry.from_record(record))
    return candidates, labelled


def model_spec(spec: str | None, workspace: Workspace) -> str:
    """``spec``, else the newest fine-tuned run, else the newest pre-training run."""
    if spec is not None:
        return spec
    for kind in ("finetune", "pretrain"):
        run = workspace.latest_run(kind)
        if run is not None:
            return str(run)
    raise InputError(
        f"{workspace.root}: no model to see the scans with; run `salign pretrain ./scans` "
        "(or `salign finetune`) first, or pass --model"
    )


def suggest_scans(
    candidates: Sequence[ScanEntry],
    count: int,
    *,
    labelled: Sequence[ScanEntry] = (),
    model: str | None = None,
    workspace: Workspace,
    device: str = "auto",
    seed: int = 0,
    on_progress: OnProgress | None = None,
) -> SuggestResult:
    """The ``count`` of ``candidates`` to label next, best first (see the module).

    ``model``: a bundle or run (``--model`` syntax); ``None`` = `model_spec`'s choice.
    ``on_progress(what, done, total)`` follows the slow parts (embedding, scoring).

    Example::

        candidates, labelled = suggestion_pool([Path("scans")], workspace)
        suggest_scans(candidates, 5, labelled=labelled, workspace=workspace).case_ids
    """
    from salign_cli.bundles.store import build_model, load_bundle

    if count < 1:
        raise InputError(f"suggest {count}: ask for at least one scan")
    if not candidates:
        raise InputError("no unlabelled scan to suggest: every indexed scan already has a label")
    started = time.perf_counter()
    spec = model_spec(model, workspace)
    bundle = load_bundle(spec, workspace, run_kind="finetune")
    contract = bundle.contract
    preprocess = contract.preprocessing
    torch_device = resolve_device(device)
    candidates, labelled = _of_modality(candidates, labelled, contract.modality, spec)
    network = build_model(bundle).eval()
    cache = SliceCache(workspace.ensure().cache_dir)
    scans = list(candidates) + list(labelled)
    slices = load_cached_slices(scans, preprocess, cache).images

    def report(what: str) -> Callable[[int, int], None] | None:
        if on_progress is None:
            return None
        return lambda done, total: on_progress(what, done, total)

    embeddings = scan_embeddings(
        network, slices, preprocess.context, torch_device, report("embedding scans")
    )
    quality = None
    if contract.kind == "finetuned":
        quality = _expected_dice(
            network, preprocess, slices[: len(candidates)], torch_device, report
        )
    picks = pick_typical_diverse(
        embeddings[: len(candidates)],
        count,
        labelled=embeddings[len(candidates) :] if labelled else None,
        uncertainty=None if quality is None else 1.0 - quality,
        seed=seed,
    )
    suggestions = tuple(
        _suggestion(rank, pick, candidates[pick.index], quality)
        for rank, pick in enumerate(picks, start=1)
    )
    return SuggestResult(
        suggestions=suggestions,
        model=spec,
        model_kind=contract.kind,
        candidates=len(candidates),
        labelled=len(labelled),
        seconds=time.perf_counter() - started,
    )


def _of_modality(
    candidates: Sequence[ScanEntry], labelled: Sequence[ScanEntry], modality: str, spec: str
) -> tuple[Sequence[ScanEntry], Sequence[ScanEntry]]:
    """The scans of the model's modality (a CT model sees MR scans as noise); `InputError`
    when no candidate is left."""
    kept = [scan for scan in candidates if scan.modality == modality]
    if not kept:
        found = sorted({scan.modality for scan in candidates})
        raise OptionError(
            "model",
            f"{spec}: a {modality} model, but the unlabelled scans are "
            f"{', '.join(found)}; pass a model trained on {found[0]} scans",
        )
    return kept, [scan for scan in labelled if scan.modality == modality]


def _expected_dice(
    network: torch.nn.Module,
    preprocess: PreprocessConfig,
    scans: Sequence[np.ndarray],
    device: torch.device,
    report: Callable[[str], Callable[[int, int], None] | None],
) -> np.ndarray:
    """The model's expected Dice on each prepared scan (no test-time mirroring: a ranking
    needs no more); 0 where it finds no structure at all."""
    from salign_cli.infer.predictor import Predictor
    from salign_cli.infer.quality import expected_dice

    predictor = Predictor(network, preprocess, device=device)
    progress = report("scoring scans")
    scores = []
    for done, slices in enumerate(scans, start=1):
        score = expected_dice(predictor.slice_probabilities(np.asarray(slices, np.float32))).score
        scores.append(0.0 if score is None else score)
        if progress is not None:
            progress(done, len(scans))
    return np.asarray(scores)


def _suggestion(rank: int, pick: Pick, scan: ScanEntry, quality: np.ndarray | None) -> Suggestion:
    expected = None if quality is None else round(float(quality[pick.index]), 4)
    if pick.group < 0:
        reason = "farthest from every scan picked or labelled"
    elif expected is None:
        reason = f"the most typical of {pick.group_size} similar scans"
    else:
        reason = (
            f"of {pick.group_size} similar scans, the typical one the model is least sure of "
            f"(expected Dice {expected:.2f})"
        )
    return Suggestion(
        rank=rank,
        case_id=scan.case_id,
        image_path=scan.image_path,
        group_size=pick.group_size,
        expected_dice=expected,
        reason=reason,
    )
