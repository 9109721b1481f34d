"""The training commands' flags and the options dataclasses they fill cannot drift apart.

Every field of `FinetuneOptions` / `PretrainOptions` (and the `TrainConfig` fields pretrain
exposes) is either a flag of its command — under the field's name or the one
`salign_cli.cli.common.FIELD_FLAGS` gives (the table that also renders a library error's field
as its flag) — or listed in ``API_ONLY`` with the reason it has no flag. A new field without a
flag, or a flag renamed on one side only, fails here.
"""

from __future__ import annotations

import dataclasses

import pytest
import typer

from salign_cli.cli.app import app
from salign_cli.cli.common import FIELD_FLAGS
from salign_cli.train.finetune_setup import FinetuneOptions
from salign_cli.train.pretrain import PretrainOptions

# fields with no flag, and why
API_ONLY = {
    "finetune": {
        "recipe": "a whole FinetuneRecipe object: the benchmarks pass one; users pick --profile",
        "augment": "switching augmentation off is an ablation of the benchmarks",
        "checkpoint_every": "the benchmarks' knob; the CLI keeps the default",
    },
    "pretrain": {
        "depth": "the U-Net depth of a pre-training run is an ablation (the bench's [depth=...])",
        "embedding_dim": "ablation (bench overrides)",
        "norm": "ablation (bench overrides)",
        "symmetric": "ablation (bench overrides)",
        "temperature": "ablation (bench overrides)",
        "pcl_temperature": "ablation (bench overrides)",
        "pcl_threshold": "ablation (bench overrides)",
    },
}
OPTIONS = {"finetune": FinetuneOptions, "pretrain": PretrainOptions}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_options_field_is_a_flag_or_says_why_not(command):
    params = {p.name for p in typer.main.get_command(app).commands[command].params}
    renamed = {flag: field for field, flag in FIELD_FLAGS.items()}
    flags = {renamed.get(name, name) for name in params}
    fields = {f.name for f in dataclasses.fields(OPTIONS[command])}
    assert fields - flags - set(API_ONLY[command]) == set(), "fields without a flag"
    assert set(API_ONLY[command]) <= fields, "API_ONLY names a field that is gone"
    assert set(API_ONLY[command]).isdisjoint(flags), "API_ONLY names a field that has a flag"


def _field_default(field: dataclasses.Field) -> object:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_flag_defaults_to_its_fields_default(command):
    """A flag's default is its field's: the command and the library run the same defaults (an
    empty list may be given as no flag, None)."""
    renamed = {flag: field for field, flag in FIELD_FLAGS.items()}
    fields = {f.name: f for f in dataclasses.fields(OPTIONS[command])}
    compared = 0
    for param in typer.main.get_command(app).commands[command].params:
        field = fields.get(renamed.get(param.name, param.name))
        if field is None:
            continue
        expected = _field_default(field)
        given = () if param.default is None and expected == () else param.default
        assert given == expected, f"--{param.name}: flag {param.default!r}, field {expected!r}"
        compared += 1
    assert compared >= 10  # the comparison really ran over the command's options
