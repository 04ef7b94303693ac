"""Rank records: every estimator's score of every checkpoint on one language's sample (per layer, with
paired bootstrap replicates and the time spent) as typed, schema-versioned JSON (crossling.records' rules),
and the ranking they give, with shared ranks where an estimator cannot separate checkpoints. No torch:
`recommend`, `rankcheck` and the report read them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from crossling.atomic import read_json, write_json_atomic
from crossling.errors import ConfigError, CorruptArtifactError, DataError
from crossling.records import SCHEMA, build_record, schema_of
from crossling.transferability import ProbeRecipe

T = TypeVar("T")

#: Every estimator, each scored on every layer (higher is better):
#: logme        LogME evidence of frame features for character labels, frames split evenly over characters;
#: logme-probe  the same with frames labelled by the CTC forced alignment of the best linear probe (blank included);
#: probe-loss   minus the held-out CTC loss (nats per character) of a linear CTC probe;
#: probe-cer    minus the held-out greedy CER of that probe.
ESTIMATORS = ("logme", "logme-probe", "probe-loss", "probe-cer")
#: The ranking estimator unless --estimator says otherwise (chosen by the validation in README.md).
DEFAULT_ESTIMATOR = "logme"
BOOTSTRAP_REPLICATES = 200


# --- the record (schema-versioned like crossling.records) -------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EstimatorScore:
    """One estimator on one checkpoint: its score on each layer, the best layer, and bootstrap replicates
    of the best layer's score (over utterances; the same draws for every checkpoint, so paired)."""

    estimator: str
    layer: int
    score: float
    by_layer: tuple[float, ...]
    replicates: tuple[float, ...]
    seconds: float  # what this estimator alone costs after extraction (logme-probe and probe-cer include the probe)

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"estimator {self.estimator!r} is not one of {', '.join(ESTIMATORS)}")
        if not 0 <= self.layer < len(self.by_layer):
            raise ConfigError(f"layer {self.layer} is not one of the {len(self.by_layer)} scored layers")
        if len(self.replicates) < 2:
            raise ConfigError(f"replicates: {len(self.replicates)} bootstrap value(s); an interval needs at least 2")

    @property
    def sd(self) -> float:
        return float(np.std(self.replicates, ddof=1))

    @property
    def interval(self) -> tuple[float, float]:
        low, high = np.percentile(self.replicates, [2.5, 97.5])
        return float(low), float(high)

    @classmethod
    def from_json(cls, value: Any, where: str) -> EstimatorScore:
        return build_record(cls, value, where)


@dataclass(frozen=True, kw_only=True)
class CheckpointScores:
    """Every estimator on one checkpoint; `extract_seconds`: loading it and computing its hidden states."""

    checkpoint: str
    model_type: str
    dim: int
    layers: int
    extract_seconds: float
    score_seconds: float  # every estimator together
    estimates: tuple[EstimatorScore, ...]

    @property
    def estimators(self) -> tuple[str, ...]:
        return tuple(e.estimator for e in self.estimates)

    def estimate(self, name: str) -> EstimatorScore:
        for estimate in self.estimates:
            if estimate.estimator == name:
                return estimate
        raise DataError(f"no {name!r} score for {self.checkpoint}; scored: {', '.join(self.estimators)} "
                        "(`crossling rank --compare` computes every estimator)")

    def seconds(self, estimator: str) -> float:
        """Wall time this checkpoint costs to rank with `estimator` alone."""
        return self.extract_seconds + self.estimate(estimator).seconds

    @classmethod
    def from_json(cls, value: Any, where: str) -> CheckpointScores:
        estimates = _list(value, "estimates", where)
        return build_record(cls, {**value, "estimates": tuple(
            EstimatorScore.from_json(e, f"{where} estimates[{i}]") for i, e in enumerate(estimates))}, where)


@dataclass(frozen=True, kw_only=True)
class RankRecord:
    """A ranking run: the sample it scored, where, and every checkpoint's scores (in the order given).
    Written by `crossling rank` (paths.rank_record_path, or --out) and the demo (paths.store_rank_path)."""

    language: str
    data: str
    seed: int
    budget_seconds: float
    audio_seconds: float
    utterances: int
    heldout_utterances: int
    layers: str
    estimator: str
    device: str
    threads: int
    sample_seconds: float  # reading and encoding the sample, shared by every checkpoint
    checkpoints: tuple[CheckpointScores, ...]
    bootstrap: int = BOOTSTRAP_REPLICATES
    probe_steps: int = ProbeRecipe.steps

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"estimator {self.estimator!r} is not one of {', '.join(ESTIMATORS)}")
        if not self.checkpoints:
            raise ConfigError("checkpoints: a rank record scores at least one checkpoint")
        draws = {len(e.replicates) for c in self.checkpoints for e in c.estimates}
        if len(draws) > 1:  # paired comparisons need the same resamples for every checkpoint
            raise ConfigError(f"checkpoints: bootstrap replicates differ in number ({sorted(draws)}); expected one count")

    def to_json(self) -> dict[str, Any]:
        """The record as JSON gives it back (lists, not tuples)."""
        return json.loads(json.dumps({"schema": SCHEMA, **asdict(self)}))

    @classmethod
    def from_json(cls, value: Any, where: str) -> RankRecord:
        schema_of(value, where, "rank record")  # schema 0 (written before versions) has the same keys
        values = {key: item for key, item in value.items() if key != "schema"}
        checkpoints = _list(values, "checkpoints", where)
        return build_record(cls, {**values, "checkpoints": tuple(
            CheckpointScores.from_json(c, f"{where} checkpoints[{i}]") for i, c in enumerate(checkpoints))}, where)

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole run, every estimator it computed included."""
        return self.sample_seconds + sum(c.extract_seconds + c.score_seconds for c in self.checkpoints)

    def seconds(self, estimator: str | None = None) -> float:
        """Wall time of ranking every checkpoint with `estimator` (default: the record's) alone."""
        name = estimator or self.estimator
        return self.sample_seconds + sum(c.seconds(name) for c in self.checkpoints)


def _list(values: Any, key: str, where: str) -> list:
    if not isinstance(values, dict):
        raise CorruptArtifactError(f"{where} must be a JSON object, got {type(values).__name__}")
    if not isinstance(values.get(key), list):
        raise CorruptArtifactError(f"{where}: {key} must be a list")
    return values[key]


def read_record(path: Path) -> RankRecord:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no rank record (run `crossling rank` first)")
    return RankRecord.from_json(read_json(path), str(path))


def write_record(record: RankRecord, target: Path | str) -> None:
    """Write `record` to `target` by crossling.atomic's rules ('-': standard output)."""
    write_json_atomic(target, record.to_json())


# --- the ranking ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Ranked:
    """One place of a ranking. `rank` is 1 + the number of checkpoints scoring significantly higher, so
    checkpoints the estimator cannot separate share it; `not_separable_from` names those it cannot
    separate from (paired bootstrap 95 % interval of the score difference includes 0). `sd`, `low` and
    `high` describe the score alone, most of whose spread every checkpoint shares (the same utterances
    are drawn); `gap` (score minus the highest score) and its paired `gap_sd` are what compare them."""

    rank: int
    checkpoint: str
    score: float
    sd: float
    low: float
    high: float
    layer: int
    seconds: float
    not_separable_from: tuple[str, ...]
    gap: float
    gap_sd: float


def ranking(record: RankRecord, estimator: str | None = None) -> tuple[Ranked, ...]:
    """Checkpoints best first by `estimator` (default: the record's): by rank, then score. Significance
    need not be transitive, so a noisy checkpoint may share rank 1 with a better-scoring one while one
    scoring between them ranks 2. Equal scores keep the order the checkpoints were given in; their shared
    rank says they are tied (never the alphabet)."""
    name = estimator or record.estimator
    scores = {c.checkpoint: c.estimate(name) for c in record.checkpoints}
    order = sorted(scores, key=lambda c: -scores[c].score)  # stable: ties keep the given order
    top = scores[order[0]]
    places = []
    for checkpoint in order:
        mine = scores[checkpoint]
        better = [c for c in order if c != checkpoint and _separated(scores[c], mine)]
        tied = tuple(c for c in order if c != checkpoint and c not in better and not _separated(mine, scores[c]))
        low, high = mine.interval
        seconds = next(c.seconds(name) for c in record.checkpoints if c.checkpoint == checkpoint)
        gap_sd = float(np.std(np.asarray(mine.replicates) - np.asarray(top.replicates), ddof=1))
        places.append(Ranked(rank=1 + len(better), checkpoint=checkpoint, score=mine.score, sd=mine.sd, low=low,
                             high=high, layer=mine.layer, seconds=seconds, not_separable_from=tied,
                             gap=mine.score - top.score, gap_sd=gap_sd))
    return tuple(sorted(places, key=lambda place: place.rank))  # stable: by score within a rank


def _separated(higher: EstimatorScore, lower: EstimatorScore) -> bool:
    """`higher` scores above `lower` beyond the paired bootstrap's 95 % interval of the difference."""
    difference = np.asarray(higher.replicates) - np.asarray(lower.replicates)
    return bool(np.percentile(difference, 2.5) > 0)
