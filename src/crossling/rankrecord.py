"""Rank records: every estimator's score of every checkpoint on one language's sample (per layer, with
paired bootstrap replicates and the time spent) as JSON, and the ranking they give, with shared ranks
where an estimator cannot separate checkpoints. No torch: `recommend`, `rankcheck` and the report read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from crossling.atomic import read_json, write_json_atomic
from crossling.errors import CorruptArtifactError, DataError
from crossling.transferability import ProbeRecipe

#: Every estimator, each scored on every layer (higher is better):
#: logme        LogME evidence of frame features for character labels, frames split evenly over characters;
#: logme-probe  the same with frames labelled by the CTC forced alignment of the best linear probe (blank included);
#: probe-loss   minus the held-out CTC loss (nats per character) of a linear CTC probe;
#: probe-cer    minus the held-out greedy CER of that probe.
ESTIMATORS = ("logme", "logme-probe", "probe-loss", "probe-cer")
#: The ranking estimator unless --estimator says otherwise (chosen by the validation in README.md).
DEFAULT_ESTIMATOR = "logme"
BOOTSTRAP_REPLICATES = 200


# --- the record ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorScore:
    """One estimator on one checkpoint: its score on each layer, the best layer, and bootstrap replicates
    of the best layer's score (over utterances; the same draws for every checkpoint, so paired)."""

    estimator: str
    layer: int
    score: float
    by_layer: tuple[float, ...]
    replicates: tuple[float, ...]
    seconds: float  # what this estimator alone costs after extraction (logme-probe and probe-cer include the probe)

    @property
    def sd(self) -> float:
        return float(np.std(self.replicates, ddof=1))

    @property
    def interval(self) -> tuple[float, float]:
        low, high = np.percentile(self.replicates, [2.5, 97.5])
        return float(low), float(high)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RankRecord:
    """A ranking run: the sample it scored, where, and every checkpoint's scores (in the order given)."""

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

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole run, every estimator it computed included."""
        return self.sample_seconds + sum(c.extract_seconds + c.score_seconds for c in self.checkpoints)

    def seconds(self, estimator: str | None = None) -> float:
        """Wall time of ranking every checkpoint with `estimator` (default: the record's) alone."""
        name = estimator or self.estimator
        return self.sample_seconds + sum(c.seconds(name) for c in self.checkpoints)


def record_from_dict(values: dict, where: str) -> RankRecord:
    """A record read back from JSON; a missing or wrong key is a `CorruptArtifactError` naming `where`."""
    try:
        checkpoints = tuple(
            CheckpointScores(**{**c, "estimates": tuple(EstimatorScore(**{**e, "by_layer": tuple(e["by_layer"]),
                                                                           "replicates": tuple(e["replicates"])})
                                                        for e in c["estimates"])})
            for c in values["checkpoints"])
        names = {f.name for f in fields(RankRecord)} - {"checkpoints"}
        return RankRecord(**{k: values[k] for k in names if k in values}, checkpoints=checkpoints)
    except (KeyError, TypeError) as error:
        raise CorruptArtifactError(f"{where}: not a crossling rank record ({type(error).__name__}: {error})") from None


def read_record(path: Path) -> RankRecord:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no rank record (run `crossling rank` first)")
    return record_from_dict(read_json(path), str(path))


def write_record(record: RankRecord, path: Path) -> Path:
    write_json_atomic(Path(path), record.to_dict())
    return Path(path)


# --- the ranking ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
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
