"""The data path off the step: prefetched waveforms are the ones read on demand, CPU training with the
prefetcher is bit-identical to reading on demand, GPU copies go through pinned memory without blocking,
and the training step reads nothing on the host between log intervals (the blank-only watchdog, the
non-finite checks and the losses stay on the device)."""

import math
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tinydata_factory import cpu_learner, make_prepared, make_tiny_checkpoint
from torch.overrides import TorchFunctionMode

from crossling import devices, finetune
from crossling.batching import DataPosition
from crossling.config import TrainConfig
from crossling.finetune import (
    FinetuneJob,
    ResumeFile,
    TrainState,
    standalone_identity,
)
from crossling.prefetch import WaveformPrefetcher

CONFIG = TrainConfig(learning_rate=2e-3, max_steps=8, batch_seconds=8.0, checkpoint_every=4, mask_time_prob=0.3,
                     mask_time_length=3, hidden_dropout=0.1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "wav2vec2"))


def setup(prepared, checkpoint):
    finetune.seed_everything(0)
    return cpu_learner(prepared, checkpoint, CONFIG)


def test_prefetched_waveforms_are_the_ones_read_on_demand(prepared, checkpoint):
    _, learner, training = setup(prepared, checkpoint)
    reader = WaveformPrefetcher(training, learner.spec, needed=lambda i: i != 0)
    reader.ahead(DataPosition())
    first, position = training.plan.take(DataPosition())
    second, _ = training.plan.take(position)
    assert set(reader._pending) == set(first + second) - {0}  # two batches ahead, a cached one skipped
    for index in first + second:
        assert np.array_equal(reader.waveform(index), reader.read(index))
    assert not reader._pending
    reader.close()


class OnDemand(WaveformPrefetcher):
    """Today's path: every waveform read when the batch is made."""

    def ahead(self, position):
        pass


def trained_weights(prepared, checkpoint, tmp_path, monkeypatch, reader_class):
    monkeypatch.setattr(finetune, "WaveformPrefetcher", reader_class)
    data, learner, training = setup(prepared, checkpoint)
    job = FinetuneJob(standalone_identity(data, checkpoint, 0, CONFIG), checkpoint, prepared)
    tmp_path.mkdir(parents=True, exist_ok=True)
    resume = ResumeFile(tmp_path, job)
    state = finetune.train(learner, training, TrainState(), resume=resume, wall=lambda: 1.0)
    resume.wait()
    return state, [p.detach().clone() for p in learner.model.parameters()]


def test_cpu_training_with_prefetching_is_bit_identical_to_reading_on_demand(prepared, checkpoint, tmp_path,
                                                                            monkeypatch):
    state_a, weights_a = trained_weights(prepared, checkpoint, tmp_path / "a", monkeypatch, OnDemand)
    state_b, weights_b = trained_weights(prepared, checkpoint, tmp_path / "b", monkeypatch, WaveformPrefetcher)
    assert state_a.last_loss == state_b.last_loss and state_a.step == CONFIG.max_steps
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))


def test_gpu_copies_go_through_pinned_memory_without_blocking():
    calls = []

    class HostTensor:
        device = torch.device("cpu")

        def pin_memory(self):
            calls.append("pin")
            return self

        def to(self, device, non_blocking=False):
            calls.append((device, non_blocking))
            return self

    devices.to_device(HostTensor(), "cuda:1")
    assert calls == ["pin", ("cuda:1", True)]

    class DeviceTensor(HostTensor):  # a cached feature already on the GPU: nothing to pin
        device = torch.device("meta")

    calls.clear()
    devices.to_device(DeviceTensor(), "cuda:1")
    assert calls == [("cuda:1", False)]
    host = torch.ones(2)
    assert devices.to_device(host, "cpu") is host  # CPU: the tensor itself, nothing copied


def test_the_feature_cache_stays_on_a_gpu_that_has_room():
    assert devices.cache_fits_on_device(1.8 * 2**30, 24 * 2**30)
    assert not devices.cache_fits_on_device(1.8 * 2**30, 12 * 2**30)
    assert not devices.cache_fits_on_device(1.0, None)  # CPU: host memory is the device's


def test_the_blank_only_watchdog_matches_per_utterance_checks_without_a_host_read(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    outcomes = set()
    for trial in range(20):
        logits = torch.randn(5, 30, 6, generator=generator)
        blank_rows = torch.rand(5, generator=generator) < 0.5 + trial / 40
        logits[blank_rows, :, 0] += 10.0  # these rows decode to blanks only
        frames = torch.randint(1, 31, (5,), generator=generator).tolist()
        logits[:, 25:, 0] -= 20.0 * (trial % 2)  # non-blank frames past some utterances' ends are ignored
        expected = all(not row[:n].any() for row, n in zip(logits.argmax(-1), frames, strict=True))
        outcomes.add(expected)
        with HostReads() as reads:
            flag = finetune.all_blank(logits, frames)
        assert not reads.by and flag.shape == () and bool(flag) == expected
    assert outcomes == {True, False}


#: The Tensor methods that make the host wait for the device (on a GPU): a value read into Python.
HOST_READS = frozenset({"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy"})


class HostReads(TorchFunctionMode):
    """Counts the host reads of tensor values made on this thread, by whose code made them: 'crossling',
    'transformers' (the model's own forward), or another file."""

    def __init__(self):
        super().__init__()
        self.by = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.by[_asker(sys._getframe(1))] += 1
        return func(*args, **(kwargs or {}))


def _asker(frame) -> str:
    torch_dir = Path(torch.__file__).parent
    while frame is not None and Path(frame.f_code.co_filename).is_relative_to(torch_dir):
        frame = frame.f_back
    file = Path(frame.f_code.co_filename)
    if file.is_relative_to(Path(finetune.__file__).parent):
        return "crossling"
    return "transformers" if "transformers" in file.parts else file.name


def test_training_steps_read_nothing_on_the_host_between_log_intervals(prepared, checkpoint, tmp_path):
    """Old code: 5 host reads per step (two `if torch.isfinite(...)`, the watchdog's bool, float(loss) and
    float(norm)). Now the steps' results are read once per `LOG_EVERY` steps and before a resume file: a
    6-step run reads twice (after step 0, a progress line; after step 5, the last step's resume file)."""
    config = replace(CONFIG, max_steps=6, checkpoint_every=100, eval_every=0)
    finetune.seed_everything(0)
    data, learner, training = cpu_learner(prepared, checkpoint, config)
    job = FinetuneJob(standalone_identity(data, checkpoint, 0, config), checkpoint, prepared)
    resume = ResumeFile(tmp_path, job)
    assert resume.restore(learner) is None  # as a run starts: the frozen encoder's digest is taken here
    with HostReads() as reads:
        state = finetune.train(learner, training, TrainState(), resume=resume, wall=lambda: 1.0)
    resume.wait()
    assert state.step == 6 and math.isfinite(state.last_loss)
    assert reads.by["transformers"] > 0  # the counter sees the model's own reads (its label-range check)
    assert reads.by["crossling"] == 2, dict(reads.by)


def old_cached_batch(training, indices, device, *, cache, read):
    """`batching._cached_batch` as it was at 08594d9: the cached features padded again for every step."""
    from crossling.batching import pad_labels
    from crossling.models import frames_for_samples, pad_features

    lengths = [training.utterances[i].num_samples for i in indices]
    features = [cache.features(i, lambda i=i: read(i)) for i in indices]
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    padded = pad_features(features, frames_for_samples(cache.model_config, max(lengths)))
    return {"input_values": torch.zeros(mask.shape), "attention_mask": mask, "features": padded,
            "labels": pad_labels([training.labels[i] for i in indices]),
            "frames": [frames_for_samples(training.model_config, n) for n in lengths]}


def cached_training(prepared, checkpoint, tmp_path, config):
    """(weights, batches trained on, times the features were padded) of a CPU run with the feature cache."""
    from crossling import batching, models, sharing

    sharing.clear()  # each run computes its features anew
    finetune.seed_everything(0)
    data, learner, training = cpu_learner(prepared, checkpoint, config)
    cache = batching.feature_cache(learner.model, learner.spec, config, training)
    assert cache is not None and cache.encoder is not None
    learner = replace(learner, cache=cache)
    pads, batches, pad_features, fitting_step = [], [], models.pad_features, finetune.fitting_step
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "pad_features", lambda *a: pads.append(1) or pad_features(*a))
        patch.setattr(finetune, "fitting_step", lambda learner, training, indices, *a, **k:
                      batches.append(tuple(indices)) or fitting_step(learner, training, indices, *a, **k))
        job = FinetuneJob(standalone_identity(data, checkpoint, 0, config), checkpoint, prepared)
        resume = ResumeFile(tmp_path, job)
        finetune.train(learner, training, TrainState(), resume=resume, wall=lambda: 1.0)
        resume.wait()
    return [p.detach().clone() for p in learner.model.parameters()], batches, len(pads)


def test_cached_features_are_padded_once_per_batch_with_bit_identical_training(prepared, checkpoint, tmp_path,
                                                                               monkeypatch):
    from crossling import batching

    config = replace(CONFIG, max_steps=16, checkpoint_every=100)  # about three epochs
    weights, batches, pads = cached_training(prepared, checkpoint, tmp_path / "new", config)
    with monkeypatch.context() as patch:
        patch.setattr(batching, "_cached_batch", old_cached_batch)
        old_weights, old_batches, old_pads = cached_training(prepared, checkpoint, tmp_path / "old", config)
    assert batches == old_batches and old_pads == config.max_steps  # padded for every step before
    assert pads == len({frozenset(b) for b in batches}) < config.max_steps  # once per batch: none when met again
    assert len(set(batches)) > len({frozenset(b) for b in batches})  # and a batch met again in another order
    assert all(torch.equal(a, b) for a, b in zip(weights, old_weights, strict=True))
