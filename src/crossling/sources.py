"""A study's data source: the [data] table of a study file (languages already prepared, a Common Voice
release, a corpus of any format `corpora` reads, or a synthetic corpus, with the options
`prepare.PrepareOptions`, `corpora.CorpusOptions` and `synth.SynthOptions` declare) -> the prepared root
holding every study language, prepared once under a store claim."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.config import check_keys, from_mapping
from crossling.corpora import CorpusOptions
from crossling.errors import ConfigError, DataError
from crossling.prepare import PrepareOptions, prepare_release
from crossling.prepared import is_prepared
from crossling.progress import Track, no_progress
from crossling.records import identity_hash
from crossling.store import Store
from crossling.synth import SynthOptions, synthesize_corpus

log = logging.getLogger(__name__)

DATA_SOURCES = ("prepared", "common-voice", "corpus", "synthetic")
#: A synthetic source's own defaults (a small corpus), where the options' defaults suit a real release.
SYNTHETIC_DEFAULTS = {"hours": 0.1, "train_hours": 0.08}
#: Options a source accepted only after run ids were first defined: part of the data identity only when
#: set away from their defaults, so that the run ids of existing studies stay what they were.
LATER_OPTIONS = {"synthetic": ("word_range", "vocabulary", "eval_seed", "max_hours_per_speaker")}


@dataclass(frozen=True)
class PreparedData:
    """Languages already prepared by `crossling prepare` into `path`."""

    path: str


@dataclass(frozen=True, kw_only=True)
class CommonVoiceData:
    """A local Common Voice release (directory or .tar.gz), prepared by the grid before the runs into
    `out` ('' = a folder of the store named after the data identity)."""

    release: str
    prepare: PrepareOptions
    out: str = ""


@dataclass(frozen=True, kw_only=True)
class CorpusData:
    """A corpus at `path` in any format `crossling prepare` reads (a manifest folder, a saved `datasets`
    dataset, lhotse manifests, or Common Voice; `corpus.format` None: detected), prepared by the grid
    before the runs into `out` ('' = a folder of the store named after the data identity)."""

    path: str
    corpus: CorpusOptions
    prepare: PrepareOptions
    out: str = ""


@dataclass(frozen=True, kw_only=True)
class SyntheticData:
    """A synthetic Common Voice-shaped corpus (eSpeak NG), then prepared like a real release; the
    prepared folder is `out` ('' = under <store>/data), the corpus goes beside it."""

    synth: SynthOptions
    prepare: PrepareOptions
    out: str = ""


@dataclass(frozen=True)
class DataSource:
    """Where the study's prepared languages come from; `base` is the study file's folder, against
    which relative paths are resolved."""

    kind: str
    options: PreparedData | CommonVoiceData | CorpusData | SyntheticData
    base: Path

    def identity(self) -> dict[str, Any]:
        """What identifies the data in run ids: the source and its options as written (not where
        the prepared files are kept, and not machine-specific absolute paths)."""
        options = self.options
        if isinstance(options, PreparedData):
            values = {"path": options.path}
        elif isinstance(options, CommonVoiceData):
            values = {"release": options.release, **dataclasses.asdict(options.prepare)}
        elif isinstance(options, CorpusData):
            values = {"path": options.path, **dataclasses.asdict(options.corpus),
                      **dataclasses.asdict(options.prepare)}
        else:
            values = {**dataclasses.asdict(options.synth), **dataclasses.asdict(options.prepare)}
        for name in LATER_OPTIONS.get(self.kind, ()):
            if values[name] == _default(name):
                del values[name]
        return {"source": self.kind, **values}

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path


def _default(name: str) -> Any:
    for cls in (SynthOptions, PrepareOptions):
        for field in dataclasses.fields(cls):
            if field.name == name:
                return field.default
    raise KeyError(name)


def _names(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


# --- reading the [data] table ------------------------------------------------------------------------


def parse_data(values: dict[str, Any], where: str, base: Path) -> DataSource:
    """The [data] table of a study file: `source` and that source's options, strictly (an unknown key is
    an error listing the valid ones)."""
    where = f"{where} [data]"
    values = dict(values)
    kind = values.pop("source", None)
    if kind not in DATA_SOURCES:
        raise ConfigError(f"{where}: source must be one of {', '.join(DATA_SOURCES)}, got {kind!r}")
    where = f"{where} (source = {kind!r})"
    if kind == "prepared":
        return DataSource(kind=kind, options=from_mapping(PreparedData, values, where), base=base)
    if kind == "common-voice":
        check_keys(values, tuple(sorted(_names(PrepareOptions) | {"release", "out"})), where)
        options = from_mapping(CommonVoiceData, {**_own(values, {"release", "out"}),
                                                 "prepare": _options(PrepareOptions, values, where)}, where)
        return DataSource(kind=kind, options=options, base=base)
    if kind == "corpus":
        check_keys(values, tuple(sorted(_names(CorpusOptions) | _names(PrepareOptions) | {"path", "out"})), where)
        options = from_mapping(CorpusData, {**_own(values, {"path", "out"}),
                                            "corpus": _options(CorpusOptions, values, where),
                                            "prepare": _options(PrepareOptions, values, where)}, where)
        return DataSource(kind=kind, options=options, base=base)
    check_keys(values, tuple(sorted(_names(SynthOptions) | _names(PrepareOptions) | {"out"})), where)
    values = {**SYNTHETIC_DEFAULTS, **values}
    options = SyntheticData(synth=_options(SynthOptions, values, where),
                            prepare=_options(PrepareOptions, values, where),
                            out=from_mapping(_Out, _own(values, {"out"}), where).out)
    return DataSource(kind=kind, options=options, base=base)


@dataclass(frozen=True)
class _Out:
    out: str = ""


def _own(values: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key in names}


def _options(cls: type, values: dict[str, Any], where: str) -> Any:
    """`cls` from the keys of `values` that are its fields (`seed` seeds both synthesis and selection)."""
    return from_mapping(cls, _own(values, _names(cls)), where)


# --- preparing ---------------------------------------------------------------------------------------


def prepare_source(source: DataSource, languages: tuple[str, ...], store: Store,
                   track: Track = no_progress) -> Path:
    """The prepared root holding every one of `languages`, preparing what is missing (once, under a
    store claim, when several grid processes start together)."""
    if isinstance(source.options, PreparedData):
        root = source.resolve(source.options.path)
        _require_prepared(root, languages, f"[data] path = {source.options.path!r}")
        return root
    root = prepared_root(source, store.root)
    missing = [lang for lang in languages if not is_prepared(root, lang)]
    if missing:
        _prepare_under_claim(source, store, root, missing, track)
    _require_prepared(root, languages, str(root))
    return root


def prepared_root(source: DataSource, store_root: Path) -> Path:
    """[data] out, or a folder of the store named after the data identity (a changed option never
    reuses data prepared with the old one)."""
    if source.options.out:
        return source.resolve(source.options.out)
    return paths.store_prepared_dir(store_root, source.kind, identity_hash(source.identity()))


def _prepare_under_claim(source: DataSource, store: Store, root: Path, missing: list[str], track: Track) -> None:
    claim_name = f"_prepare-{root.name}"
    while (claim := store.try_claim(claim_name, owner="prepare")) is None:
        log.info("another process is preparing %s; waiting", root)
        time.sleep(min(5.0, store.heartbeat_seconds))
    try:
        missing = [lang for lang in missing if not is_prepared(root, lang)]
        if missing:
            _prepare(source, root, missing, track)
    finally:
        store.release(claim)


def _prepare(source: DataSource, root: Path, languages: list[str], track: Track) -> None:
    options = source.options
    corpus = CorpusOptions(format="cv")  # a release, or the release-shaped synthetic corpus: never detected
    if isinstance(options, CommonVoiceData):
        release = source.resolve(options.release)
    elif isinstance(options, CorpusData):
        release, corpus = source.resolve(options.path), options.corpus
    else:
        release = paths.store_corpus_dir(root)
        synthesize_corpus(release, languages, options.synth, track=track)
    prepare_release(release, languages, root, options.prepare, corpus=corpus, track=track)


def _require_prepared(root: Path, languages: tuple[str, ...], where: str) -> None:
    missing = [lang for lang in languages if not is_prepared(root, lang)]
    if missing:
        raise DataError(
            f"{where}: language(s) {', '.join(missing)} not prepared in {root} (no prepared.json); "
            f"run `crossling prepare ... --languages {' '.join(missing)} --out {root}`"
        )
