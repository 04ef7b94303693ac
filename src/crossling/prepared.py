"""Reading a prepared language (written by `crossling prepare`): prepared root + language -> its
summary, vocabulary, manifests and 16 kHz waveforms, and a fingerprint of its content, by which a run on
another node finds the same data where that node mounts it (`locate_prepared`)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from crossling import paths
from crossling.atomic import read_json
from crossling.errors import DataError
from crossling.manifest import SAMPLE_RATE, Utterance, read_manifest
from crossling.records import PreparedSummary


@dataclass(frozen=True)
class PreparedLanguage:
    """A language written by `crossling prepare`: its root, vocabulary {token: id} and summary."""

    root: Path
    language: str
    vocab: dict[str, int]
    summary: PreparedSummary

    @property
    def vocab_file(self) -> Path:
        return paths.vocab_path(self.root, self.language)

    def split(self, name: str) -> list[Utterance]:
        return read_manifest(paths.manifest_path(self.root, self.language, name))

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the vocabulary and the three manifests: what a run trains and is
        scored on (the audio they name is decoded from the clips, identified by path and length). The same
        data anywhere on disk has the same fingerprint."""
        digest = hashlib.sha256()
        for path in (self.vocab_file, *(paths.manifest_path(self.root, self.language, s) for s in paths.SPLITS)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()[:16]


def open_prepared(root: Path, language: str) -> PreparedLanguage:
    """Check that `language` was prepared completely under `root` (prepared.json is written last) and
    read its vocabulary; a missing language lists the ones that are there."""
    root = Path(root)
    summary_path = paths.prepared_summary_path(root, language)
    if not summary_path.is_file():
        ready = sorted(p.parent.name for p in root.glob("*/prepared.json")) if root.is_dir() else []
        raise DataError(
            f"{summary_path}: language {language!r} is not prepared under {root} (run `crossling prepare`); "
            f"prepared languages there: {', '.join(ready) or 'none'}"
        )
    vocab = read_json(paths.vocab_path(root, language))
    expected = {"<pad>": 0, "<unk>": 1, "|": 2}
    if any(vocab.get(token) != index for token, index in expected.items()):
        raise DataError(f"{paths.vocab_path(root, language)}: expected <pad>=0, <unk>=1, |=2 at the start")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise DataError(f"{paths.vocab_path(root, language)}: token ids must be 0..{len(vocab) - 1} without gaps")
    return PreparedLanguage(root=root, language=language, vocab=vocab, summary=PreparedSummary.read(summary_path))


#: Where this node mounts prepared data, when not where the study's driver found it: the prepared root
#: itself, or a folder holding it under its own name (e.g. the store's `prepared/` folder).
DATA_ROOT_ENV = "CROSSLING_DATA_ROOT"


def locate_prepared(root: Path, language: str, fingerprint: str,
                    environ: Mapping[str, str] = os.environ) -> Path:
    """The prepared root on this node holding `language` with content `fingerprint` (`fingerprint()`):
    `root`, the path the driver resolved, if it holds that content here; else, under ${CROSSLING_DATA_ROOT},
    `root`'s name, the folder itself or one of its sub-folders. Refused, naming every folder looked at and
    what it holds, when none has this content (a run never trains on other data than its identity's)."""
    looked: list[str] = []
    for candidate in _candidates(Path(root), environ.get(DATA_ROOT_ENV)):
        if not is_prepared(candidate, language):
            continue
        found = open_prepared(candidate, language).fingerprint()
        if found == fingerprint:
            return candidate
        looked.append(f"{candidate} (content fingerprint {found})")
    where = f"{root}" + (f" and under {DATA_ROOT_ENV}={environ[DATA_ROOT_ENV]}" if environ.get(DATA_ROOT_ENV) else "")
    raise DataError(
        f"prepared language {language!r} with content fingerprint {fingerprint} is not on this node "
        f"({socket.gethostname()}): looked in {where}; found {', '.join(looked) or f'no prepared {language!r}'}. "
        f"Mount the study's prepared data at {root}, or set {DATA_ROOT_ENV} on this node to where it is mounted")


def _candidates(root: Path, data_root: str | None) -> list[Path]:
    if not data_root:
        return [root]
    base = Path(data_root).expanduser()
    inside = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    return list(dict.fromkeys([root, base / root.name, base, *inside]))


def is_prepared(root: Path, language: str) -> bool:
    """Whether `language` was prepared completely under `root` (its prepared.json exists)."""
    return paths.prepared_summary_path(root, language).is_file()


def load_audio(prepared_root: Path, utterance: Utterance) -> np.ndarray:
    """The utterance's 16 kHz mono waveform as float32 in [-1, 1]."""
    path = Path(prepared_root) / utterance.audio
    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=False)
    except (OSError, RuntimeError) as error:  # soundfile raises LibsndfileError (a RuntimeError)
        raise DataError(f"{path}: cannot read audio of utterance {utterance.id!r} ({error})") from None
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise DataError(f"{path}: expected 16 kHz mono audio, got {rate} Hz with shape {audio.shape}")
    return audio


class SplitAudio(Sequence):
    """The waveforms of some utterances, read when indexed, so that a whole dev or test set need not sit
    in memory (`sharing.read_audio`: once per process, within a byte budget)."""

    def __init__(self, prepared_root: Path, utterances: Sequence[Utterance]) -> None:
        self.root = Path(prepared_root)
        self.utterances = list(utterances)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> np.ndarray:
        from crossling.sharing import read_audio  # (sharing reads through this module)

        return read_audio(self.root, self.utterances[index])

    def lengths(self) -> list[int]:
        """Sample counts from the manifest (no audio is read)."""
        return [u.num_samples for u in self.utterances]
