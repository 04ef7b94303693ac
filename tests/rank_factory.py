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
    return EstimatorScore(estimator=name, layer=1, score=score, by_layer=(score - 1.0, score),
                          replicates=tuple((score + shared + own).tolist()), seconds=0.5)


def make_record(scores: dict[str, float], language: str = "pt", spread: float = 0.01, estimator: str = "logme",
                extract_seconds: float = 2.0) -> RankRecord:
    """A record whose every estimator gives each checkpoint its score in `scores`."""
    checkpoints = tuple(
        CheckpointScores(checkpoint=name, model_type="wav2vec2", dim=64, layers=2, extract_seconds=extract_seconds,
                         score_seconds=2.0, estimates=tuple(estimate(e, value, spread, seed=i) for e in ESTIMATORS))
        for i, (name, value) in enumerate(scores.items()))
    return RankRecord(language=language, data="prepared", seed=0, budget_seconds=300.0, audio_seconds=290.0,
                      utterances=100, heldout_utterances=25, layers="all", estimator=estimator, device="cpu", threads=1,
                      sample_seconds=1.0, checkpoints=checkpoints)


def results_for(cers: dict[str, list[float]], language: str = "pt", wall_seconds: float = 100.0) -> pd.DataFrame:
    """A tidy results table: one done run per CER given (seeds 0, 1, ...)."""
    rows = [{"run_id": f"{c}-{language}-s{seed}", "checkpoint": c, "language": language, "seed": seed, "status": "done",
             "cer": cer, "wall_seconds": wall_seconds}
            for c, values in cers.items() for seed, cer in enumerate(values)]
    return pd.DataFrame(rows)
