"""`salign pretrain`'s option defaults are `PretrainOptions`' defaults: one measured set, not two."""

from __future__ import annotations

import dataclasses
import inspect

from salign_cli.cli.pretrain import pretrain as pretrain_command
from salign_cli.train.pretrain import PretrainOptions

# CLI parameter → PretrainOptions field, where the names differ
RENAMED = {"pair_rotation": "pair_rotation_deg"}


def test_cli_defaults_equal_the_api_defaults() -> None:
    api = {field.name: field.default for field in dataclasses.fields(PretrainOptions)}
    compared = 0
    for name, parameter in inspect.signature(pretrain_command).parameters.items():
        field = RENAMED.get(name, name)
        if field in api:
            assert parameter.default == api[field], f"--{name.replace('_', '-')}"
            compared += 1
    assert compared >= 12  # the pretext's options are all covered
