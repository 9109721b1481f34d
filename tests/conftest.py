"""Shared test fixtures: paths to the real data beside the repo, a CLI runner, and no network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURES_DIR = SHARED_DATA / "fixtures"
HIPPOCAMPUS_DIR = SHARED_DATA / "hippocampus"


@pytest.fixture
def fixtures_dir() -> Path:
    """Real single-scan fixtures (RAS CT, LPS MR, anisotropic CT); skip when absent."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"real fixtures not found at {FIXTURES_DIR}")
    return FIXTURES_DIR


@pytest.fixture
def hippocampus_dir() -> Path:
    """MSD Task04 Hippocampus (200 labelled MRI crops); skip when absent."""
    if not (HIPPOCAMPUS_DIR / "imagesTr").is_dir():
        pytest.skip(f"hippocampus data not found at {HIPPOCAMPUS_DIR}")
    return HIPPOCAMPUS_DIR


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
