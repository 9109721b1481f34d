"""Where salign keeps what it makes: one folder, chosen without any required environment variable.

Precedence: an explicit ``--workspace DIR`` > ``$SALIGN_HOME`` > ``platformdirs.user_data_dir("salign")``.

Layout inside the workspace::

    index.sqlite                  scans found by `salign index`
    cache/                        preprocessed slice arrays (float16, memory-mapped)
    runs/<kind>-<timestamp>/      checkpoints, metrics.jsonl, report.json, the final bundle
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from salign_cli.bundles.layout import bundle_folder_in

ENV_VAR = "SALIGN_HOME"
RUN_KINDS = ("pretrain", "finetune", "bench")
CHECKPOINT_DIR = "checkpoints"  # inside a run folder; what makes a folder a run to resume


def is_run_folder(path: Path | str) -> bool:
    """Whether ``path`` is a training run's folder (it holds checkpoints), not a folder of scans."""
    return (Path(path) / CHECKPOINT_DIR).is_dir()


def default_workspace_root() -> Path:
    """The workspace used when neither ``--workspace`` nor ``$SALIGN_HOME`` is given."""
    import platformdirs  # deferred: keeps `salign --help` fast

    return Path(platformdirs.user_data_dir("salign", appauthor=False))


@dataclass(frozen=True)
class Workspace:
    """A resolved workspace folder and the well-known paths inside it.

    Creating the object touches nothing on disk; :meth:`ensure` creates the folders.
    """

    root: Path

    @classmethod
    def resolve(cls, explicit: Path | str | None = None) -> Workspace:
        """Pick the workspace by precedence: ``explicit`` > ``$SALIGN_HOME`` > the user data dir."""
        if explicit:
            return cls(Path(explicit).expanduser().resolve())
        from_env = os.environ.get(ENV_VAR)
        if from_env:
            return cls(Path(from_env).expanduser().resolve())
        return cls(default_workspace_root())

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def ensure(self) -> Workspace:
        """Create the workspace folders if missing and return ``self``."""
        for folder in (self.root, self.cache_dir, self.runs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def new_run_dir(self, kind: str, now: datetime | None = None) -> Path:
        """Create and return ``runs/<kind>-<UTC timestamp>``, unique even within one second."""
        if kind not in RUN_KINDS:
            raise ValueError(f"unknown run kind {kind!r}; expected one of {RUN_KINDS}")
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        candidate = self.runs_dir / f"{kind}-{stamp}"
        suffix = 1
        while True:
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                suffix += 1
                candidate = self.runs_dir / f"{kind}-{stamp}-{suffix}"

    def runs(self, kind: str) -> list[Path]:
        """Run folders of one kind, oldest first: by modification time (a resumed run counts as
        recent), then by name, whose timestamp says when the run started."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(
            (p for p in self.runs_dir.glob(f"{kind}-*") if p.is_dir()),
            key=lambda p: (p.stat().st_mtime, p.name),
        )

    def run_to_resume(self, kind: str, resume: Path | str | bool) -> Path:
        """The run folder ``--resume`` means: the one named, else the newest run of ``kind``."""
        from salign_cli.errors import InputError, OptionError

        if not isinstance(resume, bool):
            folder = Path(resume).expanduser().resolve()
            if not folder.is_dir():
                raise OptionError("resume_from", f"{resume}: no such run folder; pass a run folder")
            return folder
        latest = self.latest_run(kind, with_bundle=False)
        if latest is None:
            raise InputError(f"{self.runs_dir}: no {kind} run to resume; drop --resume")
        return latest

    def latest_run(self, kind: str, *, with_bundle: bool = True) -> Path | None:
        """The newest run of ``kind``; with ``with_bundle`` only runs that finished a bundle."""
        for run in reversed(self.runs(kind)):
            if not with_bundle or bundle_folder_in(run) is not None:
                return run
        return None
