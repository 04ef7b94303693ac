"""Strict reading of recipes: unknown keys and wrong types are errors naming the key."""

from dataclasses import dataclass

import pytest

from crossling.config import TrainConfig, from_mapping, load_train_config
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


def test_recipe_that_is_not_a_table_is_a_config_error(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("recipe = 5\n")
    with pytest.raises(ConfigError, match=r"\[recipe\] must be a table, got int"):
        load_train_config(path)


@dataclass(frozen=True)
class _Shape:
    name: str
    sizes: tuple[int, int, int] = (1, 2, 3)
    pair: tuple[str, float] = ("a", 1.0)


def test_from_mapping_checks_required_keys_and_fixed_length_tuples():
    with pytest.raises(ConfigError, match=r"here: missing required key\(s\) name"):
        from_mapping(_Shape, {}, "here")
    with pytest.raises(ConfigError, match=r"here: sizes must be a list of 3 values, got 4"):
        from_mapping(_Shape, {"name": "x", "sizes": [1, 2, 3, 4]}, "here")
    with pytest.raises(ConfigError, match=r"here: pair\[1\] must be float, got str"):
        from_mapping(_Shape, {"name": "x", "pair": ["a", "b"]}, "here")
    shape = from_mapping(_Shape, {"name": "x", "sizes": [4, 5, 6], "pair": ["b", 2]}, "here")
    assert shape == _Shape("x", (4, 5, 6), ("b", 2.0))


@pytest.mark.parametrize(("values", "message"), [
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0, got nan"),
    ({"warmup_fraction": float("nan")}, "warmup_fraction must be a finite number >= 0 and <= 1, got nan"),
])
def test_nan_recipe_values_are_refused(values, message):
    # TOML can spell nan; a NaN learning rate or schedule fraction compared false with every bound.
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


@pytest.mark.parametrize("key, value, message", [
    ("learning_rate", "inf", "learning_rate must be a finite number > 0, got inf"),
    ("learning_rate", "nan", "learning_rate must be a finite number > 0, got nan"),
    ("max_grad_norm", "nan", "max_grad_norm must be a finite number > 0, got nan"),
    ("adam_beta1", "1.5", "adam_beta1 must be a finite number >= 0 and < 1, got 1.5"),
    ("checkpoint_every", "0", "checkpoint_every must be a finite number >= 1, got 0"),
    ("mask_time_length", "0", "mask_time_length must be a finite number >= 1, got 0"),
    ("mask_time_prob", "5.0", "mask_time_prob must be a finite number >= 0 and <= 1, got 5.0"),
    ("layerdrop", "2.0", "layerdrop must be a finite number >= 0 and < 1, got 2.0"),
    ("batch_seconds", "-1.0", "batch_seconds must be a finite number > 0, got -1.0"),
    ("max_steps", "-5", "max_steps must be a finite number >= 1, got -5"),
])
def test_out_of_range_recipe_values_are_refused_naming_the_file_and_key(tmp_path, key, value, message):
    """Each of these was accepted once and failed at run time, or ran to 'done' with non-finite steps."""
    path = tmp_path / "run.toml"
    path.write_text(f"[recipe]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"run.toml \[recipe\]: {message}"):
        load_train_config(path)


def test_negative_schedule_fractions_and_a_zero_exponential_floor_are_refused(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("warmup_fraction = -0.5\nhold_fraction = 1.0\ndecay_fraction = 0.5\n")
    with pytest.raises(ConfigError, match="run.toml: warmup_fraction must be a finite number >= 0"):
        load_train_config(path)
    path.write_text('schedule = "tri_stage_exponential"\nfinal_lr_scale = 0.0\n')
    with pytest.raises(ConfigError, match="run.toml: final_lr_scale must be > 0 with schedule"):
        load_train_config(path)


def test_a_bad_command_line_value_says_it_came_from_the_command_line():
    with pytest.raises(ConfigError, match="command-line values for learning_rate: learning_rate must be"):
        load_train_config(None, {"learning_rate": float("nan"), "max_steps": None})
