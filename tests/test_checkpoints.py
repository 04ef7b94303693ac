"""Resume files off the step: the background writer writes what the synchronous one did, from a snapshot
taken on the step, at step and wall-clock intervals, and its errors reach the training thread."""

import threading

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
    assert all(torch.equal(a, b) for a, b in zip(file_b["model"].values(), model_b.state_dict().values(), strict=True))


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
