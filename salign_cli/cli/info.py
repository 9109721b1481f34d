"""`salign info`: versions, compute device, workspace and cache paths (torch imported only if present)."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from rich.table import Table

from salign_cli import __version__
from salign_cli.cli.common import WorkspaceOption, console
from salign_cli.workspace import Workspace

PACKAGES = (
    "torch",
    "numpy",
    "nibabel",
    "SimpleITK",
    "typer",
    "rich",
    "huggingface_hub",
    "safetensors",
)


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _device_summary() -> str:
    """Describe the best compute device; importing torch costs ~1 s, so only here."""
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"cuda ({torch.cuda.device_count()}x {', '.join(sorted(set(names)))})"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps (Apple GPU)"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def info(
    workspace: WorkspaceOption = None,
    device: bool = True,
) -> None:
    """Show versions, the compute device, and where salign keeps its files.

    Example: salign info --no-device   (skips importing torch, answers instantly)
    """
    from salign_cli.bundles.hub_paths import hub_cache_dir

    ws = Workspace.resolve(workspace)
    table = Table(title=f"salign {__version__}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("python", platform.python_version())
    for name in PACKAGES:
        table.add_row(name, _package_version(name))
    if device:
        table.add_row("device", _device_summary())
    table.add_row("workspace", str(ws.root))
    table.add_row("index", str(ws.index_path))
    table.add_row("slice cache", str(ws.cache_dir))
    table.add_row("runs", str(ws.runs_dir))
    table.add_row("hub cache", str(hub_cache_dir()))
    console.print(table)
