"""Synthetic tidy results tables (the `crossling.results` contract) for the analysis tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crossling.languages import STUDY_LANGUAGES, find_language
from crossling.registry import RANDOM_INIT, REFERENCE_CHECKPOINTS

CHECKPOINTS = tuple(c.alias for c in REFERENCE_CHECKPOINTS) + (RANDOM_INIT,)
#: A hidden "true" quality per checkpoint: lower is better; multilingual ones best, random init worst.
QUALITY = {"xlsr300m": 0.0, "xlsr53": 0.02, "vp100k": 0.05, "unispeech-cv-multi": 0.06, "wavlm": 0.07,
           "unispeech-sat": 0.08, "hubert": 0.08, "robust": 0.09, "lv60": 0.10, "unispeech-cv-en": 0.11,
           "vp-es": 0.09, "vp-fr": 0.09, "vp-it": 0.09, "vp-nl": 0.09, "vp-sv": 0.09, RANDOM_INIT: 0.45}
_PRETRAIN = {"vp-es": "es", "vp-fr": "fr", "vp-it": "it", "vp-nl": "nl", "vp-sv": "sv-SE"}


def synthetic_table(checkpoints=CHECKPOINTS, languages=STUDY_LANGUAGES, seeds=(0, 1, 2), noise=0.01,
                    seed=0, gender_gap=0.02) -> pd.DataFrame:
    """One row per run with every column of the tidy contract. CER = language difficulty + checkpoint
    quality − a bonus when a monolingual checkpoint's language shares the target's subgroup + noise;
    non-Indo-European targets are harder; women's CER is `gender_gap` above men's."""
    rng = np.random.default_rng(seed)
    rows = []
    for li, language in enumerate(languages):
        lang = find_language(language)
        difficulty = 0.10 + 0.01 * (li % 7) + (0.0 if lang is not None and lang.indo_european else 0.08)
        for checkpoint in checkpoints:
            bonus = _subgroup_bonus(checkpoint, language)
            for s in seeds:
                cer = difficulty + QUALITY.get(checkpoint, 0.1) - bonus + rng.normal(0, noise)
                rows.append(_row(checkpoint, language, s, float(np.clip(cer, 0.01, 1.0)), gender_gap, rng))
    return pd.DataFrame(rows)


def _subgroup_bonus(checkpoint: str, language: str) -> float:
    if checkpoint not in _PRETRAIN:
        return 0.0
    source, target = find_language(_PRETRAIN[checkpoint]), find_language(language)
    return 0.06 if source.lineage == target.lineage else 0.0


def _row(checkpoint, language, seed, cer, gap, rng) -> dict:
    chars = 5000
    female = cer + gap / 2 + rng.normal(0, 0.003)
    male = cer - gap / 2 + rng.normal(0, 0.003)
    return {
        "run_id": f"{checkpoint}-{language}-s{seed}", "checkpoint": checkpoint, "language": language,
        "seed": seed, "status": "done", "cer": cer, "wer": min(1.0, cer * 3),
        "char_edits": round(cer * chars), "chars": chars, "word_edits": round(min(1.0, cer * 3) * 1000),
        "words": 1000, "dev_cer": cer * 0.98, "dev_wer": min(1.0, cer * 2.9), "cer_female": female,
        "cer_male": male, "char_edits_female": round(female * 2500), "chars_female": 2500,
        "char_edits_male": round(male * 2500), "chars_male": 2500, "steps": 4000,
        "wall_seconds": 3600.0 + 10 * seed, "device_hours": 1.0, "audio_seconds_per_second": 5.0,
        "peak_memory_mb": 12000.0, "setting.learning_rate": 6e-5,
    }
