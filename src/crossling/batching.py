"""Batches: a prepared language's train split -> CTC-feasibility filter (with counts) -> length-sorted
batches of at most `batch_seconds` of padded audio in a seeded order resumable from a `DataPosition` -> model inputs
(padded waveforms or log-mel rows, or cached features) for training."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crossling import devices
from crossling.config import TrainConfig
from crossling.errors import DataError
from crossling.frontend import input_name, model_input, pad_inputs, valid_input_length
from crossling.manifest import Utterance
from crossling.models import FrozenFeatureCache, InputSpec, frames_for_samples
from crossling.prepared import PreparedLanguage
from crossling.sharing import FEATURE_MAX_BYTES, RunView, audio_key, feature_store, read_audio

if TYPE_CHECKING:  # torch and transformers load only where batches are made
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def ctc_min_frames(labels: Sequence[int]) -> int:
    """Fewest output frames a CTC alignment of `labels` needs: one per label plus a blank between repeats."""
    repeats = sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)
    return len(labels) + repeats


def filter_for_ctc(
    utterances: Sequence[Utterance],
    labels: Sequence[Sequence[int]],
    frames_of: Callable[[int], int],
    max_seconds: float,
) -> tuple[list[int], dict[str, int]]:
    """Indices of utterances that can be trained on, and counts of those left out.

    'audio_too_long': longer than `max_seconds`; 'label_too_long': the label needs more CTC frames than
    the model outputs for that audio (it would give an infinite loss)."""
    kept: list[int] = []
    skipped: Counter[str] = Counter(label_too_long=0, audio_too_long=0)
    for index, (utterance, label) in enumerate(zip(utterances, labels, strict=True)):
        if utterance.duration > max_seconds:
            skipped["audio_too_long"] += 1
        elif ctc_min_frames(label) > frames_of(utterance.num_samples):
            skipped["label_too_long"] += 1
        else:
            kept.append(index)
    return kept, dict(skipped)


def length_sorted_batches(durations: Sequence[float], batch_seconds: float, tiebreak=None) -> list[list[int]]:
    """Consecutive runs of length-sorted indices whose padded size (count x longest) stays within
    `batch_seconds`; an utterance longer than that forms a batch of its own."""
    keys = np.asarray(durations, dtype=np.float64)
    order = np.lexsort((tiebreak, keys)) if tiebreak is not None else np.argsort(keys, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order.tolist():
        if current and (len(current) + 1) * keys[index] > batch_seconds:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class DataPosition:
    """Where the training stream stands: batch `batch` of epoch `epoch` is the next one to train on."""

    epoch: int = 0
    batch: int = 0


class BatchPlan:
    """The training stream: each epoch's batches are a pure function of (seed, epoch, durations), so a
    `DataPosition` is all a checkpoint needs to resume the exact same sequence."""

    def __init__(self, durations: Sequence[float], batch_seconds: float, seed: int) -> None:
        if not durations:
            raise DataError("no training utterances left after filtering")
        self.durations = list(durations)
        self.batch_seconds = batch_seconds
        self.seed = seed
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Length-sorted batches (ties broken at random), then shuffled; both seeded by (seed, epoch)."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            batches = length_sorted_batches(self.durations, self.batch_seconds, rng.random(len(self.durations)))
            order = rng.permutation(len(batches))
            self._epoch_cache = (epoch, [batches[i] for i in order])
        return self._epoch_cache[1]

    def take(self, position: DataPosition) -> tuple[list[int], DataPosition]:
        """The batch at `position` and the position after it."""
        batches = self.epoch_batches(position.epoch)
        if position.batch >= len(batches):
            return self.take(DataPosition(position.epoch + 1, 0))
        following = DataPosition(position.epoch, position.batch + 1)
        return batches[position.batch], following


# --- the training set of one run ------------------------------------------------------------------

#: Cache the frozen CNN's outputs only below this size (LARGE models: ~0.36 GiB per training hour).
FEATURE_CACHE_MAX_BYTES = FEATURE_MAX_BYTES


@dataclass(frozen=True)
class TrainingData:
    """The filtered training set: waveforms are read on demand, labels are token ids."""

    data: PreparedLanguage
    utterances: list[Utterance]
    labels: list[list[int]]
    skipped: dict[str, int]
    plan: BatchPlan
    model_config: PretrainedConfig


def training_data(data: PreparedLanguage, tokenizer: PreTrainedTokenizerBase, model_config: PretrainedConfig,
                  config: TrainConfig, seed: int) -> TrainingData:
    """The train split encoded and filtered (counts of what was left out), with its batch plan."""
    utterances = data.split("train")
    labels = [tokenizer(u.text).input_ids for u in utterances]
    kept, skipped = filter_for_ctc(utterances, labels, lambda n: frames_for_samples(model_config, n),
                                   config.max_utterance_seconds)
    if any(skipped.values()):
        log.warning("left out of training: %s (of %d utterances)", skipped, len(utterances))
    utterances = [utterances[i] for i in kept]
    labels = [labels[i] for i in kept]
    plan = BatchPlan([u.duration for u in utterances], config.batch_seconds, seed)
    return TrainingData(data=data, utterances=utterances, labels=labels, skipped=skipped, plan=plan,
                        model_config=model_config)


def feature_cache(model: nn.Module, spec: InputSpec, config: TrainConfig, training: TrainingData,
                  autocast_dtype=None) -> FrozenFeatureCache | None:
    """A cache of features that are a fixed function of the audio (frozen CNN outputs, computed under the
    run's `autocast_dtype`; log-mel rows) when that is exact and the train set's features fit in memory;
    on a GPU with room it stays there."""
    if not FrozenFeatureCache.applies(model, spec, config):
        return None
    size = sum(FrozenFeatureCache.bytes_per_utterance(model.config, spec, u.num_samples) for u in training.utterances)
    if size > FEATURE_CACHE_MAX_BYTES:
        log.info("not caching features: %.1f GiB would exceed %.1f GiB", size / 2**30,
                 FEATURE_CACHE_MAX_BYTES / 2**30)
        return None
    device = str(next(model.parameters()).device)
    on_device = devices.cache_fits_on_device(size, devices.memory_bytes(device))
    if on_device:
        log.info("caching features on %s (%.2f GiB): no re-upload each step", device, size / 2**30)
    cache = FrozenFeatureCache(model, spec, autocast_dtype, on_device=on_device)
    if cache.encoder is not None:  # CNN outputs: shared by this process's runs whose encoders are the same
        keys = [(audio_key(training.data.root, u), spec, str(autocast_dtype), on_device) for u in training.utterances]
        cache.store = RunView(feature_store(cache.encoder), keys)
    return cache


def make_batch(training: TrainingData, indices: list[int], spec: InputSpec, device: str,
               cache: FrozenFeatureCache | None = None, read: Callable[[int], np.ndarray] | None = None) -> dict:
    """Model inputs of one batch: padded waveforms or log-mel rows (or cached features), labels, the mask
    (if the checkpoint takes one) and each utterance's frame count (for the blank-only check). `read(i)`
    gives utterance i's model input (default: read it now; `prefetch` reads ahead)."""
    read = read or (lambda i: model_input(read_audio(training.data.root, training.utterances[i]), spec))
    if cache is not None:
        return _cached_batch(training, indices, device, cache=cache, read=read)
    utterances = [training.utterances[i] for i in indices]
    inputs = [read(i) for i in indices]
    samples = [u.num_samples for u in utterances]
    values, mask = pad_inputs(inputs, [valid_input_length(spec, n) for n in samples], spec.padding_value)
    labels = pad_labels([training.labels[i] for i in indices])
    batch = {input_name(spec): devices.to_device(values, device), "labels": devices.to_device(labels, device)}
    if spec.use_attention_mask:
        batch["attention_mask"] = devices.to_device(mask, device)
    # without a mask the model sees (and the CTC loss uses) every padded frame
    lengths = samples if spec.use_attention_mask else [values.shape[1]] * len(samples)
    batch["frames"] = [frames_for_samples(training.model_config, n) for n in lengths]
    return batch


def _cached_batch(training: TrainingData, indices: list[int], device: str, *, cache: FrozenFeatureCache,
                  read: Callable[[int], np.ndarray]) -> dict:
    """As `make_batch`, with the cached features (CNN outputs replayed into the model, or log-mel rows),
    padded once per batch (`FrozenFeatureCache.padded`; on the device when the cache is there)."""
    import torch

    lengths = [training.utterances[i].num_samples for i in indices]

    def build() -> dict:
        features = [cache.features(i, lambda i=i: read(i)) for i in indices]
        inputs = {**cache.model_inputs(features, lengths), "labels": pad_labels([training.labels[i] for i in indices])}
        return {key: devices.to_device(value, device) for key, value in inputs.items()} if cache.on_device else inputs

    batch = {key: devices.to_device(value, device) for key, value in cache.padded(indices, build).items()}
    if cache.encoder is not None:  # the waveform the replayed features stand for: never read, so never made
        batch["input_values"] = torch.zeros((), device=batch["attention_mask"].device).expand(batch["attention_mask"].shape)
    return {**batch, "frames": [frames_for_samples(training.model_config, n) for n in lengths]}


def pad_labels(labels: Sequence[Sequence[int]]):
    """Right-pad label sequences with -100 (ignored by the CTC loss) -> int64 tensor [B, L]."""
    import torch

    longest = max(len(label) for label in labels)
    padded = torch.full((len(labels), longest), -100, dtype=torch.long)
    for row, label in enumerate(labels):
        padded[row, : len(label)] = torch.tensor(list(label), dtype=torch.long)
    return padded
