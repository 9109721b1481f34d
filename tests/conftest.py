"""Shared test fixtures: paths to the real data beside the repo, a CLI runner, and no network."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

# resolved: the index stores resolved paths, and ../shared may itself be a link to the data
SHARED_DATA = (Path(__file__).resolve().parents[1].parent / "shared" / "data").resolve()
FIXTURES_DIR = SHARED_DATA / "fixtures"
HIPPOCAMPUS_DIR = SHARED_DATA / "hippocampus"

# Every skip for missing real data starts with this, so the summary below can count them.
NEEDS_SHARED_DATA = "needs ../shared/data: "


@pytest.fixture
def fixtures_dir() -> Path:
    """Real single-scan fixtures (RAS CT, LPS MR, anisotropic CT); skip when absent."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(reason=f"{NEEDS_SHARED_DATA}real fixtures not found at {FIXTURES_DIR}")
    return FIXTURES_DIR


@pytest.fixture
def hippocampus_dir() -> Path:
    """MSD Task04 Hippocampus (200 labelled MRI crops); skip when absent."""
    images = HIPPOCAMPUS_DIR / "imagesTr"
    if not images.is_dir():
        pytest.skip(reason=f"{NEEDS_SHARED_DATA}hippocampus data not found at {images}")
    return HIPPOCAMPUS_DIR


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped test gave (``pytest.skip``'s "Skipped: " prefix dropped)."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def skipped_line(reasons: list[str]) -> str:
    """``skipped: 15 (12 need ../shared/data: … not found at PATH; 3 other: WHY ×2, WHY)``:
    skips for missing real data grouped by their text (what is missing, where it was looked
    for), then every other reason with its count."""
    if not reasons:
        return "skipped: 0"
    data = Counter(r for r in reasons if r.startswith(NEEDS_SHARED_DATA))
    other = Counter(r for r in reasons if not r.startswith(NEEDS_SHARED_DATA))
    parts = [f"{n} need {reason.removeprefix('needs ')}" for reason, n in sorted(data.items())]
    if other:
        listed = ", ".join(r if n == 1 else f"{r} ×{n}" for r, n in sorted(other.items()))
        parts.append(f"{other.total()} other: {listed}")
    return f"skipped: {len(reasons)} ({'; '.join(parts)})"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line saying how many tests were skipped and why (missing real data above all)."""
    reports = terminalreporter.stats.get("skipped", [])
    reasons = [_skip_reason(report) for report in reports]  # tests and whole skipped modules
    terminalreporter.write_line(skipped_line(reasons))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace; $SALIGN_HOME points at it so commands without --workspace use it too."""
    root = tmp_path / "workspace"
    monkeypatch.setenv("SALIGN_HOME", str(root))
    return root


@pytest.fixture
def cli():
    """Invoke the `salign` Typer app in-process: ``cli("index", str(folder))`` -> click Result."""
    from salign_cli.cli.app import app

    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(app, list(args), **kwargs)

    return invoke


_LOOPBACK_PREFIXES = ("127.", "::1", "localhost")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection that leaves this machine; tests use loopback stand-ins only."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else str(address)
        if (
            isinstance(host, str)
            and not host.startswith(_LOOPBACK_PREFIXES)
            and self.family
            in (
                socket.AF_INET,
                socket.AF_INET6,
            )
        ):
            raise OSError(f"network access blocked in tests (tried {address!r})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture
def make_bundle(tmp_path: Path):
    """Factory for a tiny, randomly initialised fine-tuned bundle folder (via ``save_bundle``).

    ``make_bundle(modality="CT", classes=("background", "organ"), target_spacing_mm=(2.0, 2.0),
    slice_axis=None, kind="finetuned", seed=0, name="bundle") -> Path``; width 4, depth 2.
    """
    counter = iter(range(1_000_000))

    def build(
        modality: str = "MR",
        classes: tuple[str, ...] = ("background", "anterior", "posterior"),
        target_spacing_mm: tuple[float, float] | None = None,
        slice_axis: int | None = None,
        kind: str = "finetuned",
        seed: int = 0,
        name: str | None = None,
    ) -> Path:
        from salign_cli.bundles.store import untrained_bundle
        from salign_cli.data.preprocess import PreprocessConfig
        from salign_cli.model.unet import UNetConfig

        return untrained_bundle(
            tmp_path / (name or f"bundle-{next(counter)}"),
            classes,
            modality=modality,
            architecture=UNetConfig(num_classes=len(classes), width=4, depth=2),
            preprocessing=PreprocessConfig(
                modality=modality, slice_axis=slice_axis, target_spacing_mm=target_spacing_mm
            ),
            kind=kind,
            seed=seed,
        )

    return build
