"""Memory under load: `index` over many tiny scans and `segment` over many files stay bounded.

Writes ``--index-count`` tiny NIfTI scans (8 x 8 x 4 int16) and a tiny fine-tuned bundle
(width 8, depth 2) to a temporary folder, then runs each phase in a fresh child process, so that
its peak RSS (``resource.getrusage``) is its own: ``index`` over a tenth of the scans and over all
of them, ``segment`` over ``--segment-count / 10`` files and over ``--segment-count`` files.
Bounded memory shows as a peak RSS that does not grow with the number of files; ``s/file`` of
the segment rows is the per-file cost of the batch (target <= 0.1 s on 2 cores, issue 14: the
predictor runs such tiny volumes on one torch thread, see `cpu_threads_for`). Prints a table,
then one JSON line; nothing is kept. This is a benchmark, not a timed test.

    python benchmarks/load.py                                  # 10 000 scans, segment 1 000
    python benchmarks/load.py --index-count 2000 --segment-count 200
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's salign, not whichever one is installed
SHAPE = (8, 8, 4)


def write_scans(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct tiny int16 scans, MR-like (no negative values)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = []
    for case in range(count):
        path = folder / f"case_{case:05d}.nii.gz"
        nib.save(nib.Nifti1Image(rng.integers(0, 1000, SHAPE, dtype=np.int16), np.eye(4)), path)
        paths.append(path)
    return paths


def write_bundle(folder: Path) -> Path:
    from salign_cli.bundles.store import untrained_bundle

    return untrained_bundle(folder, ("background", "foreground"))


def run_phase(phase: str, arguments: list[str]) -> dict[str, float]:
    """One phase in this process: files handled, seconds and peak RSS (MiB)."""
    started = time.perf_counter()
    if phase == "index":
        from salign_cli.data.index import index_folders

        folders, workspace = [Path(a) for a in arguments[:-1]], Path(arguments[-1])
        files = len(index_folders(folders, workspace).records)
    else:
        from salign_cli.infer.jobs import SegmentOptions
        from salign_cli.infer.pipeline import segment

        bundle, output, listing = arguments
        inputs = Path(listing).read_text().splitlines()
        summary = segment(inputs, Path(output), model=bundle, options=SegmentOptions(device="cpu"))
        assert summary.exit_code == 0, summary.to_dict()
        files = len(summary.by_status("written"))
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"files": files, "seconds": seconds, "peak_rss_mib": peak_mib}


def phase_in_child(phase: str, *arguments: Path | str) -> dict[str, float]:
    command = [sys.executable, __file__, "--phase", phase, *map(str, arguments)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _shards(root: Path, paths: list[Path], shards: int) -> list[Path]:
    """Split ``paths`` into ``shards`` sub-folders (so index can be pointed at a tenth)."""
    folders = [root / f"shard_{index}" for index in range(shards)]
    for folder in folders:
        folder.mkdir(parents=True)
    for index, path in enumerate(paths):
        path.rename(folders[index % shards] / path.name)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-count", type=int, default=10_000, help="scans to index")
    parser.add_argument("--segment-count", type=int, default=1_000, help="scans to segment")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase[0], args.phase[1:])))
        return

    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="salign-load-bench-") as temporary:
        root = Path(temporary)
        started = time.perf_counter()
        shards = _shards(root / "scans", write_scans(root / "flat", args.index_count), 10)
        bundle = write_bundle(root / "bundle")
        generated_s = time.perf_counter() - started
        table = Table(
            title=f"salign under load: {SHAPE} int16 scans, generated in {generated_s:.0f} s"
        )
        for column in ("phase", "files", "seconds", "files/s", "s/file", "peak RSS (MiB)"):
            table.add_column(column, justify="left" if column == "phase" else "right")
        rows = [
            ("index (a tenth)", phase_in_child("index", shards[0], root / "ws_tenth")),
            ("index (all)", phase_in_child("index", *shards, root / "ws_all")),
        ]
        scans = sorted(path for shard in shards for path in shard.glob("*.nii.gz"))
        for count in (max(1, args.segment_count // 10), args.segment_count):
            listing = root / f"segment_{count}.txt"
            listing.write_text("\n".join(map(str, scans[:count])))
            phase = phase_in_child("segment", bundle, root / f"masks_{count}", listing)
            rows.append((f"segment {count}", phase))
        for name, phase in rows:
            table.add_row(
                name,
                str(phase["files"]),
                f"{phase['seconds']:.1f}",
                f"{phase['files'] / phase['seconds']:.0f}",
                f"{phase['seconds'] / phase['files']:.3f}",
                f"{phase['peak_rss_mib']:.0f}",
            )
        Console().print(table)
    print(
        json.dumps(
            {
                "benchmark": "load",
                "shape": list(SHAPE),
                "rows": [
                    {"phase": name, **phase, "seconds_per_file": phase["seconds"] / phase["files"]}
                    for name, phase in rows
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
