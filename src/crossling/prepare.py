"""A corpus (Common Voice release, manifest folder, `datasets` dataset, lhotse manifests: `crossling.corpora`)
-> prepared languages: manifests of an exact N-hour train subset and dev/test, vocab.json and prepared.json
(written last) under the prepared root (see `crossling.paths`)."""

from __future__ import annotations

import fcntl
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from crossling import paths
from crossling.atomic import directory_kept_on_success, write_json_atomic
from crossling.audio import CORRUPT, EMPTY, ClipCache, ClipJob, decode_stream
from crossling.commonvoice import ClipRow, LanguageSource
from crossling.corpora import CorpusLanguage, CorpusOptions, open_corpus
from crossling.errors import ConfigError, DataError
from crossling.manifest import Utterance, total_hours, write_manifest
from crossling.progress import Track, no_progress
from crossling.records import PreparedSummary
from crossling.subset import eval_order, seeded_order, take_count, take_hours
from crossling.text import normalization_info, normalize
from crossling.vocab import DEFAULT_THRESHOLD, Vocab, apply_char_map, build_vocab, oov_rate, write_vocab_json

log = logging.getLogger(__name__)

MISSING, EMPTY_SENTENCE, DUPLICATE = "missing_clip", "empty_sentence", "duplicate_clip"
SKIP_REASONS = (MISSING, CORRUPT, EMPTY, EMPTY_SENTENCE, DUPLICATE)


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """How a language is prepared: everything that changes the prepared files (the one declaration of
    these options; `crossling prepare` flags and a study file's [data] table are built from it).

    `train_hours` exactly, drawn with `seed`, at most `max_hours_per_speaker` per speaker; dev/test whole,
    or `dev_max`/`test_max` utterances (the first K, or K drawn with `eval_seed`); the vocabulary keeps
    characters with relative train frequency >= `vocab_threshold`."""

    train_hours: float = 5.0
    seed: int = 0
    dev_max: int | None = None  # None: the full split
    test_max: int | None = None
    eval_seed: int | None = None
    max_hours_per_speaker: float | None = None
    vocab_threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Prepared:
    """One language prepared: its summary (as written to prepared.json) and how many clips were decoded
    now or found in the decode cache."""

    summary: PreparedSummary
    decoded: int
    reused: int

    def to_json(self) -> dict:
        return {**self.summary.to_json(), "cache": {"decoded": self.decoded, "reused": self.reused}}


@dataclass
class _Language:
    """One language being prepared: its source, decode cache, options, decoding processes, progress and
    the counts of what was skipped."""

    src: LanguageSource | CorpusLanguage
    cache: ClipCache
    options: PrepareOptions
    workers: int | None
    track: Track
    skipped: Counter = field(default_factory=lambda: Counter({reason: 0 for reason in SKIP_REASONS}))


@dataclass(frozen=True)
class _Candidate:
    """A TSV row that passed the text-level checks, with its normalized text and source cache key."""

    row: ClipRow
    text: str
    size: int
    mtime_ns: int


def prepare_release(source: Path, languages: list[str], out: Path, options: PrepareOptions | None = None, *,
                    corpus: CorpusOptions | None = None, workers: int | None = None,
                    track: Track = no_progress) -> list[Prepared]:
    """Prepare each of `languages` from the corpus at `source` (a Common Voice folder or tar, or another
    format `corpus` names or that is detected) into `out`, decoding with `workers` processes (default: one
    per CPU).

    Languages are done one after another; a failure leaves earlier languages, older preparations and the
    decode cache intact."""
    options = options or PrepareOptions()
    languages = _check_request(languages, options)
    out = Path(out)
    with directory_kept_on_success(out), ExitStack() as locks:
        for lang in languages:
            locks.enter_context(_preparing(out, lang))
        caches = {lang: ClipCache(out, lang) for lang in languages}

        def keep_clip(lang: str, clip: str, size: int, mtime_ns: int) -> bool:
            return caches[lang].lookup(clip, size, mtime_ns) is None

        staging = out / f".staging-{os.getpid()}"
        with open_corpus(Path(source), languages, staging, keep_clip, options=corpus) as release:
            return [prepare_language(_Language(release[lang], caches[lang], options, workers, track), out, str(source))
                    for lang in languages]


@contextmanager
def _preparing(out: Path, language: str) -> Iterator[None]:
    """Hold the advisory lock of `language` under `out` for the block, or fail at once: two `prepare`
    runs writing one language's cache and manifests would corrupt each other. The OS releases the lock
    when its process ends, however it ends; the lock file is removed (still locked) when the block ends,
    so nothing stays behind, and a process that locked a removed file tries again on the new one."""
    lock_path = paths.prepare_lock_path(out, language)
    for _ in range(3):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(lock_path, "a")
        except FileNotFoundError:  # another prepare removed the empty lock folder meanwhile
            continue
        with handle:
            if not _lock(handle, lock_path, out, language):
                continue  # locked a file another prepare removed meanwhile
            try:
                yield
            finally:
                lock_path.unlink(missing_ok=True)
                _remove_if_empty(lock_path.parent)
            return
    raise DataError(f"{out}: cannot lock {lock_path}: other `crossling prepare` runs keep replacing it")


def _lock(handle, lock_path: Path, out: Path, language: str) -> bool:
    """Lock the open lock file; False if the file at `lock_path` is no longer the one locked."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DataError(f"{out}: another `crossling prepare` is preparing {language!r} there right now "
                        f"(it holds {lock_path}); wait for it to finish or choose another --out") from None
    except OSError as error:  # a filesystem without flock (some network mounts): go on, unguarded
        log.warning("%s: cannot lock (%s); a concurrent prepare of %r would not be noticed",
                    lock_path, error, language)
    try:
        return os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # another language's lock is still there
        pass


def _check_request(languages: list[str], options: PrepareOptions) -> list[str]:
    if not languages:
        raise ConfigError("no languages given; pass --languages with one or more language codes")
    if options.train_hours <= 0:
        raise ConfigError(f"--train-hours must be > 0, got {options.train_hours}")
    if options.max_hours_per_speaker is not None and options.max_hours_per_speaker <= 0:
        raise ConfigError(f"--max-hours-per-speaker must be > 0, got {options.max_hours_per_speaker}")
    for name, value in (("--dev-max", options.dev_max), ("--test-max", options.test_max)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not 0 <= options.vocab_threshold < 1:
        raise ConfigError(f"--vocab-threshold must be in [0, 1), got {options.vocab_threshold}")
    return list(dict.fromkeys(languages))


def prepare_language(job: _Language, out: Path, source: str) -> Prepared:
    """Select, decode, build the vocabulary and write one prepared language."""
    try:
        train = _select_train(job)
        dev = _select_eval(job, "dev", job.options.dev_max)
        test = _select_eval(job, "test", job.options.test_max)
    finally:
        job.cache.save()  # decoded clips stay reusable even when this language fails
    vocab = build_vocab([u.text for u in train], job.options.vocab_threshold)
    splits = {split: _mapped(utts, vocab) for split, utts in (("train", train), ("dev", dev), ("test", test))}
    summary = _summary(job, source, splits, vocab)
    _write_language(out, job.src.language, splits, vocab, summary)
    log.info("%s: %.3f h train, %d dev, %d test utterances; %d chars", job.src.language,
             summary.train_hours, len(dev), len(test), len(vocab.chars))
    return Prepared(summary, decoded=job.cache.decoded, reused=job.cache.reused)


# --- choosing utterances -----------------------------------------------------------------------------


def _select_train(job: _Language) -> list[Utterance]:
    src, options = job.src, job.options
    ordered = seeded_order(_candidates(src, "train", job.skipped), options.seed, key=_clip_of)
    with closing(_utterances(job, ordered, "train")) as stream:
        chosen = take_hours(stream, options.train_hours, src.split_origin("train"), options.max_hours_per_speaker)
    return _by_id(chosen)


def _select_eval(job: _Language, split: str, max_items: int | None) -> list[Utterance]:
    ordered = eval_order(_candidates(job.src, split, job.skipped), job.options.eval_seed, key=_clip_of)
    with closing(_utterances(job, ordered, split)) as stream:
        chosen = take_count(stream, max_items)
    if not chosen:
        raise DataError(f"{job.src.split_origin(split)}: no usable {split} utterances (see the warnings above)")
    return _by_id(chosen)


def _candidates(src: LanguageSource | CorpusLanguage, split: str, skipped: Counter) -> list[_Candidate]:
    """Rows with a non-empty normalized sentence and an existing, not yet seen clip."""
    candidates, seen = [], set()
    for row in src.read_split(split):
        text = normalize(row.sentence, src.language)
        stat = src.clip_stat(row.clip)
        if not text:
            _skip(skipped, EMPTY_SENTENCE, row, f"sentence {row.sentence!r} is empty after normalization")
        elif row.clip in seen:
            _skip(skipped, DUPLICATE, row, f"clip {row.clip} already listed earlier in this file")
        elif stat is None:
            _skip(skipped, MISSING, row, f"clip {row.clip} not found ({src.clip_path(row.clip)})")
        else:
            seen.add(row.clip)
            candidates.append(_Candidate(row, text, *stat))
    return candidates


def _utterances(job: _Language, candidates: list[_Candidate], split: str) -> Iterator[Utterance]:
    """Decode candidates lazily (in order) and yield the usable ones as Utterances."""
    by_clip = {c.row.clip: c for c in candidates}
    shown = job.track(candidates, len(candidates), f"{job.src.language} {split}")
    jobs = (ClipJob(c.row.clip, job.src.clip_path(c.row.clip), c.size, c.mtime_ns) for c in shown)
    with closing(decode_stream(jobs, job.cache, job.workers)) as decoded:
        for outcome in decoded:
            candidate = by_clip[outcome.clip]
            if outcome.error:
                _skip(job.skipped, outcome.error, candidate.row, f"clip {outcome.clip}: {outcome.detail}")
                continue
            yield _utterance(candidate, outcome.num_samples, job.cache)


def _utterance(candidate: _Candidate, num_samples: int, cache: ClipCache) -> Utterance:
    row = candidate.row
    return Utterance(
        id=Path(row.clip).stem, audio=cache.wav_path(row.clip).relative_to(cache.root).as_posix(),
        num_samples=num_samples, text=candidate.text, sentence=row.sentence,
        speaker=row.speaker, gender=row.gender, age=row.age, accent=row.accent,
    )


def _skip(skipped: Counter, reason: str, row: ClipRow, detail: str) -> None:
    skipped[reason] += 1
    log.warning("%s: skipped (%s): %s", row.where, reason, detail)


def _clip_of(candidate: _Candidate) -> str:
    return candidate.row.clip


def _by_id(utterances: list[Utterance]) -> list[Utterance]:
    return sorted(utterances, key=lambda u: u.id)


# --- writing -------------------------------------------------------------------------------------------


def _mapped(utterances: list[Utterance], vocab: Vocab) -> list[Utterance]:
    """Utterances whose text uses the vocabulary's stand-ins for colliding characters."""
    return [replace(u, text=apply_char_map(u.text, vocab.char_map)) for u in utterances]


def _summary(job: _Language, source: str, splits: dict[str, list[Utterance]], vocab: Vocab) -> PreparedSummary:
    train, options = splits["train"], job.options
    return PreparedSummary(
        language=job.src.language, source=source, seed=options.seed,
        train_hours=round(total_hours(train), 6), requested_train_hours=options.train_hours,
        train_utterances=len(train), dev_utterances=len(splits["dev"]), test_utterances=len(splits["test"]),
        train_speakers=len({u.speaker for u in train}), max_hours_per_speaker=options.max_hours_per_speaker,
        dev_max=options.dev_max, test_max=options.test_max, eval_seed=options.eval_seed,
        vocab=list(vocab.chars), vocab_threshold=vocab.threshold, char_map=dict(vocab.char_map),
        oov_rate={split: oov_rate([u.text for u in splits[split]], vocab) for split in ("dev", "test")},
        skipped=dict(job.skipped), normalization=normalization_info(job.src.language), format=job.src.format,
    )


def _write_language(out: Path, language: str, splits: dict[str, list[Utterance]], vocab: Vocab,
                    summary: PreparedSummary) -> None:
    """Write the artifacts atomically, prepared.json last; the old marker goes first so a crash in
    between never leaves a prepared.json describing files from two different preparations."""
    paths.prepared_summary_path(out, language).unlink(missing_ok=True)
    for split, utterances in splits.items():
        write_manifest(paths.manifest_path(out, language, split), utterances)
    write_vocab_json(paths.vocab_path(out, language), vocab)
    write_json_atomic(paths.prepared_summary_path(out, language), summary.to_json())
