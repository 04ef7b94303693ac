"""Corpora besides Common Voice -> per-language sources that `crossling.prepare` reads like a release: split
rows (`ClipRow`) and clips with their cache keys. Formats: manifest folders (`<lang>/manifest.tsv|csv|jsonl`),
Hugging Face `datasets` saved with `save_to_disk`, lhotse recording + supervision manifests; detected when
not named. Where a corpus has no splits, dev and test speakers are drawn with a seed, disjoint from train."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from crossling.commonvoice import ClipRow, KeepClip, open_release
from crossling.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("cv", "manifest", "hf", "lhotse")
SPLITS = ("train", "dev", "test")
MANIFEST_NAMES = ("manifest.tsv", "manifest.csv", "manifest.jsonl")
# Split names other toolkits use for dev; a corpus's own split names are mapped onto crossling's.
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "test": "test"}
# ISO 639 (2-3 letters) or BCP-47 (subtags of 2-8 letters/digits): it names a folder, so nothing else passes.
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True, kw_only=True)
class CorpusOptions:
    """How to read a corpus (the one declaration of these options; `crossling prepare` flags and a study
    file's [data] table are built from it): its `format` (None = detected), the column names of a
    `datasets` dataset, and the fraction of speakers held out for each of dev and test (drawn with
    `split_seed`) when the corpus has no splits."""

    format: str | None = None
    audio_column: str = "audio"
    text_column: str = "text"
    speaker_column: str = "speaker"
    gender_column: str = "gender"
    held_out_speakers: float = 0.1
    split_seed: int = 0  # of the drawn dev/test speakers; apart from the train subset's seed, so that
    # preparing another subset never moves speakers between train and test

    def __post_init__(self) -> None:
        if self.format is not None:
            check_format(self.format)
        if not 0 < self.held_out_speakers < 0.5:
            raise ConfigError(f"held_out_speakers (--held-out-speakers) must be in (0, 0.5), "
                              f"got {self.held_out_speakers}")


@dataclass(frozen=True)
class ClipSource:
    """Where one clip's audio is: a file read in place (`write` None), or one that `write(path)` puts into
    the staging folder when it must be decoded. `stat` is the decode cache's key (size, mtime or a content
    hash), None when the audio is missing."""

    path: Path
    stat: tuple[int, int] | None
    write: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class CorpusLanguage:
    """One language of a corpus, with the interface `crossling.prepare` reads (as `commonvoice.LanguageSource`)."""

    language: str
    origin: str
    format: str
    splits: dict[str, tuple[ClipRow, ...]] = field(compare=False)
    clips: dict[str, ClipSource] = field(compare=False)
    split_origins: dict[str, str] = field(compare=False)
    keep_clip: KeepClip | None = field(default=None, compare=False)

    def read_split(self, split: str) -> list[ClipRow]:
        return list(self.splits[split])

    def split_origin(self, split: str) -> str:
        return self.split_origins[split]

    def clip_stat(self, clip: str) -> tuple[int, int] | None:
        return self.clips[clip].stat

    def clip_path(self, clip: str) -> Path:
        """The clip's file; staged audio is written here first unless the decode cache already has it."""
        source = self.clips[clip]
        if source.write is None or source.path.exists() or source.stat is None:
            return source.path
        if self.keep_clip is None or self.keep_clip(self.language, clip, *source.stat):
            source.path.parent.mkdir(parents=True, exist_ok=True)
            source.write(source.path)
        return source.path


@dataclass(frozen=True)
class _Row:
    """One utterance as a format reader finds it, before splits are settled."""

    where: tuple[str, int]
    clip: str
    sentence: str
    audio: ClipSource
    speaker: str = ""
    gender: str = ""
    split: str = ""

    def clip_row(self) -> ClipRow:
        return ClipRow(tsv=self.where[0], line=self.where[1], clip=self.clip, sentence=self.sentence,
                       speaker=self.speaker, gender=self.gender)


# --- opening a corpus ------------------------------------------------------------------------------


@contextmanager
def open_corpus(source: Path, languages: list[str], staging: Path, keep_clip: KeepClip | None = None,
                options: CorpusOptions | None = None) -> Iterator[dict]:
    """{language: source} for a corpus of any format (Common Voice through `commonvoice.open_release`);
    staged audio lives in `staging`, removed afterwards."""
    options = options or CorpusOptions()
    source = Path(source)
    corpus_format = options.format or detect_format(source, languages)
    check_format(corpus_format)
    if corpus_format == "cv":
        with open_release(source, languages, staging, keep_clip) as release:
            yield release
        return
    for language in languages:
        check_language_code(language)
    try:
        single = len(languages) == 1
        yield {lang: _open_language(source, lang, corpus_format, staging=staging / lang, keep_clip=keep_clip,
                                    options=options, single=single)
               for lang in languages}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_format(corpus_format: str) -> None:
    if corpus_format not in FORMATS:
        raise ConfigError(f"format (--format) {corpus_format!r} is not a corpus format; "
                          f"choose one of {', '.join(FORMATS)}")


def check_language_code(code: str) -> None:
    """An ISO 639 / BCP-47 code (it names the language's folder, so nothing that could leave it)."""
    if not _LANGUAGE_CODE.match(code):
        raise ConfigError(f"language {code!r} is not an ISO 639 or BCP-47 code (e.g. sw, yue, pt-BR, sr-Latn)")


def detect_format(source: Path, languages: list[str]) -> str:
    """The format of `source` from what its language folders hold; Common Voice when none of the others."""
    if not source.is_dir():
        return "cv"  # a .tar.gz release, or a missing path (open_release says which)
    found = {_format_of(_language_folder(source, lang, single=len(languages) == 1)) for lang in languages} - {None}
    if len(found) > 1:
        raise DataError(f"{source}: language folders of several formats ({', '.join(sorted(found))}); "
                        "prepare them separately or pass --format")
    return found.pop() if found else "cv"


def _format_of(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    markers = {
        "manifest": any((folder / name).is_file() for name in MANIFEST_NAMES),
        "hf": (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file(),
        "lhotse": any(folder.glob("*recordings*.jsonl*")),
    }
    present = [name for name, found in markers.items() if found]
    if len(present) > 1:
        raise DataError(f"{folder}: looks like {' and '.join(present)} at once; pass --format")
    return present[0] if present else None


def _language_folder(source: Path, language: str, single: bool) -> Path:
    """`source/<language>`, or `source` itself when it is a corpus of one language (one language asked)."""
    folder = source / language
    if not folder.is_dir() and single and _format_of(source) in ("manifest", "hf", "lhotse"):
        return source
    return folder


def _open_language(source: Path, language: str, corpus_format: str, *, staging: Path, keep_clip: KeepClip | None,
                   options: CorpusOptions, single: bool) -> CorpusLanguage:
    folder = _language_folder(source, language, single)
    if not folder.is_dir():
        present = sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
        raise DataError(f"{source}: no folder for language {language!r} (expected {source / language}/); "
                        f"present: {', '.join(present) or 'none'}")
    reader = {"manifest": read_manifest_folder, "hf": read_hf_dataset, "lhotse": read_lhotse_manifests}[corpus_format]
    rows, origins = reader(folder, staging, options)
    splits = settle_splits(rows, options.held_out_speakers, options.split_seed, str(folder))
    clips = _unique_clips(rows)
    log.info("%s (%s): %s", folder, corpus_format, ", ".join(f"{s} {len(splits[s])} rows" for s in SPLITS))
    return CorpusLanguage(language=language, origin=str(folder), format=corpus_format, splits=splits, clips=clips,
                          split_origins=origins, keep_clip=keep_clip)


def _unique_clips(rows: list[_Row]) -> dict[str, ClipSource]:
    clips: dict[str, ClipSource] = {}
    for row in rows:
        clips.setdefault(row.clip, row.audio)  # a clip listed twice is skipped as a duplicate by prepare
    return clips


# --- splits ------------------------------------------------------------------------------------------


def settle_splits(rows: list[_Row], held_out: float, seed: int, where: str) -> dict[str, tuple[ClipRow, ...]]:
    """Rows by split: as the corpus says, or (no split anywhere) dev and test speakers drawn with `seed`,
    each `held_out` of the speakers (at least one), disjoint from train and from each other."""
    given = {row.split for row in rows}
    if given == {""}:
        assignment = _draw_speakers(rows, held_out, seed, where)
        rows = [_with_split(row, assignment[_speaker_key(row)]) for row in rows]
    elif "" in given:
        first = next(row for row in rows if not row.split)
        raise DataError(f"{first.where[0]}:{first.where[1]}: no split, although other rows have one; "
                        "give every row a split (train, dev, test) or none")
    return {split: tuple(row.clip_row() for row in rows if row.split == split) for split in SPLITS}


def _draw_speakers(rows: list[_Row], held_out: float, seed: int, where: str) -> dict[str, str]:
    speakers = sorted({_speaker_key(row) for row in rows})
    if len(speakers) < 3:
        raise DataError(f"{where}: {len(speakers)} speaker(s) cannot be split into disjoint train, dev and test "
                        "speakers; add a split column (train, dev, test)")
    if all(key.startswith("utterance:") for key in speakers):
        log.warning("%s: no speaker column: dev and test are drawn by utterance, so speakers may overlap", where)
    random.Random(seed).shuffle(speakers)
    count = max(1, round(held_out * len(speakers)))
    assignment = dict.fromkeys(speakers, "train")
    assignment.update(dict.fromkeys(speakers[:count], "dev"))
    assignment.update(dict.fromkeys(speakers[count: 2 * count], "test"))
    return assignment


def _speaker_key(row: _Row) -> str:
    return f"speaker:{row.speaker}" if row.speaker else f"utterance:{row.clip}"


def _with_split(row: _Row, split: str) -> _Row:
    return replace(row, split=split)


def _split_name(value: str, where: str) -> str:
    split = _SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise DataError(f"{where}: split {value!r} is not one of train, dev, test (or validation/valid for dev)")
    return split


# --- manifest folders --------------------------------------------------------------------------------


def read_manifest_folder(folder: Path, staging: Path, options: CorpusOptions) -> tuple[list[_Row], dict]:
    """`<folder>/manifest.tsv|csv|jsonl`: columns path (relative to the folder) and text, optional speaker,
    gender, split."""
    present = [folder / name for name in MANIFEST_NAMES if (folder / name).is_file()]
    if len(present) != 1:
        found = ", ".join(p.name for p in present) or "none"
        raise DataError(f"{folder}: expected exactly one of {', '.join(MANIFEST_NAMES)}; found {found}")
    manifest = present[0]
    records = _jsonl_records(manifest) if manifest.suffix == ".jsonl" else _table_records(manifest)
    rows = [_manifest_row(manifest, line, record, folder) for line, record in records]
    return rows, dict.fromkeys(SPLITS, str(manifest))


def _table_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, {column: value}) of a TSV (no quoting: sentences keep their quotes) or CSV (RFC 4180)."""
    tsv = path.suffix == ".tsv"
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader, [])]
            _require_columns(path, header)
            for fields in reader:
                if not fields or fields == [""]:
                    continue
                if len(fields) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: expected {len(header)} columns "
                                    f"({', '.join(header)}), found {len(fields)}")
                yield reader.line_num, dict(zip(header, fields, strict=True))
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason})") from None
        except csv.Error as error:
            raise DataError(f"{path}:{reader.line_num}: unreadable row ({error})") from None


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object with path and text, found {type(record).__name__}")
        _require_columns(path, list(record), number)
        yield number, {key: "" if value is None else str(value) for key, value in record.items()}


def _require_columns(path: Path, names: list[str], line: int = 1) -> None:
    missing = [name for name in ("path", "text") if name not in names]
    if missing:
        raise DataError(f"{path}:{line}: lacks column(s) {', '.join(missing)}; found {', '.join(names) or 'none'} "
                        "(expected path and text, optional speaker, gender, split)")


def _manifest_row(manifest: Path, line: int, record: dict, folder: Path) -> _Row:
    where = f"{manifest}:{line}"
    relative = _inside(folder, record["path"].strip(), where)
    audio = folder / relative
    split = record.get("split", "").strip()
    return _Row(
        where=(str(manifest), line), clip=flat_clip_name(relative), sentence=record["text"].strip(),
        audio=ClipSource(audio, _file_stat(audio)), speaker=record.get("speaker", "").strip(),
        gender=record.get("gender", "").strip().lower(), split=_split_name(split, where) if split else "",
    )


def _inside(folder: Path, path: str, where: str) -> str:
    """`path` as a relative POSIX path that stays inside `folder` (symbolic links followed), else DataError."""
    if not path:
        raise DataError(f"{where}: empty path; expected an audio file relative to {folder}")
    pure = PurePosixPath(path.replace("\\", "/"))
    resolved = (folder / pure).resolve()
    if pure.is_absolute() or ":" in pure.parts[0] or not resolved.is_relative_to(folder.resolve()):
        raise DataError(f"{where}: audio path {path!r} leaves the language folder {folder}; "
                        "paths must be relative to it (e.g. clips/0001.flac)")
    return pure.as_posix()


def flat_clip_name(relative: str) -> str:
    """A relative path as one file name for the decode cache ('a/b/c.flac' -> 'a__b__c.flac'): clips in
    different folders may share a file name."""
    return relative.replace("/", "__")


def _file_stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns) if path.is_file() else None


def _content_key(data: bytes) -> int:
    """Stands in for an mtime in the decode cache's key where audio has no file of its own."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=7).digest(), "big")


# --- Hugging Face datasets ---------------------------------------------------------------------------


def read_hf_dataset(folder: Path, staging: Path, options: CorpusOptions) -> tuple[list[_Row], dict]:
    """A `datasets` Dataset or DatasetDict saved with `save_to_disk`; audio and text columns named by the
    options. Audio is read undecoded (embedded bytes or a path) and decoded by crossling like any clip."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("reading a Hugging Face dataset needs the `datasets` package: "
                          "pip install 'crossling[corpora]'") from None
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (OSError, ValueError, FileNotFoundError) as error:
        raise DataError(f"{folder}: not a dataset saved with save_to_disk ({error})") from None
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}
    rows, origins = [], {}
    for name, dataset in parts.items():
        split = _split_name(name, f"{folder} (split {name!r})") if name else ""
        where = f"{folder}[{name}]" if name else str(folder)
        rows += _hf_rows(_undecoded(dataset, options, where), split, where, staging, options)
        for target in ([split] if split else SPLITS):
            origins[target] = where
    return rows, origins


def _undecoded(dataset, options: CorpusOptions, where: str):
    from datasets import Audio

    columns = list(dataset.column_names)
    for role, name in (("audio", options.audio_column), ("text", options.text_column)):
        if name not in columns:
            raise DataError(f"{where}: no {role} column {name!r} (--{role}-column); columns: {', '.join(columns)}")
    if isinstance(dataset.features[options.audio_column], Audio):
        dataset = dataset.cast_column(options.audio_column, Audio(decode=False))
    return dataset


def _hf_rows(dataset, split: str, where: str, staging: Path, options: CorpusOptions) -> list[_Row]:
    rows = []
    for index, record in enumerate(dataset):
        given = str(record.get("split") or "") if not split else ""
        row_where, clip = f"{where} row {index}", f"{split or 'all'}-{index:07d}"
        rows.append(_Row(
            where=(where, index), clip=clip, sentence=str(record[options.text_column] or "").strip(),
            audio=_hf_audio(record[options.audio_column], reread=lambda i=index: dataset[i][options.audio_column],
                            target=staging / "clips" / clip, where=row_where),
            speaker=str(record.get(options.speaker_column) or "").strip(),
            gender=str(record.get(options.gender_column) or "").strip().lower(),
            split=split or (_split_name(given, row_where) if given else ""),
        ))
    return rows


def _hf_audio(value, *, reread: Callable[[], dict], target: Path, where: str) -> ClipSource:
    """Embedded bytes are staged on demand (keyed by their content hash; `reread` gives the row's audio value
    again when it is written, so that the bytes of every row need not sit in memory); a path is read in place."""
    if isinstance(value, dict) and value.get("bytes"):
        data = value["bytes"]
        suffix = Path(value.get("path") or "").suffix or ".audio"
        return ClipSource(target.with_name(f"{target.name}{suffix}"), (len(data), _content_key(data)),
                          write=lambda path: path.write_bytes(reread()["bytes"]))
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str) or not path:
        raise DataError(f"{where}: audio column holds neither bytes nor a file path ({type(value).__name__})")
    return ClipSource(Path(path), _file_stat(Path(path)))


# --- lhotse manifests ----------------------------------------------------------------------------------


def read_lhotse_manifests(folder: Path, staging: Path, options: CorpusOptions) -> tuple[list[_Row], dict]:
    """lhotse RecordingSet + SupervisionSet manifests: one pair per split (`*_recordings_<split>.jsonl[.gz]`,
    as lhotse recipes write them) or one pair in all. Each supervision segment is one utterance."""
    try:
        import lhotse  # noqa: F401
    except ImportError:
        raise ConfigError("reading lhotse manifests needs the `lhotse` package: "
                          "pip install 'crossling[corpora]'") from None
    rows, origins = [], {}
    for split, recordings, supervisions in _lhotse_pairs(folder):
        rows += _lhotse_rows(recordings, supervisions, split, staging)
        for target in ([split] if split else SPLITS):
            origins[target] = str(supervisions)
    return rows, origins


def _lhotse_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    recordings = sorted(folder.glob("*recordings*.jsonl*"))
    pairs = []
    for path in recordings:
        stem = path.name.split(".jsonl")[0]
        prefix, _, split = stem.rpartition("recordings")
        split = split.lstrip("_")
        supervisions = sorted(folder.glob(f"{prefix}supervisions{'_' + split if split else ''}.jsonl*"))
        if len(supervisions) != 1:
            raise DataError(f"{path}: expected one matching supervisions manifest "
                            f"({prefix}supervisions{'_' + split if split else ''}.jsonl[.gz]) in {folder}")
        pairs.append((_split_name(split, str(path)) if split else "", path, supervisions[0]))
    if not pairs:
        raise DataError(f"{folder}: no lhotse recordings manifest (*recordings*.jsonl[.gz])")
    if len(pairs) > 1 and any(not split for split, _, _ in pairs):
        raise DataError(f"{folder}: mixes split-named and unsplit lhotse manifests; keep one kind")
    return pairs


def _lhotse_rows(recordings_path: Path, supervisions_path: Path, split: str, staging: Path) -> list[_Row]:
    from lhotse import RecordingSet, SupervisionSet, load_manifest

    recordings = _load(load_manifest, recordings_path, RecordingSet)
    supervisions = _load(load_manifest, supervisions_path, SupervisionSet)
    rows = []
    for line, supervision in enumerate(supervisions, start=1):
        where = f"{supervisions_path}:{line}"
        if supervision.recording_id not in recordings:
            raise DataError(f"{where}: supervision {supervision.id!r} names recording {supervision.recording_id!r}, "
                            f"which {recordings_path} does not hold")
        recording = recordings[supervision.recording_id]
        clip = f"{_safe_name(supervision.id)}.wav"
        rows.append(_Row(
            where=(str(supervisions_path), line), clip=clip, sentence=(supervision.text or "").strip(),
            audio=_segment_source(recording, supervision, staging / "clips" / clip, where),
            speaker=supervision.speaker or "", gender=(supervision.gender or "").lower(), split=split,
        ))
    return rows


def _load(load_manifest, path: Path, expected: type):
    try:
        manifest = load_manifest(path)
    except Exception as error:  # noqa: BLE001 - lhotse raises many types for malformed manifests
        raise DataError(f"{path}: not a readable lhotse manifest ({type(error).__name__}: {error})") from None
    if not isinstance(manifest, expected):
        raise DataError(f"{path}: a {type(manifest).__name__}, expected a {expected.__name__}")
    return manifest


def _segment_source(recording, supervision, target: Path, where: str) -> ClipSource:
    """A supervision's segment of its recording, staged as a WAV when decoded. The key covers the audio
    files' size and mtime and the segment's offset, duration and channel, so editing any of them re-decodes."""
    files = []
    for source in recording.sources:
        if source.type != "file":
            raise DataError(f"{where}: recording {recording.id!r} has a {source.type!r} source; crossling reads "
                            "lhotse recordings from local files")
        files.append(Path(source.source))
    stats = [_file_stat(path) for path in files]
    if any(stat is None for stat in stats):
        return ClipSource(target, None)
    identity = json.dumps([stats, supervision.start, supervision.duration, supervision.channel])
    key = (sum(size for size, _ in stats), _content_key(identity.encode()))

    def write(path: Path) -> None:
        import soundfile

        samples = recording.load_audio(channels=supervision.channel, offset=supervision.start,
                                       duration=supervision.duration)
        soundfile.write(path, samples.T, recording.sampling_rate, subtype="FLOAT", format="WAV")

    return ClipSource(target, key, write)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
