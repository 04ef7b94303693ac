"""Synthetic Common Voice: wordfreq sentences spoken by eSpeak NG voices, offline and seeded.

(languages, hours, seed) -> <out>/<lang>/clips/*.mp3 (48 kHz) + train/dev/test/validated.tsv
(Common Voice 7.0 columns) + synth.json (written last), readable by `crossling prepare`."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from crossling import paths
from crossling.atomic import read_json, write_json_atomic, write_text_atomic
from crossling.children import end_with_parent
from crossling.errors import ConfigError, DataError
from crossling.espeak import Voice
from crossling.progress import Track, no_progress
from crossling.sentences import LANGUAGES, Lexicon, SynthLanguage, build_lexicon, sentences, synth_language

log = logging.getLogger(__name__)

CLIP_SAMPLE_RATE = 48_000
TSV_COLUMNS = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent", "locale",
               "segment")
# Bump when the generator changes so an old corpus is never mistaken for a new one.
GENERATOR_VERSION = 1

_SPLITS = paths.SPLITS
_MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
_FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
# Common Voice's own age buckets (its spelling), weighted roughly like its contributors.
_AGES = ("teens", "twenties", "thirties", "fourties", "fifties", "sixties", "seventies")
_AGE_WEIGHTS = (0.08, 0.32, 0.24, 0.15, 0.11, 0.07, 0.03)
_CHUNK_CLIPS = 16          # clips per worker task
# Each split gets this much more than asked, so `prepare` asking for exactly `hours` of decoded 16 kHz
# audio never falls short by a rounding error.
_MARGIN_SECONDS = 1.0


# --- speakers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    """Light reverberation (decay time in seconds) and additive noise (signal-to-noise ratio in dB)."""

    rt60: float
    snr_db: float


@dataclass(frozen=True)
class Speaker:
    """One synthetic contributor: an eSpeak voice variant with its own speed, pitch and room."""

    client_id: str
    variant: str
    gender: str
    age: str
    rate: int
    pitch: int
    pitch_range: int
    room: Room | None = None


def _derive_seed(*parts: object) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def make_speakers(language: str, seed: int, counts: dict[str, int], noise: bool = False) -> dict[str, list[Speaker]]:
    """Disjoint speakers per split, half female and half male, each a voice variant with its own prosody."""
    rng = np.random.default_rng(_derive_seed("speakers", language, seed))
    offsets = {"female": int(rng.integers(len(_FEMALE_VARIANTS))), "male": int(rng.integers(len(_MALE_VARIANTS)))}
    speakers: dict[str, list[Speaker]] = {}
    index = 0
    for split in _SPLITS:
        speakers[split] = []
        for _ in range(counts[split]):
            gender = ("female", "male")[index % 2]
            variants = _FEMALE_VARIANTS if gender == "female" else _MALE_VARIANTS
            room = Room(float(rng.uniform(0.1, 0.4)), float(rng.uniform(15, 35))) if noise else None
            speakers[split].append(Speaker(
                client_id=hashlib.sha512(f"crossling-synth/{language}/{seed}/{index}".encode()).hexdigest(),
                variant=variants[(offsets[gender] + index // 2) % len(variants)], gender=gender,
                age=str(rng.choice(_AGES, p=_AGE_WEIGHTS)), rate=int(rng.integers(140, 211)),
                pitch=int(rng.integers(25, 76)), pitch_range=int(rng.integers(30, 81)), room=room))
            index += 1
    return speakers


# --- one clip ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker needs to render one clip; the audio is a pure function of these fields."""

    path: str
    text: str
    voice: Voice
    seed: int
    pad_seconds: tuple[float, float]
    peak: float
    room: Room | None = None


def render_clip(job: ClipJob) -> np.ndarray:
    """Speak a job with eSpeak NG and return it as float32 at 48 kHz (pads, room, level applied)."""
    import soxr

    from crossling import espeak

    engine = espeak.engine()
    engine.reset()  # fresh eSpeak state: the samples depend on this job only
    samples = engine.synthesize(job.text, job.voice, job.seed & 0x7FFFFFFF)
    if samples.size == 0:
        raise DataError(f"eSpeak NG produced no audio for {job.text!r} with voice {job.voice.name}")
    rate = engine.sample_rate
    audio = np.concatenate([np.zeros(int(job.pad_seconds[0] * rate), np.float32),
                            samples.astype(np.float32) / 32768.0,
                            np.zeros(int(job.pad_seconds[1] * rate), np.float32)])
    if job.room is not None:  # after padding, so the pauses carry the room's noise too
        audio = _apply_room(audio, rate, job.room, np.random.default_rng(job.seed))
    audio *= job.peak / max(float(np.abs(audio).max()), 1e-6)
    return soxr.resample(audio, rate, CLIP_SAMPLE_RATE).astype(np.float32)


def _apply_room(audio: np.ndarray, rate: int, room: Room, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    length = max(int(room.rt60 * rate), 1)
    decay = np.exp(-6.91 * np.arange(length) / length)  # -60 dB over rt60
    response = rng.standard_normal(length) * decay * 0.1
    response[0] = 1.0
    wet = fftconvolve(audio, response)[: audio.size + length // 4]
    noise_power = np.mean(wet**2) / 10 ** (room.snr_db / 10)
    return (wet + rng.standard_normal(wet.size) * np.sqrt(noise_power)).astype(np.float32)


def _render_chunk(jobs: list[ClipJob]) -> list[int]:
    """Render and write clips (MP3, 48 kHz); returns each clip's length in samples."""
    import soundfile as sf

    lengths = []
    for job in jobs:
        audio = render_clip(job)
        tmp = Path(job.path).with_suffix(".tmp.mp3")
        sf.write(tmp, audio, CLIP_SAMPLE_RATE, format="MP3")
        os.replace(tmp, job.path)
        lengths.append(int(audio.size))
    return lengths


# --- planning ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One planned utterance of the corpus."""

    name: str
    sentence: str
    speaker: Speaker
    job: ClipJob


def plan_clips(out: Path, language: SynthLanguage, split: str, *, speakers: list[Speaker], lexicon: Lexicon,
               seed: int, word_range: tuple[int, int] = (3, 6)) -> Iterator[Clip]:
    """The endless, seeded sequence of clips of one split; a corpus keeps its shortest long-enough prefix."""
    rng = np.random.default_rng(_derive_seed("clips", language.code, split, seed))
    clips_dir = paths.synthetic_clips_dir(out, language.code)
    for index, sentence in enumerate(sentences(language, lexicon, split, rng, word_range)):
        speaker = speakers[int(rng.integers(len(speakers)))]
        jitter = float(rng.uniform(0.93, 1.07))  # nobody speaks at exactly the same speed twice
        voice = Voice(f"{language.espeak}+{speaker.variant}", int(speaker.rate * jitter), speaker.pitch,
                      speaker.pitch_range)
        name = f"synth_{language.code}_{split}_{index:06d}.mp3"
        pads = (float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.05, 0.3)))
        job = ClipJob(path=str(clips_dir / name), text=sentence, voice=voice,
                      seed=_derive_seed("clip", language.code, split, index, seed), pad_seconds=pads,
                      peak=float(rng.uniform(0.5, 0.9)), room=speaker.room)
        yield Clip(name, sentence, speaker, job)


@dataclass
class _Stream:
    """The clips of one (language, split) being rendered until they reach `target_seconds`."""

    language: str
    split: str
    target_seconds: float
    source: Iterator[Clip]
    clips: list[Clip] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def seconds(self) -> float:
        return sum(self.lengths) / CLIP_SAMPLE_RATE

    def satisfied(self) -> bool:
        return len(self.lengths) == len(self.clips) and self.seconds() >= self.target_seconds

    def plan_more(self) -> list[Clip]:
        """Plan the clips still expected to be needed, from the mean length so far.

        The first round renders one chunk as a pilot: clip lengths differ between languages, and
        clips rendered beyond the target are wasted work."""
        if not self.lengths:
            return self._take(_CHUNK_CLIPS)
        mean = self.seconds() / len(self.lengths)
        return self._take(math.ceil((self.target_seconds - self.seconds()) / mean * 1.02) + 1)

    def _take(self, count: int) -> list[Clip]:
        new = [next(self.source) for _ in range(max(count, 1))]
        self.clips.extend(new)
        return new

    def kept(self) -> list[Clip]:
        """The shortest prefix reaching the target: independent of how many clips were rendered."""
        total = 0
        for index, length in enumerate(self.lengths):
            total += length
            if total >= self.target_seconds * CLIP_SAMPLE_RATE:
                return self.clips[: index + 1]
        return list(self.clips)


# --- the corpus --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SynthOptions:
    """What a synthesized corpus is (the one declaration of these options; `crossling synth` flags and a
    study file's [data] table are built from it; recorded in synth.json): `hours` of train audio per
    language (dev/test: that x `dev_fraction` / `test_fraction`), `speakers` per (train, dev, test) split,
    all disjoint, `word_range` words per sentence drawn from the `vocabulary` most frequent words, light
    rooms with `noise`; everything seeded by `seed`."""

    hours: float
    seed: int = 0
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    speakers: tuple[int, int, int] = (24, 6, 6)
    word_range: tuple[int, int] = (3, 6)
    vocabulary: int = 5000
    noise: bool = False

    def target_seconds(self, split: str) -> float:
        fraction = {"train": 1.0, "dev": self.dev_fraction, "test": self.test_fraction}[split]
        return self.hours * fraction * 3600.0 + _MARGIN_SECONDS

    def speaker_counts(self) -> dict[str, int]:
        return dict(zip(_SPLITS, self.speakers, strict=True))


def _validate(languages: list[str], settings: SynthOptions) -> list[SynthLanguage]:
    if not languages:
        raise ConfigError("no languages given; supported: " + ", ".join(sorted(LANGUAGES)))
    if len(set(languages)) != len(languages):
        raise ConfigError(f"languages repeated in {languages}")
    if not 0 < settings.hours < math.inf or not 0 < settings.dev_fraction <= 1 or not 0 < settings.test_fraction <= 1:
        raise ConfigError(f"hours must be finite and > 0, dev/test fractions in (0, 1]; got hours={settings.hours}, "
                          f"dev_fraction={settings.dev_fraction}, test_fraction={settings.test_fraction}")
    if len(settings.speakers) != len(_SPLITS) or len(settings.word_range) != 2:
        raise ConfigError(f"need one speaker count per split ({', '.join(_SPLITS)}) and (min, max) words per "
                          f"sentence; got speakers={settings.speakers}, word_range={settings.word_range}")
    if settings.vocabulary < 1:
        raise ConfigError(f"vocabulary must be >= 1 (the number of most frequent words sentences are drawn from); "
                          f"got {settings.vocabulary}")
    if min(settings.speakers) < 1 or not 1 <= settings.word_range[0] <= settings.word_range[1]:
        raise ConfigError(f"need >= 1 speaker per split and 1 <= min words <= max words; got "
                          f"speakers={settings.speakers}, word_range={settings.word_range}")
    return [synth_language(code) for code in languages]


def _settings_record(settings: SynthOptions) -> dict:
    """synth.json's settings: the options and the generator's version (a corpus of another is never reused)."""
    values = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(settings).items()}
    return {**values, "generator_version": GENERATOR_VERSION}


def _already_done(out: Path, language: SynthLanguage, settings: SynthOptions) -> dict | None:
    """The summary of an identical finished synthesis, None if there is none; refuses a different one."""
    summary_path = paths.synthetic_summary_path(out, language.code)
    if not summary_path.is_file():
        return None
    summary = read_json(summary_path)
    if summary.get("settings") != _settings_record(settings):
        raise ConfigError(f"{summary_path.parent} already holds a corpus synthesized with other settings "
                          f"({summary.get('settings')}); choose another --out or delete that directory")
    return summary


def synthesize_corpus(out: Path, languages: list[str], options: SynthOptions, *, workers: int | None = None,
                      track: Track = no_progress) -> dict:
    """Write a Common Voice-shaped synthetic corpus under `out`; returns a summary with the speed reached.

    The same options give identical TSVs and MP3 files whatever `workers` is. A language whose synth.json
    shows the same settings is skipped. With workers > 1 clips are rendered in spawned processes, so a
    script calling this needs the usual `if __name__ == "__main__":` guard."""
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    settings = replace(options, hours=float(options.hours), speakers=tuple(options.speakers),
                       word_range=tuple(options.word_range))
    out = Path(out)
    todo, summaries = [], {}
    for language in _validate(list(languages), settings):
        done = _already_done(out, language, settings)
        if done is None:
            todo.append(language)
        else:
            summaries[language.code] = {**done["splits"], "reused": True}
    streams = [stream for language in todo for stream in _language_streams(out, language, settings)]
    rendered = _render_streams(streams, workers, track)
    for language in todo:
        own = [s for s in streams if s.language == language.code]
        summaries[language.code] = {**_write_language(out, language, settings, own), "reused": False}
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    return {"out": str(out), "languages": summaries, "synthesized_seconds": rendered, "wall_seconds": wall,
            "audio_seconds_per_second": rendered / wall if wall > 0 else 0.0, "cpu_seconds": cpu,
            "audio_seconds_per_cpu_second": rendered / cpu if cpu > 0 else 0.0, "workers": _worker_count(workers)}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers (on a shared machine wall time understates speed)."""
    import resource

    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def _language_streams(out: Path, language: SynthLanguage, settings: SynthOptions) -> list[_Stream]:
    lexicon = build_lexicon(language, settings.vocabulary)
    speakers = make_speakers(language.code, settings.seed, settings.speaker_counts(), settings.noise)
    paths.synthetic_clips_dir(out, language.code).mkdir(parents=True, exist_ok=True)
    return [_Stream(language.code, split, settings.target_seconds(split),
                    plan_clips(out, language, split, speakers=speakers[split], lexicon=lexicon, seed=settings.seed,
                               word_range=settings.word_range))
            for split in _SPLITS]


def _worker_count(workers: int | None) -> int:
    return max(1, workers if workers is not None else (os.cpu_count() or 1))


def _render_streams(streams: list[_Stream], workers: int | None, track: Track) -> float:
    """Render clips in rounds until every stream reaches its target; returns the seconds rendered."""
    count = _worker_count(workers)
    pool = ProcessPoolExecutor(count, mp_context=get_context("spawn"),
                               initializer=end_with_parent) if count > 1 else None  # none outlives a kill -9
    try:
        round_number = 0
        while pending := [s for s in streams if not s.satisfied()]:
            round_number += 1
            tasks = [(stream, chunk) for stream in pending for chunk in _chunks(stream.plan_more())]
            _run_tasks(tasks, pool, track, f"synthesizing (round {round_number})")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return sum(stream.seconds() for stream in streams)


def _chunks(clips: list[Clip]) -> list[list[Clip]]:
    return [clips[start: start + _CHUNK_CLIPS] for start in range(0, len(clips), _CHUNK_CLIPS)]


def _run_tasks(tasks: list[tuple[_Stream, list[Clip]]], pool: ProcessPoolExecutor | None, track: Track,
               description: str) -> None:
    """Render every chunk (in worker processes if there is a pool) and append the clip lengths in order."""
    jobs = [[clip.job for clip in chunk] for _, chunk in tasks]
    results: dict[int, list[int]] = {}
    if pool is None:
        for index, chunk_jobs in enumerate(track(jobs, len(jobs), description)):
            results[index] = _render_chunk(chunk_jobs)
    else:
        futures = {pool.submit(_render_chunk, chunk_jobs): index for index, chunk_jobs in enumerate(jobs)}
        for future in track(as_completed(futures), len(futures), description):
            results[futures[future]] = future.result()
    for index, (stream, _) in enumerate(tasks):  # a stream's chunks are in order within `tasks`
        stream.lengths.extend(results[index])


def _write_language(out: Path, language: SynthLanguage, settings: SynthOptions, streams: list[_Stream]) -> dict:
    """Write the TSVs of one language, delete the clips beyond each target, then synth.json (last)."""
    kept = {}
    for stream in streams:
        kept[stream.split] = stream.kept()
        for clip in stream.clips[len(kept[stream.split]):]:
            Path(clip.job.path).unlink(missing_ok=True)
        write_text_atomic(paths.synthetic_tsv_path(out, language.code, stream.split),
                          _tsv(language, kept[stream.split]))
    write_text_atomic(paths.synthetic_tsv_path(out, language.code, "validated"),
                      _tsv(language, [clip for split in _SPLITS for clip in kept[split]]))
    lengths = {s.split: s.lengths[: len(kept[s.split])] for s in streams}
    splits = {split: {"utterances": len(kept[split]), "hours": sum(lengths[split]) / CLIP_SAMPLE_RATE / 3600,
                      "speakers": len({clip.speaker.client_id for clip in kept[split]})} for split in _SPLITS}
    write_json_atomic(paths.synthetic_summary_path(out, language.code), {
        "language": language.code, "source": "crossling synth (eSpeak NG + wordfreq)",
        "espeak_voice": language.espeak, "wordfreq_language": language.wordfreq,
        "settings": _settings_record(settings), "splits": splits, "versions": _versions()})
    return splits


def _tsv(language: SynthLanguage, clips: list[Clip]) -> str:
    rows = ["\t".join(TSV_COLUMNS)]
    for clip in clips:
        s = clip.speaker
        rows.append("\t".join((s.client_id, clip.name, clip.sentence, "2", "0", s.age, s.gender, "",
                               language.code, "")))
    return "\n".join(rows) + "\n"


def _versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("espeakng-loader", "wordfreq", "soundfile", "soxr")}
