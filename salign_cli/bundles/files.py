"""Reading a bundle's files safely: the contract, the weights' hash, the limits.

Every file is checked before it is read (a regular file inside the bundle, within its size
limit), and the weights are hashed from the very bytes that will be parsed. Nothing here
handles tensors; only parsing a contract imports the config classes it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from salign_cli import __version__
from salign_cli.bundles.contract import LIMITS, SCHEMA_VERSION, BundleContract
from salign_cli.bundles.layout import BUNDLE_FILES, CARD_FILE, CONTRACT_FILE, WEIGHTS_FILE
from salign_cli.errors import InputError, SalignError
from salign_cli.io.hashing import bytes_sha256


def _redownload_hint(source: str | None) -> str:
    if source:
        return f"re-download with salign weights download {source} --force"
    return "re-download it (salign weights download NAME --force) or re-export it from its run"


def weights_mismatch_error(weights: Path, pinned_by: str, source: str | None) -> InputError:
    """The one message for weights whose hash differs from the one that pins them."""
    return InputError(
        f"{weights}: weights do not match the sha256 in {pinned_by}; the bundle is corrupt or "
        f"was tampered with; {_redownload_hint(source)}"
    )


def _containment_root(folder: Path) -> Path:
    """Where a bundle's links may lead: the repository folder of a Hub cache snapshot (its blobs
    live there), else the bundle folder itself."""
    if folder.parent.name == "snapshots":
        return folder.parent.parent
    return folder


def _link_stays_inside(link: Path, root: Path) -> bool:
    return link.resolve().is_relative_to(root.resolve())


def bundle_file(folder: Path, name: str, limit_key: str) -> Path | None:
    """``folder/name`` if it exists, checked before it is read: a regular file inside the
    bundle within its size limit. ``None`` when it does not exist.

    A symbolic link could point anywhere on the machine, so one is followed only when it stays
    inside the bundle, or, for a Hub cache snapshot (``models--org--name/snapshots/<commit>``,
    whose entries ``huggingface_hub`` makes as links to ``../../blobs/<hash>``), inside that
    repository's cache folder."""
    path = Path(folder) / name
    if path.is_symlink() and not _link_stays_inside(path, _containment_root(Path(folder))):
        raise InputError(
            f"{path}: a symbolic link out of the bundle; a bundle's files must be inside its "
            "folder (a hostile bundle could point anywhere); re-download or re-export it"
        )
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; re-download or re-export the bundle")
    size = path.stat().st_size
    if size > LIMITS[limit_key]:
        raise InputError(
            f"{path}: {size:,} bytes, over salign's limit of {LIMITS[limit_key]:,} for this file "
            "(a hostile or corrupt bundle); re-download or re-export it"
        )
    return path


def read_contract(folder: Path) -> BundleContract:
    """Read and validate ``folder/salign.json`` into a typed `BundleContract`.

    Raises ``SalignError`` when the bundle was written by a newer salign (schema version), and
    ``InputError`` naming the file for anything else that is wrong (including a contract that
    is a symbolic link, too large, or asks for a network over `LIMITS`).
    """
    checked = bundle_file(Path(folder), CONTRACT_FILE, "contract_bytes")
    if checked is None:
        raise InputError(
            f"{folder}: not a salign bundle (no {CONTRACT_FILE}); a bundle folder holds "
            f"{', '.join(BUNDLE_FILES)}"
        )
    path = checked
    bundle_file(Path(folder), CARD_FILE, "card_bytes")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"{path}: not valid JSON ({error}); re-export or re-download the bundle"
        ) from None
    if not isinstance(payload, dict):
        raise InputError(f"{path}: must hold a JSON object; re-export or re-download the bundle")
    version = payload.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SalignError(
            f"{path}: bundle schema version {version} was written by salign "
            f"{payload.get('salign_version', '?')}; this salign {__version__} reads up to version "
            f"{SCHEMA_VERSION}; upgrade salign (pip install -U salign)"
        )
    try:
        return BundleContract.from_dict(payload)
    except (ValueError, TypeError) as error:
        raise InputError(f"{path}: invalid bundle contract: {error}") from None


def verify_weights(folder: Path, contract: BundleContract, source: str | None = None) -> bytes:
    """Read ``model.safetensors`` and check it against ``weights_sha256``; return the bytes.

    Returning the very bytes that were hashed (rather than re-opening the file) means what gets
    loaded is exactly what was verified. ``source`` (a ``--model`` spec) makes the fix concrete.
    """
    checked = bundle_file(Path(folder), WEIGHTS_FILE, "weights_bytes")
    if checked is None:
        raise InputError(f"{folder}: bundle has no {WEIGHTS_FILE}; {_redownload_hint(source)}")
    weights = checked
    if contract.weights_sha256 is None:
        raise InputError(
            f"{folder / CONTRACT_FILE}: weights_sha256 is missing; re-export the bundle"
        )
    data = weights.read_bytes()
    if bytes_sha256(data) != contract.weights_sha256:
        raise weights_mismatch_error(weights, CONTRACT_FILE, source)
    return data
