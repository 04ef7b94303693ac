"""Study files: a strict TOML file (checkpoints x languages x seeds x sweep, data source, recipe)
-> a frozen `Study` -> its `Run`s, each with an id = readable prefix + hash of everything that
affects its result."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.config import TrainConfig, _coerce, check_keys, from_mapping, read_toml
from crossling.errors import ConfigError
from crossling.registry import find_checkpoint, weights_source

TOP_LEVEL_KEYS = ("name", "description", "checkpoints", "languages", "seeds", "data", "recipe", "sweep", "store")
DATA_SOURCES = ("prepared", "common-voice", "corpus", "synthetic")


@dataclass(frozen=True)
class CommonVoiceData:
    """A local Common Voice release (directory or .tar.gz), prepared by the grid before the runs
    (the options of `crossling.prepare.prepare_release`)."""

    release: str
    train_hours: float = 5.0
    seed: int = 0
    dev_max: int | None = None  # None: the full split
    test_max: int | None = None
    eval_seed: int | None = None
    max_hours_per_speaker: float | None = None
    vocab_threshold: float = 1e-5
    out: str = ""  # the prepared dir; '' = <store>/prepared


@dataclass(frozen=True)
class CorpusData:
    """A corpus in any format `crossling prepare` reads (`crossling.corpora`: a manifest folder, a saved
    `datasets` dataset, lhotse manifests, or Common Voice), prepared by the grid before the runs with the
    same options as a release; `format` '' is detected."""

    path: str
    format: str = ""
    audio_column: str = "audio"
    text_column: str = "text"
    speaker_column: str = "speaker"
    gender_column: str = "gender"
    held_out_speakers: float = 0.1
    split_seed: int = 0
    train_hours: float = 5.0
    seed: int = 0
    dev_max: int | None = None
    test_max: int | None = None
    eval_seed: int | None = None
    max_hours_per_speaker: float | None = None
    vocab_threshold: float = 1e-5
    out: str = ""  # the prepared dir; '' = under <store>/data

    def corpus_options(self):
        """How `crossling.corpora` reads it."""
        from crossling.corpora import CorpusOptions, check_format

        if self.format:
            check_format(self.format)
        return CorpusOptions(format=self.format or None, audio_column=self.audio_column,
                             text_column=self.text_column, speaker_column=self.speaker_column,
                             gender_column=self.gender_column, held_out_speakers=self.held_out_speakers,
                             split_seed=self.split_seed)


@dataclass(frozen=True)
class SyntheticData:
    """A synthetic Common Voice-shaped corpus (`crossling.synth.synthesize_corpus`: eSpeak NG), then
    prepared like a real release with `train_hours` of it."""

    hours: float = 0.1  # synthesised train hours per language (dev/test: that x the fractions)
    train_hours: float = 0.08  # the exact prepared train budget (<= hours)
    seed: int = 0
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    speakers: tuple[int, int, int] = (24, 6, 6)
    noise: bool = False
    dev_max: int | None = None
    test_max: int | None = None
    vocab_threshold: float = 1e-5
    out: str = ""  # the prepared dir (the corpus goes beside it); '' = under <store>/data


@dataclass(frozen=True)
class PreparedData:
    """Languages already prepared by `crossling prepare` into `path`."""

    path: str


_DATA_CLASSES: dict[str, type] = {
    "prepared": PreparedData,
    "common-voice": CommonVoiceData,
    "corpus": CorpusData,
    "synthetic": SyntheticData,
}


@dataclass(frozen=True)
class DataSource:
    """Where the study's prepared languages come from; `base` is the study file's folder, against
    which relative paths are resolved."""

    kind: str
    options: PreparedData | CommonVoiceData | CorpusData | SyntheticData
    base: Path

    def identity(self) -> dict[str, Any]:
        """What identifies the data in run ids: the source and its options as written (not where
        the prepared files are kept, and not machine-specific absolute paths)."""
        values = dataclasses.asdict(self.options)
        values.pop("out", None)
        return {"source": self.kind, **values}

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path


@dataclass(frozen=True)
class Run:
    """One fine-tuning run of the grid. `model` is what the run function receives (alias, hub id or
    absolute local dir); `checkpoint` is as written in the study file."""

    run_id: str
    checkpoint: str
    model: str
    language: str
    seed: int
    settings: tuple[tuple[str, Any], ...]
    config: TrainConfig

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
        seeds=_unique_list(data["seeds"], int, f"{where}: seeds"),
        data=_parse_data(_table(data, "data", where), where, base),
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
    from crossling.registry import all_checkpoints

    aliases = ", ".join(c.alias for c in all_checkpoints())
    raise ConfigError(
        f"{where}: checkpoints: {checkpoint!r} is neither a registered alias, a hub id (owner/name) "
        f"nor an existing local directory; registered aliases: {aliases}"
    )


def _parse_data(values: dict[str, Any], where: str, base: Path) -> DataSource:
    where = f"{where} [data]"
    kind = values.pop("source", None)
    if kind not in DATA_SOURCES:
        raise ConfigError(f"{where}: source must be one of {', '.join(DATA_SOURCES)}, got {kind!r}")
    options = from_mapping(_DATA_CLASSES[kind], values, f"{where} (source = {kind!r})")
    if kind == "corpus":
        try:
            options.corpus_options()
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
    return DataSource(kind=kind, options=options, base=base)


def _parse_sweep(values: dict[str, Any], recipe_values: dict, where: str) -> tuple:
    where = f"{where} [sweep]"
    check_keys(values, tuple(sorted(f.name for f in dataclasses.fields(TrainConfig))), where)
    both = sorted(set(values) & set(recipe_values))
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
    settings_grid = _settings_grid(study.sweep)
    runs = []
    for checkpoint, language, seed, settings in itertools.product(
        study.checkpoints, study.languages, study.seeds, settings_grid
    ):
        config = _config_with(study.recipe, settings, str(study.path or "study"))
        runs.append(
            Run(
                run_id=run_id(checkpoint, language, seed, settings, config, study.data, label=_label(checkpoint, base)),
                checkpoint=checkpoint,
                model=resolve_model(checkpoint, base),
                language=language,
                seed=seed,
                settings=settings,
                config=config,
            )
        )
    return runs


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


def run_id(
    checkpoint: str, language: str, seed: int, settings: tuple, config: TrainConfig, data: DataSource,
    label: str | None = None,
) -> str:
    """`<checkpoint>-<language>-s<seed>[-<settings>]-<hash>`; the hash covers model (and where its weights
    come from), language, seed, the full resolved recipe and the data identity, so any changed value gives
    a new run id."""
    identity = {
        "model": checkpoint,
        "weights": weights_source(checkpoint),
        "language": language,
        "seed": seed,
        "recipe": dataclasses.asdict(config),
        "data": data.identity(),
    }
    digest = identity_hash(identity)
    parts = [_slug(label or checkpoint), _slug(language), f"s{seed}", *(_setting_slug(k, v) for k, v in settings)]
    return "-".join([*parts, digest])


def identity_hash(identity: Any) -> str:
    """10 hex digits of SHA-256 over `identity` as canonical JSON: equal values, equal hashes."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


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
