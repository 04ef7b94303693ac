"""Writes small Common Voice-shaped releases for tests: MP3 48 kHz clips (soundfile) + TSVs in the
CV 7.0 layout or a newer one (sentence_id, sentence_domain, accents, variant…), optionally as .tar.gz."""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass, field, replace  # noqa: F401 - replace is re-exported for tests
from pathlib import Path

import numpy as np
import soundfile as sf

CV7_COLUMNS = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent",
               "locale", "segment"]
NEW_COLUMNS = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
               "age", "gender", "accents", "variant", "locale", "segment"]
CLIP_RATE = 48_000

SENTENCES = {
    "pt": ['Ele disse "olá" ao João.', "A ação é rápida, não?", "Você põe o pão à mesa!",
           "Três corações — e uma canção.", "O avô comeu maçã."],
    "de": ["Größe „zählt“ nicht!", "Der Bär schläft.", 'Er sagte: "Grüß Gott".', "Über Öl und Äpfel.",
           "Die Straße ist süß."],
    "tr": ["İstanbul çok güzel.", "Işık yanıyor!", "Ağaçlar yeşil.", "Şimdi gidiyoruz.", "Gözlük ığdır."],
    "hi": ["हिन्दी भाषा सुंदर है।", "मैं घर जा रहा हूँ।", "क्या आप ठीक हैं?", "यह किताब है।", "पानी पियो।"],
    "th": ["ภาษาไทยง่ายครับ", "ฉันไปตลาด", "วันนี้อากาศดี", "กินข้าวหรือยัง", "สวัสดีค่ะ"],
}


@dataclass(frozen=True)
class FakeClip:
    """One clip of a fake release. `kind`: tone (normal), empty (0 bytes), corrupt (junk bytes),
    missing (listed in the TSV, no file), silent-empty-wav is not needed: empty covers 0-length audio."""

    name: str
    seconds: float
    sentence: str
    speaker: str = "spk0"
    gender: str = "female"
    age: str = "twenties"
    accent: str = ""
    kind: str = "tone"
    tsv_path: str | None = None  # what the TSV's `path` column says (defaults to `name`)
    extra: dict = field(default_factory=dict)


def clips_for(language: str, split: str, count: int, seconds: float = 1.0, speakers: int = 3,
              step: float = 0.25) -> list[FakeClip]:
    """`count` normal clips with durations seconds, seconds+step, … cycling over 4 lengths."""
    sentences = SENTENCES.get(language, SENTENCES["pt"])
    return [
        FakeClip(
            name=f"common_voice_{language}_{split}_{i:04d}.mp3",
            seconds=seconds + step * (i % 4),
            sentence=sentences[i % len(sentences)],
            speaker=f"{language}-speaker-{i % speakers}",
            gender=("female", "male")[i % 2],
            age=("twenties", "thirties")[i % 2],
            accent=f"accent-{i % 2}",
        )
        for i in range(count)
    ]


def write_clip(path: Path, clip: FakeClip, seed: int = 0) -> None:
    """An MP3 48 kHz tone with a little noise of `clip.seconds`, or a broken file for bad-input cases."""
    if clip.kind == "missing":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if clip.kind == "empty":
        path.write_bytes(b"")
        return
    if clip.kind == "corrupt":
        path.write_bytes(b"this is not audio at all " * 64)
        return
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(clip.seconds * CLIP_RATE))) / CLIP_RATE
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t) + 0.01 * rng.standard_normal(len(t))
    fmt = {".mp3": "MP3", ".wav": "WAV", ".flac": "FLAC"}[path.suffix]
    sf.write(str(path), x.astype(np.float32), CLIP_RATE, format=fmt)


def _tsv_row(clip: FakeClip, columns: list[str], language: str, index: int) -> list[str]:
    values = {
        "client_id": clip.speaker, "path": clip.tsv_path if clip.tsv_path is not None else clip.name,
        "sentence": clip.sentence, "up_votes": "2", "down_votes": "0", "age": clip.age,
        "gender": {"female": "female_feminine", "male": "male_masculine"}.get(clip.gender, clip.gender)
        if "accents" in columns else clip.gender,
        "accent": clip.accent, "accents": clip.accent, "locale": language, "segment": "",
        "sentence_id": f"{index:064x}", "sentence_domain": "", "variant": "",
    }
    values.update(clip.extra)
    return [values[c] for c in columns]


def write_language(lang_dir: Path, language: str, splits: dict[str, list[FakeClip]],
                   layout: str = "cv7") -> None:
    """`<lang_dir>/clips/*` and `<lang_dir>/{split}.tsv` for each split given (validated.tsv too)."""
    columns = {"cv7": CV7_COLUMNS, "new": NEW_COLUMNS}[layout]
    lang_dir.mkdir(parents=True, exist_ok=True)
    validated = []
    for split, clips in splits.items():
        rows = [_tsv_row(c, columns, language, i) for i, c in enumerate(clips)]
        validated += rows
        _write_tsv(lang_dir / f"{split}.tsv", columns, rows)
        for i, clip in enumerate(clips):
            write_clip(lang_dir / "clips" / clip.name, clip, seed=zlib.crc32(f"{language}{split}{i}".encode()))
    _write_tsv(lang_dir / "validated.tsv", columns, validated)


def _write_tsv(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    lines = ["\t".join(columns)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def standard_splits(language: str, train: int = 24, dev: int = 4, test: int = 4,
                    seconds: float = 1.0) -> dict[str, list[FakeClip]]:
    return {"train": clips_for(language, "train", train, seconds),
            "dev": clips_for(language, "dev", dev, seconds), "test": clips_for(language, "test", test, seconds)}


def write_release(root: Path, languages: dict[str, dict[str, list[FakeClip]]] | list[str],
                  layout: str = "cv7", corpus_dir: str | None = "cv-corpus-7.0-2021-07-21") -> Path:
    """A release folder; returns the path a user would pass (`root`, holding `corpus_dir/<lang>/`)."""
    if isinstance(languages, list):
        languages = {lang: standard_splits(lang) for lang in languages}
    base = root / corpus_dir if corpus_dir else root
    for language, splits in languages.items():
        write_language(base / language, language, splits, layout)
    return root


def tar_release(folder: Path, tar_path: Path) -> Path:
    """Pack the contents of a release folder (its children at the archive's top) into a .tar.gz."""
    with tarfile.open(tar_path, "w:gz") as archive:
        for child in sorted(folder.iterdir()):
            archive.add(child, arcname=child.name)
    return tar_path


def with_kind(clips: list[FakeClip], index: int, **changes) -> list[FakeClip]:
    """A copy of `clips` with clip `index` changed (e.g. kind="corrupt" or sentence="")."""
    return [replace(c, **changes) if i == index else c for i, c in enumerate(clips)]


def count_decodes(monkeypatch) -> list:
    """Record every clip that crossling.audio actually decodes (the list fills as decoding happens)."""
    import crossling.audio as audio

    calls = []
    real = audio.decode_to_wav

    def counted(source, target):
        calls.append(source)
        return real(source, target)

    monkeypatch.setattr(audio, "decode_to_wav", counted)
    return calls
