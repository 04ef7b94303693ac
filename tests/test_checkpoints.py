"""Resume files off the step: the background writer writes what the synchronous one did, from a snapshot
taken on the step, at step and wall-clock intervals, and its errors reach the training thread."""

import threading
from dataclasses import replace

import pytest
import torch
from tinydata_factory import cpu_learner, make_prepared, make_tiny_checkpoint

from crossling import checkpoints
from crossling.checkpoints import CheckpointWriter
from crossling.config import TrainConfig
from crossling.finetune import (
    FinetuneJob,
    ResumeFile,
    TrainState,
    standalone_identity,
    train,
)

CONFIG = TrainConfig(learning_rate=2e-3, max_steps=6, batch_seconds=8.0, checkpoint_every=2, mask_time_prob=0.3,
                     mask_time_length=3, hidden_dropout=0.1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "wav2vec2"))


def trained(prepared, checkpoint, out, writer):
    """Train CONFIG's steps from scratch (seeded) with resume files through `writer` -> (model, resume)."""
    from crossling.finetune import seed_everything

    seed_everything(0)
    data, learner, training = cpu_learner(prepared, checkpoint, CONFIG)
    job = FinetuneJob(standalone_identity(data, checkpoint, 0, CONFIG), checkpoint, prepared)
    resume = ResumeFile(out, job, writer=writer)
    out.mkdir(parents=True, exist_ok=True)
    train(learner, training, TrainState(), resume=resume, wall=lambda: 1.0)
    resume.wait()
    return learner.model, resume


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_background_resume_files_equal_synchronous_ones_and_training_is_unchanged(prepared, checkpoint, tmp_path):
    model_a, resume_a = trained(prepared, checkpoint, tmp_path / "sync", CheckpointWriter(background=False))
    model_b, resume_b = trained(prepared, checkpoint, tmp_path / "background", CheckpointWriter())
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(),
                                                 strict=True))
    file_a = torch.load(resume_a.path, weights_only=True)
    file_b = torch.load(resume_b.path, weights_only=True)
    for file in (file_a, file_b):
        file["state"].pop("train_seconds")  # measured time
    assert file_a["state"]["step"] == CONFIG.max_steps and same(file_a, file_b)
    weights = model_b.state_dict()
    assert all(torch.equal(value, weights[name]) for name, value in file_b["model"].items())


def test_the_snapshot_is_taken_on_the_step_not_when_the_file_is_written(tmp_path, monkeypatch):
    release, started = threading.Event(), threading.Event()
    save = torch.save

    def slow_save(value, path):
        started.set()
        release.wait(10)
        save(value, path)

    monkeypatch.setattr(torch, "save", slow_save)
    weights = torch.zeros(3)
    writer = CheckpointWriter()
    writer.write(tmp_path / "resume.pt", {"model": checkpoints.snapshot({"w": weights})})
    started.wait(10)
    weights += 1.0  # training goes on while the file is being written
    release.set()
    writer.wait()
    assert torch.equal(torch.load(tmp_path / "resume.pt", weights_only=True)["model"]["w"], torch.zeros(3))


def test_a_resume_file_is_due_after_the_wall_clock_interval(prepared, checkpoint, tmp_path):
    now = [0.0]
    writer = CheckpointWriter(every_seconds=60.0, clock=lambda: now[0])
    assert not writer.due()
    now[0] = 61.0
    assert writer.due()
    writer.write(tmp_path / "a.pt", {"x": 1})
    assert not writer.due()
    writes = []

    class Counting(CheckpointWriter):
        def write(self, path, value):
            writes.append(value["state"]["step"])
            super().write(path, value)

    ticking = Counting(every_seconds=0.0)  # every step is due: a run whose steps take longer than the interval
    trained(prepared, checkpoint, tmp_path / "run", ticking)
    assert writes == list(range(1, CONFIG.max_steps + 1))


def test_a_failed_background_write_raises_on_the_training_thread(tmp_path):
    (tmp_path / "a-file").write_text("")
    writer = CheckpointWriter()
    writer.write(tmp_path / "a-file" / "resume.pt", {"x": torch.zeros(1)})
    with pytest.raises(Exception, match="a-file"):
        writer.wait()
    writer.wait()  # reported once


class Stop(Exception):
    """A kill in the middle of a run."""


def interrupted(prepared, checkpoint, out, monkeypatch, *, after_steps: int):
    """Train CONFIG's run, killed during the step after `after_steps` (its resume file written)."""
    from crossling import finetune

    fitting_step, calls = finetune.fitting_step, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) > after_steps:
            raise Stop
        return fitting_step(*args, **kwargs)

    monkeypatch.setattr(finetune, "fitting_step", dies)
    with pytest.raises(Stop):  # written on the step: the kill comes after the file is on disk
        trained(prepared, checkpoint, out, CheckpointWriter(background=False))
    monkeypatch.setattr(finetune, "fitting_step", fitting_step)


def resumed(prepared, checkpoint, out, *, identity_of=None):
    """A new process's resume of the run in `out`: a fresh learner of `checkpoint`, restored and trained on;
    `identity_of` (default `checkpoint`) names the run, as a study names its checkpoint by an alias."""
    from crossling.finetune import seed_everything

    seed_everything(0)
    data, learner, training = cpu_learner(prepared, checkpoint, CONFIG)
    job = FinetuneJob(standalone_identity(data, identity_of or checkpoint, 0, CONFIG), checkpoint, prepared)
    resume = ResumeFile(out, job)
    state = resume.restore(learner)
    train(learner, training, state, resume=resume, wall=lambda: 1.0)
    resume.wait()
    return learner.model, state


def test_a_resume_file_leaves_the_frozen_encoder_out_and_resumes_bit_identically(prepared, checkpoint, tmp_path,
                                                                              monkeypatch):
    reference, _ = trained(prepared, checkpoint, tmp_path / "whole", CheckpointWriter())
    interrupted(prepared, checkpoint, tmp_path / "run", monkeypatch, after_steps=4)
    stored = torch.load(tmp_path / "run" / "resume.pt", weights_only=True)
    frozen = [name for name, p in reference.named_parameters() if not p.requires_grad]
    assert frozen and all("feature_extractor" in name for name in frozen)
    assert stored["state"]["step"] == 4 and not any("feature_extractor" in key for key in stored["model"])
    assert stored["frozen"]["names"] == sorted(frozen) and len(stored["frozen"]["sha256"]) == 64
    model, state = resumed(prepared, checkpoint, tmp_path / "run")
    assert state.resumed_from == (4,)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values(),
                                                 strict=True))


def test_a_changed_pretrained_encoder_is_refused_on_resume(prepared, checkpoint, tmp_path, monkeypatch):
    from crossling.errors import ConfigError

    interrupted(prepared, checkpoint, tmp_path / "run", monkeypatch, after_steps=2)
    expected = torch.load(tmp_path / "run" / "resume.pt", weights_only=True)["frozen"]["sha256"]
    changed = str(make_tiny_checkpoint(tmp_path / "changed", "wav2vec2", seed=1))  # the alias now gives these
    with pytest.raises(ConfigError, match=f"frozen parameters .*expected SHA-256 {expected}") as error:
        resumed(prepared, changed, tmp_path / "run", identity_of=checkpoint)
    assert str(tmp_path / "run" / "resume.pt") in str(error.value)


def test_the_wall_clock_interval_is_the_recipes_checkpoint_minutes(prepared, checkpoint, tmp_path, monkeypatch):
    """Steps of 40 s (a monkeypatched clock), no step interval within the run: a resume file whenever
    `checkpoint_minutes` has passed, and at the end."""
    from crossling import finetune
    from crossling.finetune import seed_everything

    def steps_written(minutes: float) -> list[int]:
        config = replace(CONFIG, checkpoint_every=100, checkpoint_minutes=minutes)
        seed_everything(0)
        data, learner, training = cpu_learner(prepared, checkpoint, config)
        resume = ResumeFile(tmp_path / str(minutes), FinetuneJob(standalone_identity(data, checkpoint, 0, config),
                                                                  checkpoint, prepared))
        now, written = [0.0], []
        resume.writer.clock, resume.writer._last = (lambda: now[0]), 0.0
        write, fitting_step = resume.writer.write, finetune.fitting_step
        monkeypatch.setattr(resume.writer, "write", lambda path, value: written.append(value["state"]["step"])
                            or write(path, value))
        monkeypatch.setattr(finetune, "fitting_step", lambda *a, **k: now.__setitem__(0, now[0] + 40.0)
                            or fitting_step(*a, **k))
        (tmp_path / str(minutes)).mkdir()
        train(learner, training, TrainState(), resume=resume, wall=lambda: 1.0)
        resume.wait()
        return written

    assert steps_written(1.0) == [2, 4, 6]  # 80 s >= 60 s after the last write
    assert steps_written(10.0) == [6]
    assert steps_written(2.0) == [3, 6]


def test_checkpoint_minutes_is_an_option_of_the_cli_and_study_files_outside_the_run_identity(prepared, checkpoint,
                                                                                             tmp_path, monkeypatch):
    from crossling import cli
    from crossling import finetune as module
    from crossling.config import load_train_config
    from crossling.errors import ConfigError
    from crossling.records import run_identity

    given = []

    def captured(*args, config, **kwargs):
        given.append(config)
        raise Stop

    monkeypatch.setattr(module, "finetune", captured)
    with pytest.raises(Stop):
        cli.main(["finetune", "--data", str(prepared), "--language", "xx", "--model", checkpoint, "--out",
                  str(tmp_path / "run"), "--checkpoint-minutes", "2.5"])
    assert given[0].checkpoint_minutes == 2.5
    (tmp_path / "study.toml").write_text("[recipe]\ncheckpoint_minutes = 30\n")
    assert load_train_config(tmp_path / "study.toml").checkpoint_minutes == 30.0
    with pytest.raises(ConfigError, match="checkpoint_minutes must be a finite number > 0"):
        TrainConfig(checkpoint_minutes=0)
    ids = {run_identity(model="m", language="xx", seed=0, data={"source": "x"},
                        recipe=TrainConfig(checkpoint_minutes=minutes)).digest() for minutes in (10.0, 0.5, 60.0)}
    assert len(ids) == 1
