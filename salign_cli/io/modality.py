"""The modalities salign knows and the intensity constants tied to them; no heavy imports.

One home, because the index guesses a scan's modality, preprocessing normalises by it, bundles
record it and ``segment`` warns when a scan's intensities contradict its bundle: if these
numbers drifted apart, a CT called MR by one stage would be normalised as MR by another.
"""

from __future__ import annotations

from typing import Literal

Modality = Literal["CT", "MR"]
MODALITIES: tuple[Modality, ...] = ("CT", "MR")

# A CT scan nearly always holds air (about -1000 HU); an MR scan rarely holds values below 0.
# So a minimum intensity below this reads as CT, for the index's guess and segment's warning.
CT_AIR_THRESHOLD_HU = -500.0
CT_WINDOW_HU = (-1000.0, 1000.0)  # CT intensities are clipped to this window, then scaled
MR_PERCENTILES = (0.5, 99.5)  # MR intensities are clipped to these percentiles, then z-scored


def parse_modality(text: str) -> Modality | None:
    """``"CT"`` or ``"MR"`` for ``text`` in any case, else ``None`` (the caller says why).

    Example: ``parse_modality("ct") == "CT"``; ``parse_modality("PT") is None``.
    """
    upper = text.upper()
    if upper == "CT":
        return "CT"
    if upper == "MR":
        return "MR"
    return None
