"""How fast `salign index` walks a large folder: a cold index, then a warm re-index.

Writes ``--count`` small NIfTI scans (MSD layout, every other one with a label in ``labelsTr/``)
to a temporary folder, then times :func:`salign_cli.data.index.index_folders` twice, each run in
a fresh child process so that its peak RSS is its own. Prints a table; nothing is kept.

    python benchmarks/index_speed.py                 # 10 000 scans
    python benchmarks/index_speed.py --count 2000 --workers 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 16)


def write_corpus(root: Path, count: int, seed: int = 0) -> int:
    """``count`` distinct int16 scans and ``ceil(count / 2)`` labels; returns the files written."""
    rng = np.random.default_rng(seed)
    images, labels = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir()
    for case in range(count):
        scan = rng.integers(-100, 1000, SHAPE, dtype=np.int16)
        nib.save(nib.Nifti1Image(scan, np.eye(4)), images / f"case_{case:05d}.nii.gz")
        if case % 2 == 0:
            mask = (scan > 800).astype(np.uint8)
            nib.save(nib.Nifti1Image(mask, np.eye(4)), labels / f"case_{case:05d}.nii.gz")
    return count + (count + 1) // 2


def run_phase(root: Path, workspace: Path, workers: int | None) -> dict[str, float]:
    """One index run in this process: seconds, scans and peak RSS (MiB)."""
    from salign_cli.data.index import index_folders

    started = time.perf_counter()
    result = index_folders([root], workspace, workers=workers)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {
        "seconds": seconds,
        "scans": len(result.records),
        "read": result.new + result.changed + result.rechecked,
        "peak_rss_mib": peak_mib,
    }


def phase_in_child(root: Path, workspace: Path, workers: int | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--phase", str(root), str(workspace)]
    if workers:
        command += ["--workers", str(workers)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="scans to generate")
    parser.add_argument("--workers", type=int, default=None, help="index threads (default: auto)")
    parser.add_argument("--phase", nargs=2, metavar=("ROOT", "WORKSPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(Path(args.phase[0]), Path(args.phase[1]), args.workers)))
        return

    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="salign-index-bench-") as temporary:
        root, workspace = Path(temporary) / "data", Path(temporary) / "workspace"
        started = time.perf_counter()
        files = write_corpus(root, args.count)
        generated_s = time.perf_counter() - started
        table = Table(
            title=f"salign index: {args.count} scans ({files} files, {SHAPE} int16 .nii.gz), "
            f"generated in {generated_s:.1f} s"
        )
        for column in ("run", "scans", "read", "seconds", "files/s", "peak RSS (MiB)"):
            table.add_column(column, justify="right" if column != "run" else "left")
        for name in ("cold", "warm"):
            phase = phase_in_child(root, workspace, args.workers)
            table.add_row(
                name,
                str(phase["scans"]),
                str(phase["read"]),
                f"{phase['seconds']:.2f}",
                f"{files / phase['seconds']:.0f}",
                f"{phase['peak_rss_mib']:.0f}",
            )
        Console().print(table)


if __name__ == "__main__":
    main()
