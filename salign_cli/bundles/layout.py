"""What a bundle folder holds, and where a run keeps its bundle: names only, no imports.

The one place that knows ``salign.json``, ``model.safetensors`` and ``README.md`` by name and
that a run folder's finished bundle is its ``bundle/``. It imports nothing, so the workspace
and every bundle module can use it without an import cycle.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_FILE = "model.safetensors"
CONTRACT_FILE = "salign.json"
CARD_FILE = "README.md"
BUNDLE_FILES = (CONTRACT_FILE, CARD_FILE, WEIGHTS_FILE)
RUN_BUNDLE_FOLDER = "bundle"  # runs/<kind>-<time>/bundle


def bundle_folder_in(path: Path) -> Path | None:
    """``path`` itself when it holds a bundle, else a run folder's finished ``bundle/``, else
    ``None``: the one rule for "a run folder stands for its bundle".

    Example: ``bundle_folder_in(Path("runs/finetune-20250101-120000"))`` →
    ``runs/finetune-20250101-120000/bundle`` once that run has written its bundle.
    """
    for candidate in (path, path / RUN_BUNDLE_FOLDER):
        if (candidate / CONTRACT_FILE).is_file():
            return candidate
    return None
