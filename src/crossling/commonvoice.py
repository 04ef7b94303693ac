"""Read a Common Voice release (directory or .tar.gz, version >= 7.0) -> per-language `ClipRow`s and clips.

Accepts a root holding `<lang>/` folders, a `cv-corpus-<ver>-<date>/` folder, or a tar of either."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from crossling.errors import DataError

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_MARKER_FILES = {*SPLIT_FILES.values(), "validated.tsv"}
REQUIRED_COLUMNS = ("path", "sentence")
# Column names differ between releases: CV 7.0 has `accent`, later ones `accents` (and more columns).
_METADATA_COLUMNS = {"speaker": ("client_id",), "gender": ("gender",), "age": ("age",),
                     "accent": ("accents", "accent")}
# CV 17+ spells gender as e.g. `male_masculine`; scores are split by the plain words.
_GENDERS = {"male_masculine": "male", "female_feminine": "female"}

#: keep_clip(language, clip name, size, mtime_ns) -> False when a tar member need not be extracted.
KeepClip = Callable[[str, str, int, int], bool]


@dataclass(frozen=True)
class ClipRow:
    """One TSV row: where it came from (for messages), the clip file name and the metadata."""

    tsv: str
    line: int
    clip: str
    sentence: str
    speaker: str = ""
    gender: str = ""
    age: str = ""
    accent: str = ""

    @property
    def where(self) -> str:
        return f"{self.tsv}:{self.line}"


@dataclass(frozen=True)
class LanguageSource:
    """One language of a release, on disk (tars are extracted into a staging folder first).

    `member_stats` holds (size, mtime_ns) from tar headers, so a cached clip need not be extracted."""

    language: str
    directory: Path
    origin: str
    member_stats: dict[str, tuple[int, int]] | None = None
    format: str = "cv"

    @property
    def clips_dir(self) -> Path:
        return self.directory / "clips"

    def clip_path(self, clip: str) -> Path:
        return self.clips_dir / clip

    def clip_stat(self, clip: str) -> tuple[int, int] | None:
        """(size, mtime_ns) of a clip, None when the release lacks it."""
        if self.member_stats is not None:
            return self.member_stats.get(clip)
        try:
            stat = self.clip_path(clip).stat()
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    def read_split(self, split: str) -> list[ClipRow]:
        return read_tsv(self.directory / SPLIT_FILES[split], display=self.split_origin(split))

    def split_origin(self, split: str) -> str:
        """Where a split's rows come from, for messages."""
        return f"{self.origin}/{SPLIT_FILES[split]}"


# --- TSV files -------------------------------------------------------------------------------------


def read_tsv(path: Path, display: str | None = None) -> list[ClipRow]:
    """Read one Common Voice TSV without quote processing; columns are found by header name.

    A missing file, a header without `path`/`sentence`, a row with the wrong number of columns, or a
    `path` leaving the clips folder is a DataError naming the file and line."""
    display = display or str(path)
    if not path.is_file():
        raise DataError(f"{display}: TSV file not found")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = next(reader, None)
            columns = _columns(display, header)
            return [_row(display, reader.line_num, fields, header, columns) for fields in reader if fields]
        except UnicodeDecodeError as error:
            raise DataError(f"{display}: not UTF-8 text ({error.reason}: "
                            f"{error.object[error.start:error.end]!r}); Common Voice TSVs are UTF-8") from None
        except csv.Error as error:
            raise DataError(f"{display}:{reader.line_num}: unreadable TSV row ({error})") from None


def _columns(display: str, header: list[str] | None) -> dict[str, int]:
    """{our field: column index}; required columns must exist, metadata columns may not."""
    if not header:
        raise DataError(f"{display}:1: empty file; expected a header with columns {', '.join(REQUIRED_COLUMNS)}")
    names = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise DataError(f"{display}:1: header lacks column(s) {', '.join(missing)}; found {', '.join(names)}")
    columns = {name: names.index(name) for name in REQUIRED_COLUMNS}
    for field, candidates in _METADATA_COLUMNS.items():
        found = [names.index(c) for c in candidates if c in names]
        if found:
            columns[field] = found[0]
    return columns


def _row(display: str, line: int, fields: list[str], header: list[str], columns: dict[str, int]) -> ClipRow:
    if len(fields) != len(header):
        raise DataError(f"{display}:{line}: expected {len(header)} tab-separated columns "
                        f"({', '.join(header)}), found {len(fields)}")
    values = {field: fields[index].strip() for field, index in columns.items()}
    gender = values.get("gender", "").lower()
    return ClipRow(
        tsv=display, line=line, clip=_safe_clip_name(display, line, values["path"]), sentence=values["sentence"],
        speaker=values.get("speaker", ""), gender=_GENDERS.get(gender, gender),
        age=values.get("age", ""), accent=values.get("accent", ""),
    )


def _safe_clip_name(display: str, line: int, path: str) -> str:
    """A clip must be a plain file name inside clips/ (why: a crafted TSV must not read other files)."""
    if not path:
        raise DataError(f"{display}:{line}: empty `path`; expected a clip file name inside clips/")
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute() or len(pure.parts) != 1 or pure.name in (".", "..") or ":" in path:
        raise DataError(f"{display}:{line}: clip path {path!r} leaves the clips folder; "
                        "expected a plain file name such as common_voice_xx_123.mp3")
    return pure.name


# --- releases: directories -------------------------------------------------------------------------


def languages_in(root: Path) -> list[str]:
    """Language folders directly under `root` (those holding a split TSV or clips/)."""
    if not root.is_dir():
        return []
    return sorted(child.name for child in root.iterdir() if child.is_dir() and _is_language_dir(child))


def _is_language_dir(path: Path) -> bool:
    return (path / "clips").is_dir() or any((path / name).is_file() for name in _MARKER_FILES)


def find_release_root(source: Path) -> Path:
    """The folder holding `<lang>/` folders: `source` itself or its single `cv-corpus-*` child."""
    if languages_in(source):
        return source
    children = [c for c in source.iterdir() if c.is_dir() and languages_in(c)]
    corpus = [c for c in children if c.name.startswith("cv-corpus")]
    if len(corpus) == 1 or len(children) == 1:
        return (corpus or children)[0]
    raise DataError(f"{source}: no Common Voice language folders found (expected <lang>/train.tsv, "
                    "<lang>/clips/ directly inside, or inside one cv-corpus-<version>-<date>/ folder)")


def check_languages(requested: list[str], present: list[str], origin: str) -> None:
    unknown = [lang for lang in requested if lang not in present]
    if unknown:
        raise DataError(f"{origin}: language(s) {', '.join(unknown)} not in this release; "
                        f"present: {', '.join(present) or 'none'}")


@contextmanager
def open_release(source: Path, languages: list[str], staging: Path,
                 keep_clip: KeepClip | None = None) -> Iterator[dict[str, LanguageSource]]:
    """{language: LanguageSource} for a release directory or tar; tar members are extracted into
    `staging` (removed afterwards), skipping clips for which `keep_clip` says False."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: release not found (expected a Common Voice folder or .tar.gz)")
    if source.is_dir():
        root = find_release_root(source)
        check_languages(languages, languages_in(root), str(source))
        yield {lang: LanguageSource(lang, root / lang, origin=str(root / lang)) for lang in languages}
        return
    try:
        yield _extract_tar(source, languages, staging, keep_clip or (lambda *_: True))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- releases: tar archives ------------------------------------------------------------------------


def _extract_tar(source: Path, languages: list[str], staging: Path,
                 keep_clip: KeepClip) -> dict[str, LanguageSource]:
    """One pass over the archive: extract the wanted languages' TSVs and (uncached) clips."""
    stats: dict[str, dict[str, tuple[int, int]]] = {lang: {} for lang in languages}
    present: set[str] = set()
    prefixes: set[tuple[str, ...]] = set()
    try:
        with tarfile.open(source, mode="r:*") as archive:
            for member in archive:
                located = _locate_member(source, member)
                if located is None:
                    continue
                prefix, lang, rest = located
                present.add(lang)
                prefixes.add(prefix)
                if lang in stats and member.isfile():
                    _extract_member(archive, member, lang, rest, staging=staging, stats=stats[lang], keep_clip=keep_clip)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"{source}: cannot read archive ({error})") from None
    if len(prefixes) > 1:
        raise DataError(f"{source}: language folders under several top folders {sorted(prefixes)}")
    check_languages(languages, sorted(present), str(source))
    return {lang: LanguageSource(lang, staging / lang, origin=f"{source}!{'/'.join((*next(iter(prefixes)), lang))}",
                                 member_stats=stats[lang]) for lang in languages}


def _locate_member(source: Path, member: tarfile.TarInfo) -> tuple[tuple[str, ...], str, str] | None:
    """(top folders, language, path inside the language folder) of a member, None if not CV data.

    Members that would escape the extraction folder are rejected outright."""
    pure = PurePosixPath(member.name)
    if pure.is_absolute() or ".." in pure.parts:
        raise DataError(f"{source}: archive member {member.name!r} escapes the extraction folder; refusing")
    parts = [p for p in pure.parts if p != "."]
    for i in range(len(parts) - 1):
        inside = parts[i + 1:]
        if (len(inside) == 1 and inside[0] in _MARKER_FILES) or (len(inside) == 2 and inside[0] == "clips"):
            return tuple(parts[:i]), parts[i], "/".join(inside)
    return None


def _extract_member(archive: tarfile.TarFile, member: tarfile.TarInfo, lang: str, rest: str, *, staging: Path,
                    stats: dict[str, tuple[int, int]], keep_clip: KeepClip) -> None:
    mtime_ns = int(member.mtime) * 1_000_000_000
    if rest.startswith("clips/"):
        clip = rest.removeprefix("clips/")
        stats[clip] = (member.size, mtime_ns)
        if not keep_clip(lang, clip, member.size, mtime_ns):
            return
    elif rest not in _MARKER_FILES:
        return
    target = staging / lang / rest
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.extractfile(member) as data, open(target, "wb") as out:
        shutil.copyfileobj(data, out)
    os.utime(target, ns=(mtime_ns, mtime_ns))
