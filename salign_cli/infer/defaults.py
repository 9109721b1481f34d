"""What `salign segment` does by default with a bundle: the ``inference`` section of its contract.

Fine-tuning decides these (the recipe's test-time mirroring; validation decides whether keeping
the largest connected part of each class helps) and records them, so a user gets the inference
the reported validation Dice was measured with. Command-line flags override them. Bundles from
before this section existed load with `LEGACY` (no TTA, no post-processing), as they were used.
Torch-free: the contract is read by ``salign weights info`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from salign_cli.config import known_fields

MIRRORS = ("lr", "none", "all")


@dataclass(frozen=True)
class InferenceDefaults:
    """``tta``: average over the mirrored views ``mirror`` allows (``lr``: the left-right axis,
    ``all``: both in-plane axes, ``none``); ``largest_component``: keep only the largest
    connected part of each class."""

    tta: bool = False
    mirror: str = "all"
    largest_component: bool = False

    def __post_init__(self) -> None:
        if self.mirror not in MIRRORS:
            raise ValueError(f"inference.mirror must be one of {MIRRORS}, got {self.mirror!r}")
        for name in ("tta", "largest_component"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"inference.{name} must be true or false")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any] | None) -> InferenceDefaults:
        """Rebuild from `to_dict` output (``None``: `LEGACY`; `salign_cli.config`'s policy)."""
        if payload is None:
            return LEGACY
        return cls(**known_fields(cls, payload, "inference"))


LEGACY = InferenceDefaults()
