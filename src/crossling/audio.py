"""Decode clips (MP3/WAV/FLAC, any rate) -> 16 kHz mono PCM-16 WAVs in a per-language cache.

The cache index (`paths.audio_cache_index_path`) records each clip's source size/mtime and DECODED length,
so a re-run decodes only new or changed clips, and corrupt/empty clips are remembered as such."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from crossling import paths
from crossling.atomic import read_jsonl, write_jsonl_atomic
from crossling.children import end_with_parent
from crossling.manifest import SAMPLE_RATE

log = logging.getLogger(__name__)

CORRUPT, EMPTY = "corrupt_clip", "empty_clip"


@dataclass(frozen=True)
class ClipJob:
    """A clip to decode: its name in clips/, the file on disk, and the source's size and mtime (cache key)."""

    clip: str
    source: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Decoded:
    """Outcome for one clip: `num_samples` at 16 kHz, or an `error` (CORRUPT / EMPTY) with a `detail`."""

    clip: str
    size: int
    mtime_ns: int
    num_samples: int = 0
    error: str = ""
    detail: str = ""


class _InlineExecutor(Executor):
    """Runs each task at submit time; used for workers=1 (no process start-up cost)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(error)
        return future


# --- decoding one clip -------------------------------------------------------------------------------


def decode_file(path: Path) -> np.ndarray:
    """Any soundfile-readable clip -> float32 mono samples at 16 kHz (soxr high-quality resampling)."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    if rate != SAMPLE_RATE and len(mono):
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.asarray(mono, dtype=np.float32)


def decode_to_wav(source: str, target: str) -> tuple[int, str, str]:
    """Decode `source` into the PCM-16 WAV `target` (atomically); -> (num_samples, error, detail).

    Runs in worker processes, so it returns plain values and never raises for bad audio."""
    if os.path.getsize(source) == 0:
        return 0, EMPTY, "file has 0 bytes"
    try:
        samples = decode_file(Path(source))
    except Exception as error:  # noqa: BLE001 - libsndfile/mpg123 raise several types for bad data
        return 0, CORRUPT, f"{type(error).__name__}: {error}"
    if len(samples) == 0:
        return 0, EMPTY, "decodes to 0 samples"
    if not np.isfinite(samples).all():
        return 0, CORRUPT, "decoded samples are not finite"
    # Encoded in memory and written in one call: libsndfile's own file output makes hundreds of small
    # seeks and writes per file, which cost more than the decoding on slow (networked/overlay) disks.
    encoded = io.BytesIO()
    sf.write(encoded, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(encoded.getbuffer())
    os.replace(tmp, target)
    return len(samples), "", ""


# --- the cache ---------------------------------------------------------------------------------------


class ClipCache:
    """Decoded clips of one language under `<prepared root>/_audio/<lang>/`, with an index of lengths."""

    def __init__(self, prepared_root: Path, language: str):
        self.root, self.language = Path(prepared_root), language
        self.index_path = paths.audio_cache_index_path(self.root, language)
        self.entries = self._load()
        self.decoded = self.reused = 0

    def _load(self) -> dict[str, Decoded]:
        """The index on disk; an unreadable one only costs a re-decode, so it is logged and ignored."""
        if not self.index_path.is_file():
            return {}
        try:
            return {row["clip"]: Decoded(**row) for row in read_jsonl(self.index_path)}
        except (ValueError, TypeError, KeyError) as error:
            log.warning("%s: unreadable decode-cache index (%s); clips will be decoded again",
                        self.index_path, error)
            return {}

    def wav_path(self, clip: str) -> Path:
        return paths.audio_cache_path(self.root, self.language, clip)

    def lookup(self, clip: str, size: int, mtime_ns: int) -> Decoded | None:
        """The cached outcome if the source is unchanged (same size and mtime) and the WAV still exists."""
        entry = self.entries.get(clip)
        if entry is None or (entry.size, entry.mtime_ns) != (size, mtime_ns):
            return None
        if not entry.error and not self.wav_path(clip).is_file():
            return None
        return entry

    def record(self, entry: Decoded) -> Decoded:
        self.entries[entry.clip] = entry
        return entry

    def save(self) -> None:
        write_jsonl_atomic(self.index_path, [asdict(e) for e in sorted(self.entries.values(), key=_clip_key)])


def _clip_key(entry: Decoded) -> str:
    return entry.clip


# --- decoding many clips -----------------------------------------------------------------------------


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _executor(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    # forkserver: forking a process that runs threads (tqdm's monitor, torch) can deadlock
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=end_with_parent)  # none outlives a kill -9 of crossling


def decode_stream(jobs: Iterable[ClipJob], cache: ClipCache, workers: int | None = None) -> Iterator[Decoded]:
    """Decoded outcomes in the order of `jobs`, decoding cache misses in `workers` processes.

    Lazy with a bounded look-ahead: a consumer that stops early (N hours reached) leaves the rest
    undecoded. Every outcome is recorded in `cache`; the caller saves it."""
    workers = workers or default_workers()
    cache.wav_path("x").parent.mkdir(parents=True, exist_ok=True)
    window = max(4, 8 * workers)
    pending: deque[tuple[ClipJob, Decoded | Future]] = deque()
    executor = _executor(workers)
    try:
        for job in jobs:
            pending.append((job, _start(job, cache, executor)))
            if len(pending) > window:
                yield _finish(*pending.popleft(), cache)
        while pending:
            yield _finish(*pending.popleft(), cache)
    finally:
        # Outcomes already computed by workers are kept even if the consumer stopped early.
        for job, outcome in pending:
            if isinstance(outcome, Future) and outcome.done() and not outcome.cancelled() \
                    and outcome.exception() is None:
                _finish(job, outcome, cache)
        executor.shutdown(wait=True, cancel_futures=True)


def _start(job: ClipJob, cache: ClipCache, executor: Executor) -> Decoded | Future:
    hit = cache.lookup(job.clip, job.size, job.mtime_ns)
    if hit is not None:
        return hit
    return executor.submit(decode_to_wav, str(job.source), str(cache.wav_path(job.clip)))


def _finish(job: ClipJob, outcome: Decoded | Future, cache: ClipCache) -> Decoded:
    if isinstance(outcome, Decoded):
        cache.reused += 1
        return outcome
    num_samples, error, detail = outcome.result()
    cache.decoded += 1
    return cache.record(Decoded(job.clip, job.size, job.mtime_ns, num_samples=num_samples, error=error, detail=detail))
