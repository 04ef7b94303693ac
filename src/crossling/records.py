"""The records stages hand each other on disk, typed: a run's identity and result (result.json; the
identity also sits in a run's resume file), a prepared language's summary (prepared.json) and a study's
plan (plan.json). Frozen dataclasses with to_json/from_json; torch-free.

Every record carries `schema`. A file of another version is an error naming it; files written before
versions existed (schema 0) are read through the migrations at the end of this module."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from crossling.config import TrainConfig, check_seed, from_mapping, identity_values
from crossling.errors import ConfigError, CorruptArtifactError
from crossling.registry import find_checkpoint, weights_source
from crossling.schedule import describe

#: The version of every record written by this crossling.
SCHEMA = 1

T = TypeVar("T")


def identity_hash(value: Any) -> str:
    """10 hex digits of SHA-256 over `value` as canonical JSON: equal values, equal hashes."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def schema_of(value: Any, where: str, kind: str) -> int:
    """The schema version of a record read from `where` (0: written before versions existed)."""
    if not isinstance(value, dict):
        raise CorruptArtifactError(f"{where}: expected a JSON object ({kind}), got {type(value).__name__}")
    version = value.get("schema", 0)
    if version not in (0, SCHEMA):
        raise CorruptArtifactError(
            f"{where}: a {kind} of schema version {version!r}; this crossling reads version {SCHEMA} "
            "(and files written before versions existed): use the crossling that wrote it, or a newer one"
        )
    return version


def build_record(cls: type[T], values: Any, where: str) -> T:
    """`cls` from a JSON object, strictly (unknown or missing keys, wrong types): a malformed record is a
    `CorruptArtifactError` naming the file and the key."""
    if not isinstance(values, dict):
        raise CorruptArtifactError(f"{where} must be a JSON object, got {type(values).__name__} {values!r}")
    try:
        return from_mapping(cls, values, where)
    except ConfigError as error:  # a wrong key or type names `where`; a value check inside `cls` does not
        message = str(error)
        raise CorruptArtifactError(message if message.startswith(where) else f"{where}: {message}") from None


def _build_with_recipe(cls: type[T], value: Any, where: str) -> T:
    """`build_record` for a record holding a TrainConfig under "recipe" (a run's identity, a planned run)."""
    if not isinstance(value, dict):
        raise CorruptArtifactError(f"{where} must be a JSON object, got {type(value).__name__}")
    recipe = build_record(TrainConfig, value.get("recipe"), f"{where} recipe")
    return build_record(cls, {**value, "recipe": recipe}, where)


def _plain(value: Any) -> Any:
    """`value` as JSON gives it back (tuples become lists), so a record read from disk equals the one built."""
    return json.loads(json.dumps(value))


def _versioned(record: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, **record}


def _payload(value: dict[str, Any]) -> dict[str, Any]:
    return {key: item for key, item in value.items() if key != "schema"}


# --- the run identity ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunIdentity:
    """What makes a run this run: its run id is a hash of it, and a resume file or result of another
    identity is never reused. Nothing in it depends on where the project lives: a study's local
    checkpoint is named as the study file writes it (relative to the file), its data by the declared
    source and options; a run started by hand names its data (and a local checkpoint) by a fingerprint
    of the files' content."""

    model: str  # as named: registry alias, hub id, or a local directory as written
    weights: str  # where the starting weights come from (`registry.weights_source`, or a fingerprint)
    language: str
    seed: int
    recipe: TrainConfig
    data: dict[str, Any]  # {"source": ..., options...} or {"source": "prepared", "content": fingerprint}

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _plain(self.data))

    @property
    def declared(self) -> bool:
        """True when the data is named by a study's declaration (not by the prepared files' content)."""
        return "content" not in self.data

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights, "language": self.language, "seed": self.seed,
                "recipe": asdict(self.recipe), "data": self.data}

    @classmethod
    def from_json(cls, value: Any, where: str) -> RunIdentity:
        return _build_with_recipe(cls, value, where)

    def key(self) -> dict[str, Any]:
        """What makes the run this run: `to_json` without the recipe's observation-only options
        (`config.OBSERVATION_ONLY`), which record more or less of a run without changing it."""
        return {**self.to_json(), "recipe": identity_values(self.recipe)}

    def digest(self) -> str:
        """The hash part of the run id."""
        return identity_hash(self.key())


def run_identity(*, model: str, language: str, seed: int, recipe: TrainConfig, data: dict[str, Any],
                 weights: str | None = None) -> RunIdentity:
    """The one builder of run identities: `weights` defaults to where the registry says `model`'s
    weights come from (a re-pointed alias gives new runs)."""
    check_seed(seed, "run seed")
    return RunIdentity(model=model, weights=weights if weights is not None else weights_source(model),
                       language=language, seed=seed, recipe=recipe, data=data)


# --- the run record (result.json) ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SplitScores:
    """Corpus-level scores of one split (summed edit counts; rates None without reference text), and
    the same per speaker gender."""

    cer: float | None
    wer: float | None
    char_edits: int
    chars: int
    word_edits: int
    words: int
    utterances: int
    by_gender: dict[str, SplitScores] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        values = {key: getattr(self, key) for key in
                  ("cer", "wer", "char_edits", "chars", "word_edits", "words", "utterances")}
        return {**values, "by_gender": {gender: _without_groups(s) for gender, s in self.by_gender.items()}}

    @classmethod
    def from_json(cls, value: Any, where: str) -> SplitScores:
        if not isinstance(value, dict):
            raise CorruptArtifactError(f"{where} must be a JSON object, got {type(value).__name__}")
        groups = value.get("by_gender", {})
        if not isinstance(groups, dict):
            raise CorruptArtifactError(f"{where} by_gender must be a JSON object")
        by_gender = {gender: cls.from_json(scores, f"{where} by_gender {gender}") for gender, scores in groups.items()}
        return build_record(cls, {**value, "by_gender": by_gender}, where)


def _without_groups(scores: SplitScores) -> dict[str, Any]:
    values = scores.to_json()
    values.pop("by_gender")
    return values


@dataclass(frozen=True, kw_only=True)
class DeviceFacts:
    """The device a run trained on: 'cuda:k' as the run saw it (with the CUDA_VISIBLE_DEVICES it was
    pinned to), GPU name, compute capability, memory, NVIDIA driver and CUDA versions ('' where unknown
    or not applicable: on CPU, `name` is the processor)."""

    device: str
    name: str = ""
    capability: str = ""
    memory_mb: float = 0.0
    driver: str = ""
    cuda: str = ""
    visible: str = ""


@dataclass(frozen=True, kw_only=True)
class RunCost:
    """What a run cost: wall time over every process it took (each up to its last resume file); peak
    memory on the run's own device (allocated by tensors, and reserved: the allocator's cache included)."""

    wall_seconds: float
    device: str
    device_hours: float
    audio_seconds_trained: float
    audio_seconds_per_second: float
    peak_memory_mb: float
    threads: int
    peak_reserved_mb: float = 0.0
    facts: DeviceFacts | None = None  # None: a record written before device facts were kept


@dataclass(frozen=True, kw_only=True)
class Collapse:
    """Blank-only output: the fraction of test hypotheses that are empty, and whether training warned."""

    blank_only_fraction: float
    warned: bool


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A finished run (result.json, written last: its presence means the run is done)."""

    identity: RunIdentity | LegacyIdentity
    steps: int
    skipped: dict[str, int]
    scores: dict[str, SplitScores]
    cost: RunCost
    collapse: Collapse
    versions: dict[str, str]
    schedule: str
    resumed_from: tuple[int, ...] = ()  # the steps at which an interrupted run was resumed
    status: str = "done"

    def test_cer(self) -> float | None:
        return self.scores["test"].cer

    def to_json(self) -> dict[str, Any]:
        return _versioned({
            "run": self.identity.to_json(), "status": self.status, "steps": self.steps,
            "skipped": dict(self.skipped), "scores": {split: s.to_json() for split, s in self.scores.items()},
            "cost": asdict(self.cost), "collapse": asdict(self.collapse), "versions": dict(self.versions),
            "schedule": self.schedule, "resumed_from": list(self.resumed_from),
        })

    @classmethod
    def from_json(cls, value: Any, where: str) -> RunRecord:
        if schema_of(value, where, "run record") == 0:
            value = _migrate_run_record(value, where)
        values = _payload(value)
        identity = _identity(values.get("run"), f"{where} run")
        scores = values.get("scores")
        if not isinstance(scores, dict):
            raise CorruptArtifactError(f"{where}: scores must be a JSON object")
        return build_record(cls, {
            **{key: item for key, item in values.items() if key != "run"},
            "identity": identity,
            "scores": {split: SplitScores.from_json(s, f"{where} scores {split}") for split, s in scores.items()},
            "cost": _cost(values.get("cost"), f"{where} cost"),
            "collapse": build_record(Collapse, values.get("collapse"), f"{where} collapse"),
        }, where)

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        from crossling.atomic import read_json

        return cls.from_json(read_json(path), str(path))


def _cost(value: Any, where: str) -> RunCost:
    if isinstance(value, dict) and value.get("facts") is not None:
        value = {**value, "facts": build_record(DeviceFacts, value["facts"], f"{where} facts")}
    return build_record(RunCost, value, where)


def _identity(value: Any, where: str) -> RunIdentity | LegacyIdentity:
    if isinstance(value, LegacyIdentity):
        return value
    return RunIdentity.from_json(value, where)


@dataclass(frozen=True, kw_only=True)
class RunFailure:
    """A failed attempt at a run (error.json): the error, its type and traceback, when and where."""

    run_id: str
    error: str  # "<type>: <message>"
    type: str
    traceback: str
    time: float
    host: str = ""
    boot_id: str = ""
    pid: int = 0
    pid_start: str = ""

    def to_json(self) -> dict[str, Any]:
        return _versioned(asdict(self))

    @classmethod
    def from_json(cls, value: Any, where: str) -> RunFailure:
        schema_of(value, where, "run failure")  # schema 0 has the same keys
        return build_record(cls, _payload(value), where)


# --- the prepared-language summary (prepared.json) ---------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PreparedSummary:
    """How a language was prepared and what came out (prepared.json, written last: its presence marks
    a complete preparation)."""

    language: str
    source: str
    seed: int
    train_hours: float
    train_utterances: int
    dev_utterances: int
    test_utterances: int
    vocab: list[str]
    vocab_threshold: float
    char_map: dict[str, str]
    oov_rate: dict[str, float]
    skipped: dict[str, int]
    normalization: dict[str, Any]
    requested_train_hours: float | None = None
    train_speakers: int | None = None
    max_hours_per_speaker: float | None = None
    dev_max: int | None = None
    test_max: int | None = None
    eval_seed: int | None = None
    # the corpus format it was read from (`crossling.corpora.FORMATS`); summaries written before other
    # formats could be read lack it and were all read as Common Voice releases (synthetic corpora included)
    format: str = "cv"

    def to_json(self) -> dict[str, Any]:
        return _versioned(asdict(self))

    @classmethod
    def from_json(cls, value: Any, where: str) -> PreparedSummary:
        schema_of(value, where, "prepared-language summary")  # schema 0 has the same keys, some missing
        return build_record(cls, _payload(value), where)

    @classmethod
    def read(cls, path: Path) -> PreparedSummary:
        from crossling.atomic import read_json

        return cls.from_json(read_json(path), str(path))


# --- the study plan (plan.json) ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """One planned run as the plan lists it (`model`: what the run function receives)."""

    run_id: str
    checkpoint: str
    model: str
    language: str
    seed: int
    settings: dict[str, Any]
    recipe: TrainConfig

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "checkpoint": self.checkpoint, "model": self.model,
                "language": self.language, "seed": self.seed, "settings": _plain(self.settings),
                "recipe": asdict(self.recipe)}

    @classmethod
    def from_json(cls, value: Any, where: str) -> PlannedRun:
        return _build_with_recipe(cls, value, where)


@dataclass(frozen=True, kw_only=True)
class StudyPlan:
    """A study's planned runs, so that a store alone can be read (plan.json)."""

    study: str
    study_file: str
    data: dict[str, Any]
    sweep: tuple[str, ...]
    runs: tuple[PlannedRun, ...]

    def to_json(self) -> dict[str, Any]:
        return _versioned({"study": self.study, "study_file": self.study_file, "data": _plain(self.data),
                           "sweep": list(self.sweep), "runs": [run.to_json() for run in self.runs]})

    @classmethod
    def from_json(cls, value: Any, where: str) -> StudyPlan:
        if schema_of(value, where, "study plan") == 0:
            value = _migrate_plan(value)
        values = _payload(value)
        runs = values.get("runs")
        if not isinstance(runs, list):
            raise CorruptArtifactError(f"{where}: runs must be a list")
        planned = tuple(PlannedRun.from_json(run, f"{where} runs[{i}]") for i, run in enumerate(runs))
        return build_record(cls, {**values, "runs": planned}, where)


# --- migrations of records written before schema versions (schema 0) ---------------------------------


@dataclass(frozen=True)
class LegacyIdentity:
    """A run identity written before schema versions: model, checkpoint, weights, language, seed, the
    *absolute* prepared path, config and schedule. Read so that old finished runs stay done and old
    interrupted runs resume (see `matches`); never written."""

    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.values)

    def matches(self, current: RunIdentity, *, prepared: Path, model: str) -> bool:
        """A study's run: its directory is named by the run id, a hash of the declared identity, so
        the language, seed and recipe suffice (the old paths may predate a move of the project). A run
        started by hand: the old rule, every value including the absolute prepared path."""
        if current.declared:
            return (self.values.get("language"), self.values.get("seed"), self.values.get("config")) == (
                current.language, current.seed, identity_values(current.recipe))
        return self.values == legacy_identity(prepared=prepared, language=current.language, model=model,
                                              seed=current.seed, recipe=current.recipe)


def legacy_identity(*, prepared: Path, language: str, model: str, seed: int, recipe: TrainConfig) -> dict[str, Any]:
    """The identity dict crossling wrote before schema versions, for comparing old files."""
    checkpoint = find_checkpoint(model)
    return {"model": model, "checkpoint": checkpoint.alias if checkpoint else model, "weights": weights_source(model),
            "language": language, "seed": seed, "prepared": str(Path(prepared).resolve()),
            "config": identity_values(recipe), "schedule": describe(recipe)}


def same_run(stored: RunIdentity | LegacyIdentity, current: RunIdentity, *, prepared: Path, model: str) -> bool:
    """Whether a resume file or result with identity `stored` belongs to the run `current`."""
    if isinstance(stored, LegacyIdentity):
        return stored.matches(current, prepared=prepared, model=model)
    return stored.key() == current.key()


def _migrate_run_record(value: dict[str, Any], where: str) -> dict[str, Any]:
    """Schema 0: the identity was the legacy dict (with the schedule inside), no resumed_from."""
    run = value.get("run")
    if not isinstance(run, dict) or "schedule" not in run:
        raise CorruptArtifactError(f"{where}: run must be a JSON object with the run's schedule")
    migrated = {key: item for key, item in value.items() if key != "resumed_from"}
    return {**migrated, "run": LegacyIdentity(run), "schedule": run["schedule"],
            "resumed_from": value.get("resumed_from", [])}


def _migrate_plan(value: dict[str, Any]) -> dict[str, Any]:
    """Schema 0: each planned run's recipe was called `config`."""
    runs = value.get("runs")
    if isinstance(runs, list):
        runs = [{("recipe" if key == "config" else key): item for key, item in run.items()}
                if isinstance(run, dict) else run for run in runs]
    return {**value, "runs": runs}
