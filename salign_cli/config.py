"""One policy for reading a configuration back from JSON (a checkpoint, a bundle, a report),
and the stage defaults that the command line shows without importing torch.

Every ``from_dict`` of salign's configuration dataclasses goes through `known_fields`:

- an **unknown key is an error** (`ConfigError`, naming the keys and the known ones): a typo in a
  hand-edited file, or a file from a newer salign, must not be read as something else;
- a **missing key takes the field's default**, so files written before a field existed still
  load (a field without a default is still required: the dataclass says so).

`ConfigError` is an `InputError` (exit 2 when it reaches the CLI) and a ``ValueError``, so the
readers of bundle files keep wrapping it with the file's path. Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from salign_cli.errors import InputError

# The one default schedule of `salign pretrain` and `pretrain()` (the benchmarks' protocols set
# their own and say so): the reference setting; ``--steps 300`` is the quick CPU run. Here, not
# in the torch-using stage module, so the CLI can show it without importing torch.
PRETRAIN_STEPS = 1500
PRETRAIN_PAIRS = 32  # slice pairs per step, all GPUs together


class ConfigError(InputError, ValueError):
    """A stored or given configuration with keys its dataclass does not have."""


def known_fields(
    cls: type, payload: Mapping[str, Any], what: str, *, ignored: Iterable[str] = ()
) -> dict[str, Any]:
    """``payload`` as keyword arguments for dataclass ``cls``, minus the ``ignored`` keys
    (bookkeeping such as a format version); `ConfigError` for any key that is not a field.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example:
    ...     steps: int = 1
    >>> known_fields(Example, {"steps": 3}, "example")
    {'steps': 3}
    >>> known_fields(Example, {"stpes": 3}, "example")
    Traceback (most recent call last):
    ...
    salign_cli.config.ConfigError: unknown example key(s) stpes; known: steps
    """
    if not isinstance(payload, Mapping):
        raise ConfigError(f"{what} must be a JSON object, got {type(payload).__name__}")
    names = {field.name for field in dataclasses.fields(cls)}
    skipped = set(ignored)
    unknown = sorted(set(payload) - names - skipped)
    if unknown:
        raise ConfigError(
            f"unknown {what} key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    return {key: value for key, value in payload.items() if key not in skipped}
