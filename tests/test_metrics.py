"""Training metrics: one JSON line per step and dev evaluation, every step once across a kill and a resume,
TensorBoard events alongside, evaluation that leaves training untouched, curves over seeds."""

import json
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from crossling import paths
from crossling.metrics import (
    DEV,
    TRAIN,
    MetricsLog,
    curve_summary,
    evaluation_due,
    read_metrics,
    study_metrics,
    training_untouched,
)


def _train_steps(log: MetricsLog, steps) -> None:
    for step in steps:
        log.train(step, loss=10.0 / step, learning_rate=1e-3, grad_norm=0.5)
        if step % 10 == 0:
            log.dev(step, cer=1.0 / step, wer=2.0 / step, seconds=0.25)


def test_records_are_appended_one_line_each(tmp_path):
    with MetricsLog(tmp_path, 0, tensorboard=False) as log:
        _train_steps(log, range(1, 21))
        log.train(21, loss=math.nan, learning_rate=1e-3, grad_norm=math.inf)  # a skipped step
    lines = paths.run_metrics_path(tmp_path).read_text().splitlines()
    assert len(lines) == 21 + 2 and json.loads(lines[-1])["loss"] is None
    frame = read_metrics(tmp_path)
    assert (frame["kind"] == TRAIN).sum() == 21 and frame.loc[frame["kind"] == DEV, "step"].tolist() == [10, 20]
    assert frame["loss"].isna().sum() == 3 and frame.loc[0, "loss"] == 10.0  # dev rows have no loss


def test_a_resume_after_kill_9_keeps_every_step_once(tmp_path):
    """A killed process wrote steps past its last checkpoint (20) and half a line; the resumed run
    writes steps 21.. again: the file ends with each step once, in order."""
    log = MetricsLog(tmp_path, 0, tensorboard=False)
    _train_steps(log, range(1, 28))
    log._file.write('{"kind": "train", "step": 28, "lo')  # torn by the kill
    log._file.flush()  # (no close: the process died)
    with MetricsLog(tmp_path, 20, tensorboard=False) as resumed:
        _train_steps(resumed, range(21, 41))
    frame = read_metrics(tmp_path)
    train = frame[frame["kind"] == TRAIN]
    assert train["step"].tolist() == list(range(1, 41))
    assert frame.loc[frame["kind"] == DEV, "step"].tolist() == [10, 20, 30, 40]
    assert all(json.loads(line) for line in paths.run_metrics_path(tmp_path).read_text().splitlines())


def test_a_fresh_start_drops_what_a_run_without_a_checkpoint_left(tmp_path):
    with MetricsLog(tmp_path, 0, tensorboard=False) as log:
        _train_steps(log, range(1, 6))
    with MetricsLog(tmp_path, 0, tensorboard=False) as log:
        _train_steps(log, range(1, 3))
    assert read_metrics(tmp_path)["step"].tolist() == [1, 2]


def test_tensorboard_events_mirror_the_metrics_across_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLog(tmp_path, 0) as log:
        _train_steps(log, range(1, 31))
    with MetricsLog(tmp_path, 20) as resumed:  # steps 21-30 are written again, e.g. after a kill
        _train_steps(resumed, range(21, 41))
    events = EventAccumulator(str(paths.run_tensorboard_dir(tmp_path)), purge_orphaned_data=True).Reload()
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "dev/cer", "dev/wer"} <= set(
        events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 41))
    assert [e.step for e in events.Scalars("dev/cer")] == [10, 20, 30, 40]
    assert events.Scalars("dev/cer")[-1].value == pytest.approx(1 / 40)


def test_evaluation_is_due_every_n_steps_but_not_at_the_end():
    assert [s for s in range(1, 101) if evaluation_due(s, 25, 100)] == [25, 50, 75]
    assert not any(evaluation_due(s, 0, 100) for s in range(1, 101))


def test_evaluating_inside_training_untouched_restores_rngs_and_modes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
    model.train()
    model[2].eval()  # a module deliberately kept in eval mode stays so
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with training_untouched(model):
        model.eval()
        with torch.no_grad():
            model(torch.randn(3, 4))
        random.random(), np.random.rand(), torch.rand(5)
    python, numpy_value, torch_values = random.random(), np.random.rand(), torch.rand(5)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert python == random.random() and numpy_value == np.random.rand() and torch.equal(torch_values, torch.rand(5))
    assert [m.training for m in model.modules()] == [True, True, True, False]


def _study(tmp_path) -> pd.DataFrame:
    rows = []
    for checkpoint, scale in (("a", 1.0), ("b", 2.0)):
        for seed in (0, 1, 2):
            run_id = f"{checkpoint}-de-s{seed}"
            with MetricsLog(paths.store_run_dir(tmp_path, run_id), 0, tensorboard=False) as log:
                for step in range(1, 201):
                    log.train(step, loss=scale * (1 + seed) / step, learning_rate=1e-3, grad_norm=1.0)
                    if step % 100 == 0:
                        log.dev(step, cer=scale * (0.1 + 0.1 * seed), wer=math.nan, seconds=1.0)
            rows.append({"run_id": run_id, "checkpoint": checkpoint, "language": "de", "seed": seed,
                         "status": "done"})
    rows.append({"run_id": "a-de-s9", "checkpoint": "a", "language": "de", "seed": 9, "status": "failed"})
    return pd.DataFrame(rows)


def test_curves_are_the_median_and_range_over_seeds(tmp_path):
    metrics = study_metrics(_study(tmp_path), tmp_path)
    assert set(metrics["seed"]) == {0, 1, 2} and len(metrics) == 2 * 3 * (200 + 2)
    dev = curve_summary(metrics, DEV, "cer")
    row = dev[(dev["checkpoint"] == "b") & (dev["step"] == 200)].iloc[0]
    assert (row["median"], row["low"], row["high"], row["runs"]) == (pytest.approx(0.4), pytest.approx(0.2),
                                                                     pytest.approx(0.6), 3)
    loss = curve_summary(metrics, TRAIN, "loss", points=20)
    a = loss[loss["checkpoint"] == "a"]
    assert len(a) == 20 and a["step"].tolist() == list(range(10, 201, 10))  # windows of 10 steps
    first = np.mean([1 / s for s in range(1, 11)])  # seed 0's mean loss over steps 1-10
    assert a.iloc[0]["low"] == pytest.approx(first) and a.iloc[0]["median"] == pytest.approx(2 * first)
    assert curve_summary(metrics, DEV, "wer").empty  # NaN WER (an unsegmented script) draws nothing


def test_curves_draw_from_the_summary(tmp_path):
    from crossling import figures

    metrics = study_metrics(_study(tmp_path), tmp_path)
    png = figures.curves(curve_summary(metrics, TRAIN, "loss"), "CTC loss", "Training loss", log_y=True)
    assert png.startswith(b"\x89PNG")
    assert study_metrics(_study(tmp_path).assign(status="failed"), tmp_path).empty


# --- in a real run ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dev_evaluation_during_training_leaves_the_weights_bit_identical(tmp_path):
    """Dropout, layerdrop and SpecAugment on: evaluating in eval mode mid-run changes nothing afterwards."""
    from dataclasses import replace

    from safetensors.torch import load_file
    from tinydata_factory import make_prepared, make_tiny_checkpoint

    from crossling.config import TrainConfig
    from crossling.finetune import finetune

    prepared = make_prepared(tmp_path / "prepared")
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt")
    recipe = TrainConfig(learning_rate=2e-3, max_steps=12, batch_seconds=6.0, checkpoint_every=12,
                         mask_time_prob=0.2, mask_time_length=3, hidden_dropout=0.1, layerdrop=0.2)
    records = {every: finetune(prepared, "xx", str(checkpoint), seed=5, out=tmp_path / f"every{every}",
                               config=replace(recipe, eval_every=every), device="cpu") for every in (0, 4)}
    plain, evaluated = (load_file(paths.run_model_dir(tmp_path / f"every{e}") / "model.safetensors") for e in (0, 4))
    assert plain.keys() == evaluated.keys() and all(torch.equal(plain[k], evaluated[k]) for k in plain)
    assert records[0].scores == records[4].scores
    quiet, busy = read_metrics(tmp_path / "every0"), read_metrics(tmp_path / "every4")
    assert quiet[quiet["kind"] == DEV].empty
    assert busy.loc[busy["kind"] == DEV, "step"].tolist() == [4, 8, 12]  # 12: the run's own final dev scores
    assert busy.loc[busy["kind"] == DEV, "cer"].iloc[-1] == pytest.approx(records[4].scores["dev"].cer)
    train_quiet, train_busy = (m[m["kind"] == TRAIN].drop(columns="seconds").reset_index(drop=True)
                               for m in (quiet, busy))
    assert train_busy["step"].tolist() == list(range(1, 13))
    assert train_quiet.equals(train_busy)  # the same losses, learning rates and gradient norms, bit for bit
    assert (train_busy["grad_norm"] > 0).all() and train_busy["learning_rate"].iloc[1] > 0


def test_a_log_nobody_closes_is_closed_when_collected(tmp_path):
    """A run that fails mid-training never reaches close(): its TensorBoard writer's thread must not live on."""
    import gc
    import threading

    pytest.importorskip("tensorboard")
    before = threading.active_count()
    log = MetricsLog(tmp_path, 0)
    log.train(1, loss=1.0, learning_rate=1e-3, grad_norm=1.0)
    assert threading.active_count() > before
    handle = log._file
    del log
    gc.collect()
    assert handle.closed and threading.active_count() == before
    assert read_metrics(tmp_path)["step"].tolist() == [1]


def test_a_metrics_file_that_cannot_be_written_is_a_clear_error(tmp_path):
    from crossling.errors import OutputError

    blocked = tmp_path / "run"
    blocked.write_text("a file where the run folder should be")
    with pytest.raises(OutputError, match=f"{blocked}.*cannot write the training metrics"):
        MetricsLog(blocked, 0, tensorboard=False)
