"""The `Utterance` noun and its JSON-lines manifests (one per prepared split)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from crossling.atomic import write_jsonl_atomic
from crossling.errors import DataError

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Utterance:
    """One prepared clip.

    `audio` is the decoded 16 kHz mono WAV, relative to the prepared root; `text` is the normalized
    transcript exactly as the tokenizer encodes it (space separates words); `sentence` is the original.
    Metadata fields are '' where the release does not say."""

    id: str
    audio: str
    num_samples: int
    text: str
    sentence: str
    speaker: str = ""
    gender: str = ""
    age: str = ""
    accent: str = ""
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        """Decoded duration in seconds."""
        return self.num_samples / self.sample_rate


_FIELD_NAMES = {f.name for f in fields(Utterance)}


def write_manifest(path: Path, utterances: list[Utterance]) -> None:
    """Write utterances as JSON lines, atomically."""
    write_jsonl_atomic(Path(path), [asdict(u) for u in utterances])


def read_manifest(path: Path) -> list[Utterance]:
    """Read a manifest written by `write_manifest`; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run `crossling prepare` first)")
    utterances = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                utterances.append(_parse_line(path, line_number, line))
    return utterances


def _parse_line(path: Path, line_number: int, line: str) -> Utterance:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{line_number}: expected a JSON object (one utterance), found {type(row).__name__}")
    unknown = set(row) - _FIELD_NAMES
    if unknown:
        raise DataError(f"{path}:{line_number}: unknown fields {sorted(unknown)}; valid: {sorted(_FIELD_NAMES)}")
    try:
        return Utterance(**row)
    except TypeError as error:
        raise DataError(f"{path}:{line_number}: {error}") from None


def total_hours(utterances: list[Utterance]) -> float:
    return sum(u.num_samples / u.sample_rate for u in utterances) / 3600.0
