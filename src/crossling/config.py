"""The fine-tuning recipe (`TrainConfig`) and strict reading of TOML/dict values into dataclasses.

Defaults are the reference study's recipe; every value can be overridden from a run config or study file."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crossling.errors import ConfigError

SCHEDULES = ("tri_stage_linear", "tri_stage_exponential")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """One run's recipe. `schedule`: 'tri_stage_linear' decays linearly to 0 (the study author's code);
    'tri_stage_exponential' decays exponentially to `final_lr_scale` x peak (fairseq)."""

    learning_rate: float = 6e-5
    max_steps: int = 4000
    warmup_fraction: float = 0.1
    hold_fraction: float = 0.4
    decay_fraction: float = 0.5
    schedule: str = "tri_stage_linear"
    final_lr_scale: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_seconds: float = 200.0
    max_utterance_seconds: float = 30.0
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    layerdrop: float = 0.0
    hidden_dropout: float = 0.0
    activation_dropout: float = 0.0
    attention_dropout: float = 0.0
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    freeze_feature_encoder: bool = True
    checkpoint_every: int = 250
    checkpoint_minutes: float = 10.0  # a resume file at least this often (wall clock), whatever a step costs
    eval_every: int = 500  # dev CER into metrics.jsonl every this many steps (0: never); 8 points over 4k steps
    eval_batch_seconds: float = 400.0
    precision: str = "auto"
    collapse_patience: int = 1000

    def __post_init__(self) -> None:
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("precision", self.precision, PRECISIONS)
        for name, bounds in _RANGES.items():
            bounds.check(name, getattr(self, name))
        fractions = self.warmup_fraction + self.hold_fraction + self.decay_fraction
        if not abs(fractions - 1.0) <= 1e-6:  # written so that NaN fails too
            raise ConfigError(
                f"warmup_fraction + hold_fraction + decay_fraction must sum to 1, got {fractions:g}"
            )
        if self.schedule == "tri_stage_exponential" and not self.final_lr_scale > 0:
            raise ConfigError("final_lr_scale must be > 0 with schedule = 'tri_stage_exponential' (it decays "
                              f"exponentially towards final_lr_scale x the peak; 0 is never reached), got "
                              f"{self.final_lr_scale:g}")


#: Recipe options that change only what a run records or when it writes its resume file, never its
#: weights or scores (dev CER during training is scored with every RNG state and module mode restored;
#: tests/test_metrics.py checks the weights are bit-identical; a resumed CPU run equals an uninterrupted
#: one, tests/test_checkpoints.py). They are left out of a run's identity: changing one neither renames a run
#: nor makes its resume file or result another run's, and run ids stay those of stores written before the
#: option existed. (Options that were hashed before, such as checkpoint_every, stay in: removing them
#: would rename every existing run.)
OBSERVATION_ONLY = frozenset({"eval_every", "checkpoint_minutes"})


def identity_values(config: TrainConfig) -> dict[str, Any]:
    """The recipe's values that make a run this run: all but the `OBSERVATION_ONLY` ones."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in OBSERVATION_ONLY}


@dataclass(frozen=True)
class _Bounds:
    """The valid values of a numeric field: finite, from `low` (excluded if `low_open`) to `high`
    (excluded if `high_open`)."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True

    def check(self, name: str, value: float) -> None:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if not (math.isfinite(value) and above and below):  # NaN fails every comparison
            upper = "" if math.isinf(self.high) else f" and {'<' if self.high_open else '<='} {self.high:g}"
            raise ConfigError(f"{name} must be a finite number {'>' if self.low_open else '>='} {self.low:g}"
                              f"{upper}, got {value!r}")


_POSITIVE, _COUNT, _FRACTION, _PROBABILITY = _Bounds(0, low_open=True), _Bounds(1), _Bounds(0, 1, high_open=False), _Bounds(0, 1)
#: The numeric recipe fields' valid values (a probability of dropping must stay below 1).
_RANGES: dict[str, _Bounds] = {
    "learning_rate": _POSITIVE, "max_steps": _COUNT,
    "warmup_fraction": _FRACTION, "hold_fraction": _FRACTION, "decay_fraction": _FRACTION,
    "final_lr_scale": _FRACTION, "adam_beta1": _PROBABILITY, "adam_beta2": _PROBABILITY,
    "adam_epsilon": _POSITIVE, "weight_decay": _Bounds(0), "max_grad_norm": _POSITIVE,
    "batch_seconds": _POSITIVE, "max_utterance_seconds": _POSITIVE,
    "mask_time_prob": _FRACTION, "mask_time_length": _COUNT, "mask_feature_prob": _FRACTION,
    "mask_feature_length": _COUNT, "layerdrop": _PROBABILITY, "hidden_dropout": _PROBABILITY,
    "activation_dropout": _PROBABILITY, "attention_dropout": _PROBABILITY, "feat_proj_dropout": _PROBABILITY,
    "final_dropout": _PROBABILITY, "checkpoint_every": _COUNT, "checkpoint_minutes": _POSITIVE, "eval_every": _Bounds(0),  # 0: never
    "eval_batch_seconds": _POSITIVE,
    "collapse_patience": _COUNT,
}


#: Seeds every RNG a run draws from accepts (numpy's legacy seeding takes 0 <= seed < 2**32).
SEED_RANGE = (0, 2**32 - 1)


def check_seed(value: int, where: str) -> int:
    """`value` as a seed, or a `ConfigError` naming `where` (numpy, torch and the subsets all take it)."""
    low, high = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: a seed must be an integer from {low} to {high}, got {value!r}")
    return value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} = {value!r} is not valid; choose one of {', '.join(choices)}")


T = TypeVar("T")


def check_keys(values: Any, valid: tuple[str, ...], where: str, required: tuple[str, ...] = ()) -> None:
    """A TOML table must be a table with only `valid` keys and every `required` one; errors say `where`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a table, got {type(values).__name__} {values!r}")
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    missing = [key for key in required if key not in values]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")


def from_mapping(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build dataclass `cls` from `values`, strictly: unknown keys, missing required keys and wrong types
    are errors that name the key, `where` it was found (e.g. 'study.toml [recipe]'), and the valid keys."""
    fields = dataclasses.fields(cls)
    required = tuple(f.name for f in fields if f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    check_keys(values, tuple(sorted(f.name for f in fields)), where, required)
    hints = typing.get_type_hints(cls)
    checked = {key: _coerce(hints[key], value, f"{where}: {key}") for key, value in values.items()}
    try:
        return cls(**checked)
    except ConfigError as error:  # a value out of range: say where it was written
        raise ConfigError(f"{where}: {error}") from None


def _coerce(expected: Any, value: Any, where: str) -> Any:
    """Check `value` against a simple type hint (int, float, bool, str, their lists, optionals)."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        return _coerce(next(o for o in options if o is not type(None)), value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(expected) or (Any,)
        fixed = origin is tuple and Ellipsis not in args  # tuple[int, int, int]: exactly three values
        if fixed and len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {len(value)}: {value!r}")
        items = [_coerce(args[i] if fixed else args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float, str, bool):
        if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise ConfigError(f"{where} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def load_train_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The recipe from a run-config TOML (top-level keys or a [recipe] table) plus overrides."""
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        data = read_toml(path)
        values, where = data, str(path)
        if "recipe" in data:
            values, where = data.pop("recipe"), f"{path} [recipe]"
            if data:
                raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(sorted(data))}; valid: recipe")
            if not isinstance(values, dict):
                raise ConfigError(f"{where} must be a table, got {type(values).__name__} {values!r}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        where = f"{where} with command-line values for {', '.join(sorted(given))}"
    return from_mapping(TrainConfig, {**values, **given}, where)
