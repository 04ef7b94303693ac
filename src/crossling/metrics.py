"""Training metrics of one run, as it trains: step, loss, learning rate, gradient norm, and dev CER/WER every
`eval_every` steps -> <run>/metrics.jsonl (+ TensorBoard events when tensorboard is installed); read back
as tidy frames and curves (median over seeds, range band) for the report. No torch at module level."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from crossling import paths
from crossling.atomic import write_text_atomic
from crossling.errors import OutputError
from crossling.fence import check_write
from crossling.records import SplitScores

log = logging.getLogger(__name__)

TRAIN, DEV = "train", "dev"
TRAIN_FIELDS = ("loss", "learning_rate", "grad_norm")
DEV_FIELDS = ("cer", "wer")


class MetricsLog:
    """Appends one JSON line per record to the run's metrics.jsonl, flushed at once (a kill -9 loses at most
    the line being written). Opened at `resume_step`, the step of the checkpoint a run resumes from, it first
    drops what a killed process wrote after that checkpoint (the resumed run writes those steps again) and a
    torn last line, so every step appears once. `step` counts completed updates (1 = after the first)."""

    def __init__(self, run_dir: Path, resume_step: int, tensorboard: bool = True) -> None:
        self.path = paths.run_metrics_path(run_dir)
        _keep_until(self.path, resume_step)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        except OSError as error:
            raise _cannot_write(self.path, error) from None
        self._board = _tensorboard_writer(run_dir, resume_step) if tensorboard else None
        # a run that fails mid-training never calls close(): its file and TensorBoard thread are released
        # when the log is collected, not kept for the rest of a grid worker's life
        self._closer = weakref.finalize(self, _close, self._file, self._board)

    def train(self, step: int, loss: float, learning_rate: float, grad_norm: float) -> None:
        self._write({"kind": TRAIN, "step": step, "loss": loss, "learning_rate": learning_rate,
                     "grad_norm": grad_norm})

    def dev(self, step: int, cer: float, wer: float, seconds: float) -> None:
        self._write({"kind": DEV, "step": step, "cer": cer, "wer": wer, "seconds": round(seconds, 3)})

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _write(self, record: dict) -> None:
        check_write(self.path)  # a run that lost its claim appends nothing (ClaimLost, as at its next save)
        clean = {k: _json_number(v) for k, v in record.items()}
        try:
            self._file.write(json.dumps(clean, allow_nan=False) + "\n")
            self._file.flush()
        except OSError as error:
            raise _cannot_write(self.path, error) from None
        if self._board is not None:
            for name in (TRAIN_FIELDS if record["kind"] == TRAIN else DEV_FIELDS):
                if clean[name] is not None:
                    self._board.add_scalar(f"{record['kind']}/{name}", clean[name], record["step"])


def _cannot_write(path: Path, error: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write the training metrics ({error.strerror or error}); the run resumes "
                       "from its last resume file once it can")


def _close(file, board) -> None:
    file.close()
    if board is not None:
        board.close()


def _json_number(value):
    """NaN and infinities are not JSON: a skipped step's loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _keep_until(path: Path, step: int) -> None:
    """Rewrite `path` (atomically) without records after `step` and without unparsable lines."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
    if len(kept) != len(lines) or (lines and not lines[-1].endswith("\n")):
        write_text_atomic(path, "".join(line if line.endswith("\n") else line + "\n" for line in kept))
        log.info("%s: kept %d of %d records (resuming at step %d)", path, len(kept), len(lines), step)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _tensorboard_writer(run_dir: Path, resume_step: int):
    """torch's SummaryWriter into <run>/tensorboard/, or None when tensorboard is not installed. A resumed
    run purges events after its checkpoint's step, as the JSON lines are."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(paths.run_tensorboard_dir(run_dir)), flush_secs=10,
                         purge_step=resume_step + 1 if resume_step else None)


# --- dev CER during training, without changing training ------------------------------------------------


@contextlib.contextmanager
def training_untouched(model) -> Iterator[None]:
    """Evaluate inside this block and training goes on exactly as if it had not: every RNG state (python,
    numpy, torch, CUDA) and every module's train/eval mode are restored on the way out."""
    import torch

    modes = [(module, module.training) for module in model.modules()]
    python, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for module, training in modes:
            module.train(training)


def evaluation_due(step: int, eval_every: int, max_steps: int) -> bool:
    """Dev evaluation after `step` updates: every `eval_every` steps, not at the last step (the run's own
    final evaluation scores dev there, and is recorded as that step's point)."""
    return eval_every > 0 and step % eval_every == 0 and step < max_steps


class TrainingRecorder:
    """What the fine-tuning loop calls: `update` after every optimizer step (its record, and dev CER/WER
    from `score_dev` when `evaluation_due`, inside `training_untouched`), `final` with the run's own dev
    scores after training (the curve's last point; closes the log)."""

    def __init__(self, run_dir: Path, resume_step: int, eval_every: int, max_steps: int,
                 score_dev: Callable[[], SplitScores]) -> None:
        self.log = MetricsLog(run_dir, resume_step)
        self.eval_every, self.max_steps, self.score_dev = eval_every, max_steps, score_dev

    def update(self, model, step: int, loss: float, learning_rate: float, grad_norm: float) -> None:
        self.log.train(step, loss, learning_rate, grad_norm)
        if evaluation_due(step, self.eval_every, self.max_steps):
            started = time.monotonic()
            with training_untouched(model):
                scores = self.score_dev()
            self.log.dev(step, _rate(scores, "cer"), _rate(scores, "wer"), time.monotonic() - started)
            log.info("step %d: dev CER %.4f", step, _rate(scores, "cer"))

    def final(self, step: int, dev_scores: SplitScores) -> None:
        if self.eval_every:
            self.log.dev(step, _rate(dev_scores, "cer"), _rate(dev_scores, "wer"), 0.0)
        self.log.close()


def _rate(scores: SplitScores, name: str) -> float:
    value = getattr(scores, name)
    return math.nan if value is None else float(value)  # None: no reference text to score


# --- reading back --------------------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """A run's metrics.jsonl as a frame (kind, step, loss, learning_rate, grad_norm, cer, wer, seconds);
    empty when the run wrote none. A torn last line (a run killed while writing) is left out."""
    path = paths.run_metrics_path(run_dir)
    columns = ["kind", "step", *TRAIN_FIELDS, *DEV_FIELDS, "seconds"]
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if _step_of(line) is not None]
    return pd.DataFrame.from_records(records, columns=columns).astype({f: float for f in columns[2:]})


def study_metrics(table: pd.DataFrame, store_root: Path) -> pd.DataFrame:
    """Every done run's metrics with its checkpoint, language and seed (the tidy results table's columns)."""
    frames = []
    for run in table[table["status"] == "done"].itertuples():
        metrics = read_metrics(paths.store_run_dir(store_root, run.run_id))
        if len(metrics):
            frames.append(metrics.assign(checkpoint=run.checkpoint, language=run.language, seed=run.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def curve_summary(metrics: pd.DataFrame, kind: str, value: str, points: int = 100) -> pd.DataFrame:
    """Per checkpoint × language × step: the median, lowest and highest run (over seeds) of `value`.
    Training steps are first averaged per run over windows of steps, so a curve has at most `points` points
    (a per-step loss is noise at a glance); dev evaluations are kept as they are."""
    part = metrics[(metrics["kind"] == kind) & metrics[value].notna()]
    if part.empty:
        return pd.DataFrame(columns=["checkpoint", "language", "step", "median", "low", "high", "runs"])
    if kind == TRAIN:
        window = max(1, math.ceil(part["step"].max() / points))
        part = part.assign(step=np.ceil(part["step"] / window) * window)  # the window's last step
        part = part.groupby(["checkpoint", "language", "seed", "step"], as_index=False)[value].mean()
    grouped = part.groupby(["checkpoint", "language", "step"])[value]
    summary = grouped.agg(median="median", low="min", high="max", runs="size").reset_index()
    return summary.sort_values(["checkpoint", "language", "step"], kind="stable", ignore_index=True)
