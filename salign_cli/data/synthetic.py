"""A small, clearly synthetic MR-like dataset for `salign demo` and the end-to-end tests.

Each case is a 3D volume with two smooth structures whose cross-section changes from slice to
slice (so nearby slices look alike but not identical, as SAL assumes): a curved tube
("vessel") and an ellipsoid ("organ") inside a body-like ellipse. On top: a smooth bias field,
Rician-like noise and a random intensity scale, so normalisation is needed as on real MR.
Cases are written in the MSD layout (``imagesTr/``, ``labelsTr/``, ``dataset.json``) with
non-trivial affines (anisotropic voxels, RAS and LPS, one oblique), so the real pipeline is
exercised end to end. Nothing here is real anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from salign_cli.io.atomic import write_json

CLASS_NAMES = {0: "background", 1: "vessel", 2: "organ"}


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case: intensities, labels and the affine they share."""

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray


def _affine(
    rng: np.random.Generator, index: int, spacing_mm: tuple[float, float, float]
) -> np.ndarray:
    """RAS for most cases, LPS for every third, a 20° in-plane rotation for every fifth."""
    affine = np.diag([*spacing_mm, 1.0])
    if index % 3 == 2:
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    if index % 5 == 4:
        angle = np.deg2rad(20.0)
        rotation = np.eye(4)
        rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        affine = rotation @ affine
    affine[:3, 3] = rng.uniform(-50, 50, size=3)
    return affine


def make_case(
    seed: int,
    shape: tuple[int, int, int] = (48, 48, 32),
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 2.0),
) -> SyntheticCase:
    """Generate one case deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (x / rng.uniform(0.8, 0.95)) ** 2 + (y / rng.uniform(0.7, 0.9)) ** 2 < 1.0

    # a tube whose centre drifts along a sine as z changes: its cross-section moves slice to slice
    phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.3)
    centre_x = -0.35 + amplitude * np.sin(2.0 * z + phase)
    centre_y = 0.2 + amplitude * np.cos(1.5 * z + phase)
    radius = rng.uniform(0.13, 0.2) * (1.0 + 0.3 * z)
    vessel = ((x - centre_x) ** 2 + (y - centre_y) ** 2 < radius**2) & body

    # an ellipsoid whose cross-section grows then shrinks along z
    organ_centre = rng.uniform([0.15, -0.35, -0.2], [0.4, -0.1, 0.2])
    organ_radii = rng.uniform([0.25, 0.2, 0.45], [0.35, 0.3, 0.7])
    organ = (((np.stack([x, y, z], -1) - organ_centre) / organ_radii) ** 2).sum(-1) < 1.0
    organ &= body & ~vessel

    labels = np.zeros(shape, dtype=np.uint8)
    labels[vessel] = 1
    labels[organ] = 2
    tissue = np.where(body, 0.45, 0.02) + 0.4 * vessel + 0.25 * organ
    texture = 0.05 * np.sin(9 * x + rng.uniform(0, 6)) * np.cos(7 * y + rng.uniform(0, 6))
    bias = 1.0 + 0.25 * (
        rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y + 0.5 * rng.uniform(-1, 1) * z
    )
    noise = rng.normal(0, 0.04, size=(2, *shape))
    signal = (tissue + texture) * bias
    image = np.sqrt((signal + noise[0]) ** 2 + noise[1] ** 2) * rng.uniform(200, 3000)
    return SyntheticCase(image.astype(np.float32), labels, _affine(rng, seed, spacing_mm))


def write_dataset(folder: Path, cases: int = 16, test_cases: int = 4, seed: int = 0) -> Path:
    """Write a synthetic dataset to ``folder`` in the MSD layout; returns ``folder``.

    ``imagesTr``/``labelsTr`` hold ``cases`` training cases; ``imagesTs`` holds ``test_cases``
    more, whose reference labels go to ``labelsTs`` (MSD keeps test labels private; the demo
    keeps them so it can score its own masks).
    """
    training = []
    for split, count, offset in (("Tr", cases, 0), ("Ts", test_cases, cases)):
        (folder / f"images{split}").mkdir(parents=True, exist_ok=True)
        (folder / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for index in range(offset, offset + count):
            case = make_case(seed * 1000 + index)
            name = f"synthetic_{index:03d}.nii.gz"
            nib.save(nib.Nifti1Image(case.image, case.affine), folder / f"images{split}" / name)
            nib.save(nib.Nifti1Image(case.labels, case.affine), folder / f"labels{split}" / name)
            if split == "Tr":
                training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    write_json(
        folder / "dataset.json",
        {
            "name": "salign-synthetic",
            "description": "Synthetic MR-like volumes made by salign for its demo; not real anatomy.",
            "modality": {"0": "MRI"},
            "labels": {str(k): v for k, v in CLASS_NAMES.items()},
            "numTraining": cases,
            "numTest": test_cases,
            "training": training,
            "test": [
                f"./imagesTs/synthetic_{i:03d}.nii.gz" for i in range(cases, cases + test_cases)
            ],
        },
    )
    return folder
