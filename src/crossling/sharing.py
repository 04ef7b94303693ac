"""What the runs of one process share instead of computing it again: prepared waveforms (read once) and the
frozen CNN's features of an utterance under one set of encoder weights (the same for every seed of a
pre-trained checkpoint). In memory only, within byte budgets; keys name the file's size and modification
time, so a file rewritten in place is read again."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Hashable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crossling.manifest import Utterance
from crossling.prepared import load_audio

if TYPE_CHECKING:
    from torch import nn

#: Prepared waveforms kept per process (the demo's six languages: ~0.14 GB as float32).
AUDIO_MAX_BYTES = 512 * 2**20
#: Frozen-CNN features kept per process, over all encoders (LARGE models: ~0.36 GiB per training hour).
FEATURE_MAX_BYTES = 4 * 2**30

AudioKey = tuple[str, int, int]


def audio_key(root: Path, utterance: Utterance) -> AudioKey:
    """(path, size, modification time in ns) of an utterance's prepared audio file."""
    path = os.path.join(root, utterance.audio)
    try:
        status = os.stat(path)
    except OSError:
        return path, -1, -1  # load_audio will say what is wrong with it
    return path, status.st_size, status.st_mtime_ns


class _AudioCache:
    """Least recently used waveforms within `AUDIO_MAX_BYTES`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.waveforms: OrderedDict[AudioKey, np.ndarray] = OrderedDict()
        self.bytes = 0

    def read(self, root: Path, utterance: Utterance) -> np.ndarray:
        key = audio_key(root, utterance)
        if key in self.waveforms:
            self.waveforms.move_to_end(key)
            return self.waveforms[key]
        audio = load_audio(root, utterance)
        self.waveforms[key] = audio
        self.bytes += audio.nbytes
        while self.bytes > self.max_bytes and len(self.waveforms) > 1:
            self.bytes -= self.waveforms.popitem(last=False)[1].nbytes
        return audio


_AUDIO = _AudioCache(AUDIO_MAX_BYTES)


def read_audio(root: Path, utterance: Utterance) -> np.ndarray:
    """`prepared.load_audio`, read from disk once per process (callers must not modify the array)."""
    return _AUDIO.read(root, utterance)


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 over the encoder's tensors (names, dtypes, shapes, values), its device and torch's thread
    count (with another thread count a convolution may round differently)."""
    import torch

    digest = hashlib.sha256(f"threads={torch.get_num_threads()}".encode())
    for name, tensor in encoder.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{tensor.device}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _FeatureStores:
    """One dict of features per encoder fingerprint; whole stores are dropped, least recently used
    first, when all of them exceed `FEATURE_MAX_BYTES`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.stores: OrderedDict[str, dict] = OrderedDict()

    def store_for(self, encoder: nn.Module) -> dict:
        fingerprint = encoder_fingerprint(encoder)
        store = self.stores.setdefault(fingerprint, {})
        self.stores.move_to_end(fingerprint)
        while len(self.stores) > 1 and self._bytes() > self.max_bytes:
            self.stores.popitem(last=False)
        return store

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for store in self.stores.values() for t in store.values())


_FEATURES = _FeatureStores(FEATURE_MAX_BYTES)


def feature_store(encoder: nn.Module) -> dict:
    """The process's features computed by an encoder with exactly these weights (a new dict for new ones)."""
    return _FEATURES.store_for(encoder)


class RunView(MutableMapping):
    """One run's view of a shared feature store: its utterance index -> the shared entry of that
    utterance's key (what the run's cache and prefetcher look up by index)."""

    def __init__(self, shared: dict, keys: list[Hashable]) -> None:
        self.shared, self.keys = shared, keys

    def __getitem__(self, index: int):
        return self.shared[self.keys[index]]

    def __setitem__(self, index: int, value) -> None:
        self.shared[self.keys[index]] = value

    def __delitem__(self, index: int) -> None:
        del self.shared[self.keys[index]]

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and 0 <= index < len(self.keys) and self.keys[index] in self.shared

    def __iter__(self):
        return (index for index, key in enumerate(self.keys) if key in self.shared)

    def __len__(self) -> int:
        return sum(key in self.shared for key in self.keys)


def clear() -> None:
    """Forget everything shared so far (tests; a process that needs the memory back)."""
    global _AUDIO, _FEATURES
    _AUDIO = _AudioCache(AUDIO_MAX_BYTES)
    _FEATURES = _FeatureStores(FEATURE_MAX_BYTES)
