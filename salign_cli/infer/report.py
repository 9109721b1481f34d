"""What ``salign segment`` reports: one :class:`FileResult` per input, the :class:`ModelInfo` of
the model that ran, and the whole run's :class:`SegmentSummary` (whose
:meth:`~SegmentSummary.to_dict` is the ``--report`` JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from salign_cli.infer.quality import worst_first

if TYPE_CHECKING:
    from salign_cli.infer.predictor import BundleOrigin
    from salign_cli.infer.review import ReviewRow

Status = Literal["written", "skipped", "failed"]


@dataclass
class FileResult:
    """What happened to one input; ``seconds`` splits read / predict / write time."""

    input: Path
    output: Path
    status: Status
    error: str | None = None
    exit_code: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)
    quality: float | None = None  # expected Dice, `salign_cli.infer.quality`
    quality_by_class: dict[str, float | None] = field(default_factory=dict)
    dice: float | None = None  # against a reference label file (--reference)
    warnings: list[str] = field(default_factory=list)
    extras: list[Path] = field(default_factory=list)
    review: ReviewRow | None = None  # its row of the review page (--review), not in the JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "status": self.status,
            "error": self.error,
            "seconds": {name: round(value, 4) for name, value in self.seconds.items()},
            "shape": list(self.shape) if self.shape else None,
            "volumes_ml": {name: round(value, 4) for name, value in self.volumes_ml.items()},
            "quality": {
                "expected_dice": _rounded(self.quality),
                "by_class": {name: _rounded(q) for name, q in self.quality_by_class.items()},
            },
            "dice": _rounded(self.dice),
            "warnings": self.warnings,
            "extras": [str(path) for path in self.extras],
        }


@dataclass(frozen=True)
class ModelInfo:
    """Which model ran, for the report and the console: where its bundle was found and its
    contract (``origin``), and the post-processing in effect (bundle default or flag)."""

    origin: BundleOrigin
    largest_component: bool = False

    def to_dict(self) -> dict[str, Any]:
        resolved, contract = self.origin.resolved, self.origin.contract
        return {
            "spec": resolved.spec,
            "folder": str(resolved.folder),
            "source": resolved.source,
            "repo_id": resolved.repo_id,
            "revision": resolved.revision,
            "commit": resolved.commit,
            "weights_sha256": contract.weights_sha256,
            "modality": contract.modality,
            "classes": contract.class_names,
            "largest_component": self.largest_component,
        }


@dataclass
class SegmentSummary:
    """The whole run: one result per input, the model, the device and the wall time."""

    results: list[FileResult]
    model: ModelInfo | None
    device: str | None
    seconds: float
    stopped_early: bool = False
    review: Path | None = None  # the review page, when --review wrote one

    def by_status(self, status: Status) -> list[FileResult]:
        return [result for result in self.results if result.status == status]

    def to_check(self, count: int = 3) -> list[FileResult]:
        """The written masks with the lowest expected Dice, worst first (none for one mask:
        a ranking needs company)."""
        written = {str(result.output): result for result in self.by_status("written")}
        if len(written) < 2:
            return []
        scores = {name: result.quality for name, result in written.items()}
        return [written[name] for name, _ in worst_first(scores, count)]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else the most serious failure's code (bad input = 2)."""
        codes = [result.exit_code for result in self.by_status("failed")]
        return 0 if not codes else (2 if 2 in codes else max(codes))

    def to_dict(self) -> dict[str, Any]:
        written = self.by_status("written")
        return {
            "model": self.model.to_dict() if self.model else None,
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "counts": {
                status: len(self.by_status(status)) for status in ("written", "skipped", "failed")
            },
            "mean_file_seconds": (
                round(sum(sum(r.seconds.values()) for r in written) / len(written), 4)
                if written
                else None
            ),
            "stopped_early": self.stopped_early,
            "review": str(self.review) if self.review else None,
            "check_first": [
                {"output": str(result.output), "expected_dice": _rounded(result.quality)}
                for result in self.to_check()
            ],
            "files": [result.to_dict() for result in self.results],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
