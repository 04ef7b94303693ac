"""The data path off the training step: the next batches' waveforms are read, decoded and normalised by a
background thread while the current step computes: the same arrays as reading them on demand
(`devices.to_device` then takes batches to a GPU through pinned memory, without blocking)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from crossling.batching import DataPosition, TrainingData
from crossling.frontend import model_input
from crossling.models import InputSpec
from crossling.prepared import load_audio

#: Batches read ahead of the one training: enough to hide a slow read behind one step, little memory.
DEPTH = 2


class WaveformPrefetcher:
    """Model-ready waveforms of the training set by index, read `DEPTH` batches ahead in one background
    thread. `needed(index)` says whether a waveform will be read at all (a cached utterance's is not)."""

    def __init__(self, training: TrainingData, spec: InputSpec, needed: Callable[[int], bool] = lambda i: True):
        self.training, self.spec, self.needed = training, spec, needed
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossling-prefetch")
        self._pending: dict[int, Future] = {}

    def ahead(self, position: DataPosition) -> None:
        """Start reading the batches from `position` on (those already pending are not read twice)."""
        for _ in range(DEPTH):
            indices, position = self.training.plan.take(position)
            for index in indices:
                if index not in self._pending and self.needed(index):
                    self._pending[index] = self._pool.submit(self.read, index)

    def waveform(self, index: int) -> np.ndarray:
        """The waveform of utterance `index`: the prefetched one, else read now."""
        future = self._pending.pop(index, None)
        return future.result() if future is not None else self.read(index)

    def read(self, index: int) -> np.ndarray:
        return model_input(load_audio(self.training.data.root, self.training.utterances[index]), self.spec)

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

