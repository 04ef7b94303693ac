"""Study files: a strict TOML file (checkpoints x languages x seeds x sweep, data source, recipe)
-> a frozen `Study` -> its `Run`s, each with an id = readable prefix + hash of everything that
affects its result."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.config import (
    OBSERVATION_ONLY,
    TrainConfig,
    _coerce,
    check_keys,
    check_seed,
    from_mapping,
    read_toml,
)
from crossling.errors import ConfigError
from crossling.records import PlannedRun, RunIdentity, StudyPlan, run_identity
from crossling.registry import find_checkpoint
from crossling.sources import DataSource, parse_data

TOP_LEVEL_KEYS = ("name", "description", "checkpoints", "languages", "seeds", "data", "recipe", "sweep", "store")

@dataclass(frozen=True)
class Run:
    """One fine-tuning run of the grid: its id, its identity, and `model`, what the run function loads
    (an alias or hub id unchanged, a local directory as an absolute path); `checkpoint` is as written in
    the study file."""

    run_id: str
    checkpoint: str
    model: str
    settings: tuple[tuple[str, Any], ...]
    identity: RunIdentity

    @property
    def language(self) -> str:
        return self.identity.language

    @property
    def seed(self) -> int:
        return self.identity.seed

    @property
    def config(self) -> TrainConfig:
        return self.identity.recipe

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dict(self.settings)


@dataclass(frozen=True)
class Study:
    """A study file, read strictly. `path` is the file it came from (None when built in code)."""

    name: str
    checkpoints: tuple[str, ...]
    languages: tuple[str, ...]
    seeds: tuple[int, ...]
    data: DataSource
    recipe: TrainConfig
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    recipe_values: tuple[tuple[str, Any], ...] = ()
    store_dir: Path | None = None
    description: str = ""
    path: Path | None = None

    @property
    def size(self) -> int:
        settings = 1
        for _, values in self.sweep:
            settings *= len(values)
        return len(self.checkpoints) * len(self.languages) * len(self.seeds) * settings


# --- reading -------------------------------------------------------------------------------------


def load_study(path: Path) -> Study:
    """Read a study file strictly: unknown keys and wrong types are `ConfigError`s naming the key,
    the table and the valid keys."""
    path = Path(path)
    return parse_study(read_toml(path), where=str(path), base=path.parent.resolve(), path=path)


def example_study_path(name: str) -> Path:
    """The path of a shipped example study ('reference' or 'mini')."""
    folder = resources.files("crossling").joinpath("studies")
    available = sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
    if name not in available:
        raise ConfigError(f"no example study {name!r}; shipped: {', '.join(available)}")
    return Path(str(folder.joinpath(f"{name}.toml")))


def parse_study(data: dict[str, Any], where: str, base: Path, path: Path | None = None) -> Study:
    """Build a `Study` from parsed TOML; `where` names the file in errors, `base` resolves paths."""
    check_keys(data, TOP_LEVEL_KEYS, where, required=("checkpoints", "languages", "seeds", "data"))
    recipe_values = _table(data, "recipe", where)
    recipe = from_mapping(TrainConfig, recipe_values, f"{where} [recipe]")
    sweep = _parse_sweep(_table(data, "sweep", where), recipe_values, where)
    for settings in _settings_grid(sweep):
        _config_with(recipe, settings, where)  # every swept recipe must be valid before anything runs
    store = _table(data, "store", where)
    check_keys(store, ("dir",), f"{where} [store]")
    return Study(
        name=_typed(data.get("name", path.stem if path else "study"), str, f"{where}: name"),
        description=_typed(data.get("description", ""), str, f"{where}: description"),
        checkpoints=_parse_checkpoints(data["checkpoints"], where, base),
        languages=_unique_list(data["languages"], str, f"{where}: languages"),
        seeds=tuple(check_seed(seed, f"{where}: seeds") for seed in _unique_list(data["seeds"], int, f"{where}: seeds")),
        data=parse_data(_table(data, "data", where), where, base),
        recipe=recipe,
        sweep=sweep,
        recipe_values=tuple(recipe_values.items()),
        store_dir=_store_dir(store, where, base),
        path=path,
    )


def _table(data: dict, name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name} must be a table ([{name}]), got {type(value).__name__}")
    return dict(value)


def _typed(value: Any, expected: type, where: str) -> Any:
    return _coerce(expected, value, where)


def _unique_list(value: Any, item_type: type, where: str) -> tuple:
    items = _coerce(list[item_type], value, where)
    if not items:
        raise ConfigError(f"{where} must not be empty")
    duplicates = sorted({str(item) for item in items if items.count(item) > 1})
    if duplicates:
        raise ConfigError(f"{where}: duplicate value(s) {', '.join(duplicates)}")
    return tuple(items)


def _parse_checkpoints(value: Any, where: str, base: Path) -> tuple[str, ...]:
    checkpoints = _unique_list(value, str, f"{where}: checkpoints")
    for checkpoint in checkpoints:
        resolve_model(checkpoint, base, where)
    return checkpoints


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(checkpoint: str, base: Path, where: str = "study") -> str:
    """What the run function receives for `checkpoint`: a registered alias or hub id unchanged, a
    local directory (relative to the study file) as an absolute path."""
    if find_checkpoint(checkpoint) is not None:
        return checkpoint
    if checkpoint.startswith("random:"):  # a registered checkpoint's architecture with random weights
        from crossling.errors import ModelError
        from crossling.models import resolve

        try:
            resolve(checkpoint)
        except ModelError as error:
            raise ConfigError(f"{where}: checkpoints: {error}") from None
        return checkpoint
    local = Path(checkpoint).expanduser()
    local = local if local.is_absolute() else base / local
    if local.is_dir():
        return str(local.resolve())
    if _HUB_ID.match(checkpoint):
        return checkpoint
    from crossling.registry import alias_suggestions, all_checkpoints

    aliases = ", ".join(c.alias for c in all_checkpoints())
    raise ConfigError(
        f"{where}: checkpoints: {checkpoint!r}{alias_suggestions(checkpoint)} is neither a registered alias, a hub id (owner/name) "
        f"nor an existing local directory; registered aliases: {aliases}"
    )


def _parse_sweep(values: dict[str, Any], recipe_values: dict, where: str) -> tuple:
    where = f"{where} [sweep]"
    check_keys(values, tuple(sorted(f.name for f in dataclasses.fields(TrainConfig))), where)
    both = sorted(set(values) & set(recipe_values))
    observing = sorted(set(values) & OBSERVATION_ONLY)
    if observing:
        raise ConfigError(f"{where}: {', '.join(observing)} only changes what a run records, not the run, so "
                          "sweeping it would train the same runs again; set it in [recipe]")
    if both:
        raise ConfigError(f"{where}: {', '.join(both)} set in both [recipe] and [sweep]; keep one")
    hints = typing.get_type_hints(TrainConfig)
    return tuple((key, _unique_list(options, hints[key], f"{where}: {key}")) for key, options in values.items())


def _store_dir(values: dict, where: str, base: Path) -> Path | None:
    if "dir" not in values:
        return None
    path = Path(_typed(values["dir"], str, f"{where} [store]: dir")).expanduser()
    return path if path.is_absolute() else base / path


def default_store(study: Study) -> Path:
    """[store] dir of the study file, else `<study file stem>.runs/` next to the study file."""
    if study.store_dir is not None:
        return study.store_dir
    if study.path is None:
        raise ConfigError("a study built in code has no default store; pass one")
    return paths.default_store_dir(study.path)


# --- expanding into runs -------------------------------------------------------------------------


def expand_runs(study: Study) -> list[Run]:
    """Every run of the study, in a stable order (checkpoint, language, seed, settings)."""
    base = study.data.base
    runs = []
    for checkpoint, language, seed, settings in itertools.product(
        study.checkpoints, study.languages, study.seeds, _settings_grid(study.sweep)
    ):
        config = _config_with(study.recipe, settings, str(study.path or "study"))
        identity = run_identity(model=checkpoint, language=language, seed=seed, recipe=config,
                                data=study.data.identity())
        runs.append(Run(run_id=run_id(identity, settings, label=_label(checkpoint, base)), checkpoint=checkpoint,
                        model=resolve_model(checkpoint, base), settings=settings, identity=identity))
    return runs


def study_plan(study: Study, runs: list[Run] | None = None) -> StudyPlan:
    """The study's plan (plan.json): enough to list every planned run from the store alone."""
    runs = expand_runs(study) if runs is None else runs
    return StudyPlan(
        study=study.name, study_file=str(study.path) if study.path else "", data=study.data.identity(),
        sweep=tuple(name for name, _ in study.sweep),
        runs=tuple(PlannedRun(run_id=r.run_id, checkpoint=r.checkpoint, model=r.model, language=r.language,
                              seed=r.seed, settings=r.settings_dict, recipe=r.config) for r in runs),
    )


def _settings_grid(sweep: tuple) -> list[tuple[tuple[str, Any], ...]]:
    names = [name for name, _ in sweep]
    return [tuple(zip(names, values, strict=True)) for values in itertools.product(*(v for _, v in sweep))]


def _config_with(recipe: TrainConfig, settings: tuple[tuple[str, Any], ...], where: str) -> TrainConfig:
    try:
        return dataclasses.replace(recipe, **dict(settings))
    except ConfigError as error:
        described = ", ".join(f"{k}={v}" for k, v in settings)
        raise ConfigError(f"{where} [sweep] setting {described}: {error}") from None


def _label(checkpoint: str, base: Path) -> str:
    """How a checkpoint reads in run ids: a local directory by its last component."""
    model = resolve_model(checkpoint, base)
    return Path(model).name if Path(model).is_absolute() else checkpoint


def run_id(identity: RunIdentity, settings: tuple = (), label: str | None = None) -> str:
    """`<checkpoint>-<language>-s<seed>[-<settings>]-<hash>`; the hash covers the whole identity (model and
    where its weights come from, language, seed, the resolved recipe but its observation-only options, and
    the data identity), so any value that changes the run gives a new run id."""
    parts = [_slug(label or identity.model), _slug(identity.language), f"s{identity.seed}",
             *(_setting_slug(k, v) for k, v in settings)]
    return "-".join([*parts, identity.digest()])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _setting_slug(name: str, value: Any) -> str:
    short = "".join(word[0] for word in name.split("_"))
    shown = f"{value:g}" if isinstance(value, float) else str(value).lower()
    return _slug(f"{short}{shown}")


def find_study(text: str | Path) -> Study:
    """A study file path, or the name of a shipped example ('reference', 'mini'), whose default store
    is then `<name>.runs/` in the current directory (not inside the installed package)."""
    path = Path(text).expanduser()
    if path.is_file() or path.suffix == ".toml" or os.sep in str(text):
        return load_study(path)
    study = load_study(example_study_path(str(text)))
    if study.store_dir is None:
        study = dataclasses.replace(study, store_dir=paths.default_store_dir(Path.cwd() / f"{path.name}.toml"))
    return study
