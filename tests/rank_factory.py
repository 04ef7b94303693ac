"""Test helpers: rank records with chosen scores and bootstrap replicates, and results tables to hold
them against (no model is run)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crossling.rankrecord import ESTIMATORS, CheckpointScores, EstimatorScore, RankRecord


def estimate(name: str, score: float, spread: float = 0.01, seed: int = 0, replicates: int = 200) -> EstimatorScore:
    """`score` with replicates = score + shared noise (the same draws for every checkpoint: paired) + a
    checkpoint-specific spread."""
    shared = np.random.default_rng(99).normal(scale=0.5, size=replicates)
    own = np.random.default_rng(seed).normal(scale=spread, size=replicates)
    return EstimatorScore(name, 1, score, (score - 1.0, score), tuple((score + shared + own).tolist()), 0.5)


def make_record(scores: dict[str, float], language: str = "pt", spread: float = 0.01, estimator: str = "logme",
                extract_seconds: float = 2.0) -> RankRecord:
    """A record whose every estimator gives each checkpoint its score in `scores`."""
    checkpoints = tuple(
        CheckpointScores(name, "wav2vec2", 64, 2, extract_seconds, 2.0,
                         tuple(estimate(e, value, spread, seed=i) for e in ESTIMATORS))
        for i, (name, value) in enumerate(scores.items()))
    return RankRecord(language, "prepared", 0, 300.0, 290.0, 100, 25, "all", estimator, "cpu", 1, 1.0, checkpoints)


def results_for(cers: dict[str, list[float]], language: str = "pt", wall_seconds: float = 100.0) -> pd.DataFrame:
    """A tidy results table: one done run per CER given (seeds 0, 1, ...)."""
    rows = [{"run_id": f"{c}-{language}-s{seed}", "checkpoint": c, "language": language, "seed": seed, "status": "done",
             "cer": cer, "wall_seconds": wall_seconds}
            for c, values in cers.items() for seed, cer in enumerate(values)]
    return pd.DataFrame(rows)
