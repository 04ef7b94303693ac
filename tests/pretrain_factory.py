"""Tiny prepared languages for pre-training tests: 'speech' made of random tone segments, written as
16 kHz WAVs plus train manifests in the prepared layout (no synthesiser needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from crossling import paths
from crossling.manifest import SAMPLE_RATE, Utterance, write_manifest


def tone_utterance(rng: np.random.Generator, seconds: float, base: float) -> np.ndarray:
    """Piecewise-stationary audio: 250 ms segments of two harmonics plus noise, like crude phones."""
    segment = int(0.25 * SAMPLE_RATE)
    pieces = []
    for _ in range(int(seconds * SAMPLE_RATE) // segment):
        f = base * rng.choice([1.0, 1.5, 2.0, 2.5, 3.0])
        t = np.arange(segment) / SAMPLE_RATE
        pieces.append(0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(4 * np.pi * f * t)
                      + 0.02 * rng.standard_normal(segment))
    return np.concatenate(pieces).astype(np.float32)


def make_prepared(root: Path, languages: dict[str, float], clips: int = 12, seconds: float = 1.5,
                  seed: int = 0) -> Path:
    """Write `clips` train utterances per language (base pitch per language) under `root`."""
    rng = np.random.default_rng(seed)
    for language, base in languages.items():
        utterances = []
        for i in range(clips):
            audio = tone_utterance(rng, seconds * rng.uniform(0.8, 1.2), base)
            relative = f"_audio/{language}/{language}_{i:03d}.wav"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / relative, audio, SAMPLE_RATE, subtype="PCM_16")
            utterances.append(Utterance(id=f"{language}_{i:03d}", audio=relative, num_samples=len(audio),
                                        text="a b", sentence="a b", speaker=f"s{i % 3}"))
        write_manifest(paths.manifest_path(root, language, "train"), utterances)
    return root
