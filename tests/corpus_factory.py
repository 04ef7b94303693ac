"""Writes small corpora in the formats `crossling prepare` reads besides Common Voice: manifest folders
(TSV/CSV/JSONL), Hugging Face datasets saved with save_to_disk, lhotse recording + supervision manifests.
Audio comes from cvfactory's tones (FLAC/WAV/MP3 at 48 kHz)."""

from __future__ import annotations

import csv
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from cvfactory import SENTENCES, FakeClip, write_clip


@dataclass(frozen=True)
class Entry:
    """One utterance: its audio file relative to the language folder, and its manifest fields."""

    path: str
    seconds: float
    text: str
    speaker: str
    gender: str
    split: str
    kind: str = "tone"  # or empty, corrupt, missing (as cvfactory.FakeClip)


def entries(language: str = "sw", speakers: int = 10, per_speaker: int = 4, seconds: float = 1.0,
            suffix: str = ".flac", split_by: dict[str, str] | None = None) -> list[Entry]:
    """`speakers` x `per_speaker` utterances in clips/<speaker>/<n><suffix>; `split_by` maps speakers to
    splits (default: the last two speakers are dev and test)."""
    sentences = SENTENCES.get(language, SENTENCES["pt"])
    names = [f"spk{i:02d}" for i in range(speakers)]
    split_by = split_by or {**dict.fromkeys(names, "train"), names[-2]: "dev", names[-1]: "test"}
    return [
        Entry(path=f"clips/{name}/{n:03d}{suffix}", seconds=seconds + 0.25 * ((i + n) % 4),
              text=sentences[(i + n) % len(sentences)], speaker=name, gender=("female", "male")[i % 2],
              split=split_by[name])
        for i, name in enumerate(names) for n in range(per_speaker)
    ]


def write_audio(folder: Path, items: list[Entry]) -> None:
    for item in items:
        clip = FakeClip(name=item.path, seconds=item.seconds, sentence=item.text, kind=item.kind)
        write_clip(folder / item.path, clip, seed=zlib.crc32(item.path.encode()))


def write_manifest_folder(root: Path, language: str, items: list[Entry], fmt: str = "tsv",
                          columns: tuple[str, ...] = ("path", "text", "speaker", "gender", "split")) -> Path:
    """`root/<language>/manifest.<fmt>` plus the audio; returns `root`."""
    folder = root / language
    folder.mkdir(parents=True, exist_ok=True)
    write_audio(folder, items)
    records = [{column: getattr(item, column) for column in columns} for item in items]
    path = folder / f"manifest.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        return root
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if fmt == "tsv":
            handle.write("\t".join(columns) + "\n")
            handle.writelines("\t".join(r[c] for c in columns) + "\n" for r in records)
        else:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([r[c] for c in columns] for r in records)
    return root


def write_hf_dataset(root: Path, language: str, items: list[Entry], splits: bool = True,
                     text_column: str = "text") -> Path:
    """A `datasets` DatasetDict (train/validation/test) or Dataset saved at `root/<language>` with the audio
    embedded; returns `root`."""
    from datasets import Audio, Dataset, DatasetDict

    audio_dir = root / f".{language}-audio"
    write_audio(audio_dir, items)

    def dataset(part: list[Entry]) -> Dataset:
        columns = {"audio": [str(audio_dir / e.path) for e in part], text_column: [e.text for e in part],
                   "speaker": [e.speaker for e in part], "gender": [e.gender for e in part]}
        return Dataset.from_dict(columns).cast_column("audio", Audio())

    if splits:
        names = {"train": "train", "dev": "validation", "test": "test"}
        saved = DatasetDict({names[s]: dataset([e for e in items if e.split == s]) for s in names})
    else:
        saved = dataset(items)
    saved.save_to_disk(str(root / language))
    return root


def write_lhotse(root: Path, language: str, items: list[Entry], per_split: bool = True) -> Path:
    """lhotse manifests at `root/<language>/`: each recording (48 kHz FLAC) holds two consecutive utterances
    of one speaker as supervision segments; per-split `<language>_{recordings,supervisions}_<split>.jsonl.gz`
    or one unsplit pair. Returns `root`."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    folder = root / language
    folder.mkdir(parents=True, exist_ok=True)
    rate = 48_000
    by_split: dict[str, tuple[list, list]] = {}
    for start in range(0, len(items) - 1, 2):
        pair = items[start: start + 2]
        path = folder / "audio" / f"rec{start:04d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        pieces = [_tone(e.seconds, rate, seed=start + k) for k, e in enumerate(pair)]
        sf.write(path, np.concatenate(pieces), rate, format="FLAC")
        recording = Recording.from_file(path, recording_id=f"rec{start:04d}")
        recordings, supervisions = by_split.setdefault(pair[0].split if per_split else "", ([], []))
        recordings.append(recording)
        offset = 0.0
        for k, entry in enumerate(pair):
            supervisions.append(SupervisionSegment(
                id=f"rec{start:04d}-{k}", recording_id=recording.id, start=offset, duration=entry.seconds,
                channel=0, text=entry.text, speaker=entry.speaker, gender=entry.gender, language=language))
            offset += entry.seconds
    for split, (recordings, supervisions) in by_split.items():
        tail = f"_{split}" if split else ""
        RecordingSet.from_recordings(recordings).to_file(folder / f"{language}_recordings{tail}.jsonl.gz")
        SupervisionSet.from_segments(supervisions).to_file(folder / f"{language}_supervisions{tail}.jsonl.gz")
    return root


def _tone(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
