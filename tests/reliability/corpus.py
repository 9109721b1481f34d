"""The bad-input corpus: one tiny MSD-style dataset per kind of bad input, built on demand.

Every case holds two good labelled scans (``good_0``, ``good_1``, 8 x 8 x 4 voxels, MR) beside
the offender, so a command that skips bad scans still has work to do, and a command that fails
must fail because of the offender alone. ``BadCase.offender`` is the path every message about it
must name. Shared by the reliability tests (importable because pytest puts this folder on
``sys.path``, as for ``tests/train/tiny_training.py``).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nifti import write_nifti

SHAPE = (8, 8, 4)
CLASSES = {"0": "background", "1": "organ"}


@dataclass(frozen=True)
class BadCase:
    """Where one kind of bad input lies and how each command is pointed at it.

    ``folders``: what ``index``/``pretrain``/``finetune --data`` get; ``scans``: the inputs of
    ``segment`` (plus ``segment_options``); ``predictions``/``references``: ``evaluate``'s two
    folders, where ``evaluate_offender`` is the file at fault. ``unreadable`` lists files that
    the test must make unreadable (tests run as root, so ``chmod 000`` would not stop a read).
    """

    kind: str
    offender: Path
    folders: tuple[Path, ...]
    scans: tuple[Path, ...]
    predictions: Path
    references: Path
    evaluate_offender: Path
    segment_options: tuple[str, ...] = ()
    unreadable: tuple[Path, ...] = field(default=())


def good_image(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """MR-like float32 noise around 100 with a brighter block (what the label marks)."""
    image = np.random.default_rng(seed).normal(100.0, 10.0, size=shape).astype(np.float32)
    image[_block(shape)] += 80.0
    return image


def good_label(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[_block(shape)] = 1
    return label


def _block(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(n // 4, max(n // 4 + 1, 3 * n // 4)) for n in shape)


def write_dataset(root: Path, cases: int = 2) -> Path:
    """``root/data``: an MSD folder (imagesTr, labelsTr, dataset.json) with ``cases`` good
    labelled scans; ``root/predictions``: a perfect mask for each. Returns ``root/data``."""
    data = root / "data"
    for seed in range(cases):
        write_nifti(data / "imagesTr" / f"good_{seed}.nii.gz", good_image(seed))
        write_nifti(data / "labelsTr" / f"good_{seed}.nii.gz", good_label())
        write_nifti(root / "predictions" / f"good_{seed}.nii.gz", good_label())
    (data / "dataset.json").write_text(
        json.dumps({"name": "reliability", "modality": {"0": "MRI"}, "labels": CLASSES})
    )
    return data


Damage = Callable[[Path, np.ndarray], object]  # writes a damaged version of an array


def _plain(path: Path, array: np.ndarray) -> None:
    write_nifti(path, array)


def _image_case(kind: str, root: Path, damage: Damage, *, label_too: bool = False) -> BadCase:
    """The offender is the image ``bad``; ``evaluate`` gets the same damage in a predicted mask.

    ``label_too``: the reference label shares the damage (a 2D image has a 2D label), so only
    the image itself is at fault.
    """
    data = write_dataset(root)
    image = data / "imagesTr" / "bad.nii.gz"
    damage(image, good_image(7))
    (damage if label_too else _plain)(data / "labelsTr" / "bad.nii.gz", good_label())
    prediction = root / "predictions" / "bad.nii.gz"
    damage(prediction, good_label())
    return BadCase(
        kind,
        offender=image,
        folders=(data,),
        scans=(image,),
        predictions=prediction.parent,
        references=data / "labelsTr",
        evaluate_offender=prediction,
    )


def _label_case(
    kind: str, root: Path, label: np.ndarray, affine: np.ndarray | None = None
) -> BadCase:
    """The offender is the label of a good image ``bad``; ``segment`` reads the image only."""
    data = write_dataset(root)
    image = write_nifti(data / "imagesTr" / "bad.nii.gz", good_image(7))
    offender = write_nifti(data / "labelsTr" / "bad.nii.gz", label, affine)
    write_nifti(root / "predictions" / "bad.nii.gz", good_label())
    return BadCase(
        kind,
        offender=offender,
        folders=(data,),
        scans=(image,),
        predictions=root / "predictions",
        references=data / "labelsTr",
        evaluate_offender=offender,
    )


def _truncated(path: Path, array: np.ndarray) -> None:
    write_nifti(path, array)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_nifti(path: Path, array: np.ndarray) -> None:
    path.write_text("patient,scan\n1,liver\n")  # a CSV someone named .nii.gz


def _zero_bytes(path: Path, array: np.ndarray) -> None:
    path.write_bytes(b"")


def _two_d(path: Path, array: np.ndarray) -> None:
    write_nifti(path, np.ascontiguousarray(array[:, :, 0]))


def _four_d(path: Path, array: np.ndarray) -> None:
    write_nifti(path, np.stack([array] * 3, axis=-1))


def _non_finite(path: Path, array: np.ndarray) -> None:
    damaged = array.astype(np.float32)
    damaged[0, 0, 0], damaged[1, 1, 1] = np.nan, np.inf
    write_nifti(path, damaged)


def _constant(path: Path, array: np.ndarray) -> None:
    write_nifti(path, np.zeros_like(array))


def _sheared(path: Path, array: np.ndarray) -> None:
    affine = np.eye(4)
    affine[0, 1] = 0.5  # x depends on j: the direction columns are not orthogonal
    write_nifti(path, array, affine)


def _folder(path: Path, array: np.ndarray) -> None:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("a folder named like a scan\n")


def _enormous(path: Path, array: np.ndarray) -> None:
    """A header declaring 2.7e13 float32 voxels in front of 256 bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((30_000, 30_000, 30_000))
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * (4 + 256)))


def _duplicate_names(root: Path) -> BadCase:
    """Two sites each with a case called ``dup``; segment sends both into one output folder;
    ``evaluate`` gets two predictions of one case (``good_1.nii.gz`` and ``good_1.nii``)."""
    sites = tuple(write_dataset(root / site) for site in ("site_a", "site_b"))
    for seed, data in enumerate(sites):
        write_nifti(data / "imagesTr" / "dup.nii.gz", good_image(10 + seed))
        write_nifti(data / "labelsTr" / "dup.nii.gz", good_label())
    predictions = root / "site_a" / "predictions"
    write_nifti(predictions / "good_1.nii", good_label())
    return BadCase(
        "duplicate case names",
        offender=sites[1] / "imagesTr" / "dup.nii.gz",
        folders=sites,
        scans=tuple(data / "imagesTr" / "dup.nii.gz" for data in sites),
        predictions=predictions,
        references=sites[0] / "labelsTr",
        evaluate_offender=predictions / "good_1.nii.gz",
        segment_options=("-o", str(root / "masks")),
    )


def _symlink_loop(root: Path) -> BadCase:
    """``imagesTr/again`` links back to ``imagesTr`` (and likewise in the other folders)."""
    data = write_dataset(root)
    folders = (data / "imagesTr", data / "labelsTr", root / "predictions")
    for folder in folders:
        (folder / "again").symlink_to(folder, target_is_directory=True)
    return BadCase(
        "symlink loop",
        offender=folders[0] / "again",
        folders=(data,),
        scans=(folders[0],),
        predictions=folders[2],
        references=folders[1],
        evaluate_offender=folders[2] / "again",
        segment_options=("--recursive", "-o", str(root / "masks")),
    )


def _unreadable(root: Path) -> BadCase:
    case = _image_case("unreadable file", root, _plain)
    return dataclasses.replace(case, unreadable=(case.offender, case.evaluate_offender))


BUILDERS: dict[str, Callable[[Path], BadCase]] = {
    "truncated gzip": lambda root: _image_case("truncated gzip", root, _truncated),
    "not a NIfTI": lambda root: _image_case("not a NIfTI", root, _not_nifti),
    "zero bytes": lambda root: _image_case("zero bytes", root, _zero_bytes),
    "2D image": lambda root: _image_case("2D image", root, _two_d, label_too=True),
    "4D image": lambda root: _image_case("4D image", root, _four_d),
    "NaN/Inf voxels": lambda root: _image_case("NaN/Inf voxels", root, _non_finite),
    "constant image": lambda root: _image_case("constant image", root, _constant),
    "label of another shape": lambda root: _label_case(
        "label of another shape", root, good_label((8, 8, 5))
    ),
    "label with another affine": lambda root: _label_case(
        "label with another affine", root, good_label(), np.diag([2.0, 2.0, 2.0, 1.0])
    ),
    "fractional float label": lambda root: _label_case(
        "fractional float label", root, good_label().astype(np.float32) * 0.5
    ),
    "label outside the classes": lambda root: _label_case(
        "label outside the classes", root, good_label() * 5
    ),
    "non-orthonormal directions": lambda root: _image_case(
        "non-orthonormal directions", root, _sheared, label_too=True
    ),
    "directory named x.nii.gz": lambda root: _image_case("directory named x.nii.gz", root, _folder),
    "unreadable file": _unreadable,
    "enormous declared size": lambda root: _image_case("enormous declared size", root, _enormous),
    "duplicate case names": _duplicate_names,
    "symlink loop": _symlink_loop,
}
KINDS = tuple(BUILDERS)
