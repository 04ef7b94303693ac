"""A study store's run files for a synthetic results table: metrics.jsonl, test hypotheses and result.json
of every run (each optional), so the report's run views can be built without training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
from grid_factory import toy_record

from crossling import paths
from crossling.config import TrainConfig
from crossling.metrics import MetricsLog
from crossling.records import RunCost, run_identity
from crossling.scoring import score_pair

SENTENCES = ["der hund", "ein großes haus", "wir gehen heute nach hause", "ja", "das ist gut",
             # long enough to push a table sideways unless the report wraps it
             " ".join(["donaudampfschifffahrtsgesellschaftskapitän und seine mannschaft"] * 4)]
RECIPE = TrainConfig(learning_rate=2e-3, max_steps=100, eval_every=25)
VERSIONS = {"crossling": "0.1.0", "torch": "2.13.0", "transformers": "5.0", "python": "3.11.7",
            "platform": "Linux-x86_64", "processor": "Test CPU 9000", "commit": "0123456789ab"}


def write_run_files(store: Path, table: pd.DataFrame, *, metrics: bool = True, hypotheses: bool = True,
                    records: bool = False) -> pd.DataFrame:
    """Every run of `table` gets the files asked for under `store`; returns `table`."""
    for run in table.itertuples():
        run_dir = paths.store_run_dir(store, run.run_id)
        if metrics:
            _metrics(run_dir, run.cer, run.wer)
        if hypotheses:
            _hypotheses(run_dir, damage=int(10 * run.cer))
        if records:
            _record(run_dir, run)
    return table


def _metrics(run_dir: Path, cer: float, wer: float) -> None:
    with MetricsLog(run_dir, 0, tensorboard=False) as log:
        for step in range(1, 101):
            log.train(step, loss=cer * 100 / step, learning_rate=1e-3, grad_norm=1.0)
            if step % 25 == 0:
                log.dev(step, cer=cer * (1 + 25 / step), wer=wer, seconds=0.1)


def _hypotheses(run_dir: Path, damage: int) -> None:
    rows = []
    for k, reference in enumerate(SENTENCES):
        hypothesis = reference[: max(0, len(reference) - damage * (k % 2))]
        counts = score_pair(reference, hypothesis)
        rows.append({"id": f"u{k}", "reference": reference, "hypothesis": hypothesis, "chars": counts.chars,
                     "char_edits": counts.char_edits, "words": counts.words, "word_edits": counts.word_edits})
    path = paths.run_hypotheses_path(run_dir, "test")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _record(run_dir: Path, run) -> None:
    identity = run_identity(model=run.checkpoint, weights="test", language=run.language, seed=int(run.seed),
                            recipe=RECIPE, data={"source": "synthetic"})
    record = replace(toy_record(identity, float(run.cer), steps=RECIPE.max_steps), versions=VERSIONS,
                     cost=RunCost(wall_seconds=90.0, device="cpu", device_hours=90 / 3600, audio_seconds_trained=1.0,
                                  audio_seconds_per_second=1.0, peak_memory_mb=700.0, threads=2))
    path = paths.run_result_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_json()), encoding="utf-8")
