"""One policy for reading configurations back: unknown keys are refused, missing keys default."""

from __future__ import annotations

import pytest

from salign_cli.config import ConfigError, known_fields
from salign_cli.data.augment import AugmentConfig
from salign_cli.data.preprocess import PreprocessConfig
from salign_cli.errors import InputError
from salign_cli.infer.defaults import InferenceDefaults
from salign_cli.model.unet import UNetConfig
from salign_cli.train.engine import TrainConfig
from salign_cli.train.finetune_setup import FinetuneOptions
from salign_cli.train.pretrain import PretrainOptions
from salign_cli.train.recipe import CPU_RECIPE, FinetuneRecipe

# every configuration salign writes into a checkpoint or a bundle, with a valid payload
CONFIGS = [
    (UNetConfig, UNetConfig().to_dict()),
    (AugmentConfig, AugmentConfig().to_dict()),
    (InferenceDefaults, InferenceDefaults().to_dict()),
    (TrainConfig, TrainConfig(steps=3, batch_size=2).to_dict()),
    (PreprocessConfig, PreprocessConfig(modality="CT").to_dict()),
    (FinetuneRecipe, CPU_RECIPE.to_dict()),
    (FinetuneOptions, FinetuneOptions(labels=2).to_dict()),
    (PretrainOptions, PretrainOptions().to_dict()),
]


@pytest.mark.parametrize(("cls", "payload"), CONFIGS, ids=lambda c: getattr(c, "__name__", ""))
def test_every_config_round_trips_and_refuses_an_unknown_key(cls, payload):
    assert cls.from_dict(payload) == cls.from_dict(dict(payload))
    assert cls.from_dict(payload).to_dict() == payload
    with pytest.raises(ConfigError, match=r"unknown .*stpes"):
        cls.from_dict({**payload, "stpes": 3})


def test_a_missing_key_takes_its_default():
    assert TrainConfig.from_dict({"steps": 5, "batch_size": 2}) == TrainConfig(5, 2)
    assert UNetConfig.from_dict({"width": 8}) == UNetConfig(width=8)


def test_the_error_is_bad_input_and_a_value_error_and_names_the_known_keys():
    with pytest.raises(ConfigError) as raised:
        known_fields(UNetConfig, {"widht": 8}, "UNetConfig")
    assert isinstance(raised.value, InputError) and isinstance(raised.value, ValueError)
    assert "widht" in str(raised.value) and "width" in str(raised.value)
    with pytest.raises(ConfigError, match="must be a JSON object"):
        known_fields(UNetConfig, [1, 2], "UNetConfig")  # type: ignore[arg-type]


def test_ignored_keys_are_dropped_not_refused():
    assert known_fields(UNetConfig, {"width": 8, "version": 2}, "x", ignored=("version",)) == {
        "width": 8
    }
