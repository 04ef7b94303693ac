"""A prepared language -> lhotse manifests or a Hugging Face `datasets` dataset on disk, so that crossling's
exact subsets (the N-hour train set, dev, test; decoded 16 kHz audio; normalized text) reach other toolkits."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from crossling import paths
from crossling.errors import ConfigError
from crossling.manifest import Utterance
from crossling.prepared import open_prepared

log = logging.getLogger(__name__)

TARGETS = ("lhotse", "hf")
#: crossling's split names -> the Hugging Face convention (the reader maps 'validation' back to dev).
HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def export_prepared(prepared: Path, language: str, target: str, out: Path) -> list[Path]:
    """Write `language` prepared under `prepared` in `target` format ('lhotse' or 'hf') into `out`; returns
    the files or folders written."""
    if target not in TARGETS:
        raise ConfigError(f"--to {target!r} is not an export format; choose one of {', '.join(TARGETS)}")
    data = open_prepared(prepared, language)
    splits = {split: data.split(split) for split in HF_SPLITS}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = (_to_lhotse if target == "lhotse" else _to_hf)(Path(prepared).resolve(), language, splits, out)
    log.info("%s exported as %s: %s", language, target, ", ".join(map(str, written)))
    return written


def _requires(package: str):
    try:
        return __import__(package)
    except ImportError:
        raise ConfigError(f"exporting needs the `{package}` package: pip install 'crossling[corpora]'") from None


# --- lhotse -------------------------------------------------------------------------------------------


def _to_lhotse(root: Path, language: str, splits: dict[str, list[Utterance]], out: Path) -> list[Path]:
    """One RecordingSet + SupervisionSet per split; recordings point at the prepared 16 kHz WAVs (absolute
    paths: the manifests stay valid wherever they are moved, as long as the prepared root stays)."""
    lhotse = _requires("lhotse")
    written = []
    for split, utterances in splits.items():
        recordings = lhotse.RecordingSet.from_recordings(_recording(lhotse, root, u) for u in utterances)
        supervisions = lhotse.SupervisionSet.from_segments(_supervision(lhotse, language, u) for u in utterances)
        for kind, manifest in (("recordings", recordings), ("supervisions", supervisions)):
            path = paths.export_lhotse_path(out, language, kind, split)
            manifest.to_file(path)
            written.append(path)
    return written


def _recording(lhotse, root: Path, utterance: Utterance):
    source = lhotse.audio.AudioSource(type="file", channels=[0], source=str(root / utterance.audio))
    return lhotse.Recording(id=utterance.id, sources=[source], sampling_rate=utterance.sample_rate,
                            num_samples=utterance.num_samples, duration=utterance.duration)


def _supervision(lhotse, language: str, utterance: Utterance):
    """The transcript crossling trains on (normalized, vocabulary stand-ins applied) as `text`; the original
    sentence, age and accent under `custom`."""
    return lhotse.SupervisionSegment(
        id=utterance.id, recording_id=utterance.id, start=0.0, duration=utterance.duration, channel=0,
        text=utterance.text, language=language, speaker=utterance.speaker or None, gender=utterance.gender or None,
        custom={"sentence": utterance.sentence, "age": utterance.age, "accent": utterance.accent},
    )


# --- Hugging Face datasets ----------------------------------------------------------------------------


def _to_hf(root: Path, language: str, splits: dict[str, list[Utterance]], out: Path) -> list[Path]:
    """A DatasetDict (train / validation / test) with the audio embedded (16 kHz), saved with save_to_disk."""
    datasets = _requires("datasets")
    parts = {HF_SPLITS[split]: _hf_split(datasets, root, utterances) for split, utterances in splits.items()}
    target = paths.export_hf_dir(out, language)
    datasets.DatasetDict(parts).save_to_disk(str(target))
    return [target]


def _hf_split(datasets, root: Path, utterances: list[Utterance]):
    rows = [asdict(u) for u in utterances]
    columns = {key: [row[key] for row in rows] for key in ("id", "text", "sentence", "speaker", "gender", "age",
                                                           "accent", "num_samples")}
    columns["audio"] = [{"bytes": (root / u.audio).read_bytes(), "path": Path(u.audio).name} for u in utterances]
    features = datasets.Features({
        **{key: datasets.Value("int64" if key == "num_samples" else "string") for key in columns if key != "audio"},
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
    })
    # cast, not encoded: datasets encodes Audio values through torchcodec, which reading WAV bytes needs not
    return datasets.Dataset.from_dict(columns, features=features).cast_column("audio", datasets.Audio(sampling_rate=16_000))
