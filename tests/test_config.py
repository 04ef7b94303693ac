"""Strict reading of recipes: unknown keys and wrong types are errors naming the key."""

import pytest

from crossling.config import TrainConfig, load_train_config
from crossling.errors import ConfigError


def test_defaults_are_the_reference_recipe():
    config = TrainConfig()
    assert (config.learning_rate, config.max_steps) == (6e-5, 4000)
    assert (config.warmup_fraction, config.hold_fraction, config.decay_fraction) == (0.1, 0.4, 0.5)
    assert config.schedule == "tri_stage_linear" and config.freeze_feature_encoder


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("learning_rat = 1e-3\n")
    with pytest.raises(ConfigError, match="learning_rat.*valid keys:.*learning_rate"):
        load_train_config(path)


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[recipe]\nmax_steps = 'many'\n")
    with pytest.raises(ConfigError, match="max_steps must be int"):
        load_train_config(path)


def test_recipe_table_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[recipe]\nlearning_rate = 2e-3\nmax_steps = 100\n")
    config = load_train_config(path, {"max_steps": 50, "batch_seconds": None})
    assert config.learning_rate == 2e-3 and config.max_steps == 50


def test_bad_schedule_lists_choices():
    with pytest.raises(ConfigError, match="tri_stage_exponential"):
        TrainConfig(schedule="cosine")
