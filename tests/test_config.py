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


def test_eval_every_is_a_nonnegative_int(tmp_path):
    assert TrainConfig().eval_every == 500 and TrainConfig(eval_every=0).eval_every == 0
    with pytest.raises(ConfigError, match="eval_every must be >= 0"):
        TrainConfig(eval_every=-1)
    path = tmp_path / "run.toml"
    path.write_text("[recipe]\neval_every = 2.5\n")
    with pytest.raises(ConfigError, match="eval_every must be int"):
        load_train_config(path)


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
    ({"learning_rate": float("nan")}, "learning_rate must be > 0, got nan"),
    ({"warmup_fraction": float("nan")}, "must sum to 1, got nan"),
])
def test_nan_recipe_values_are_refused(values, message):
    # TOML can spell nan; a NaN learning rate or schedule fraction compared false with every bound.
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)
