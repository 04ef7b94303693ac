"""Test helpers: a tiny prepared language of synthetic "speech" (one tone pattern per character, so a tiny
model can learn it) written straight through crossling's manifest contract, and tiny random checkpoints
of each wav2vec2-family model type in Hugging Face format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

from crossling import paths
from crossling.manifest import SAMPLE_RATE, Utterance, write_manifest
from crossling.records import PreparedSummary

CHARS = "abcdefg"
CHAR_SECONDS = 0.07
GAP_SECONDS = 0.05


def tone_audio(text: str, rng: np.random.Generator, pitch: float = 1.0) -> np.ndarray:
    """Each character a 70 ms chord of two tones specific to it, each space 50 ms of near silence."""
    pieces = [np.zeros(int(0.05 * SAMPLE_RATE), dtype=np.float32)]
    for char in text:
        seconds = GAP_SECONDS if char == " " else CHAR_SECONDS
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        if char == " ":
            pieces.append(np.zeros_like(t, dtype=np.float32))
            continue
        k = CHARS.index(char) if char in CHARS else len(CHARS)
        wave = np.sin(2 * np.pi * (300 + 220 * k) * pitch * t) + 0.5 * np.sin(2 * np.pi * (2600 - 230 * k) * t)
        pieces.append((0.3 * wave * np.hanning(len(t))).astype(np.float32))
    pieces.append(np.zeros(int(0.05 * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(pieces)
    return (audio + 0.01 * rng.standard_normal(len(audio))).astype(np.float32)


def random_text(rng: np.random.Generator, chars: str = CHARS) -> str:
    words = ["".join(rng.choice(list(chars), size=rng.integers(2, 5))) for _ in range(rng.integers(2, 4))]
    return " ".join(words)


def make_prepared(root: Path, language: str = "xx", n_train: int = 32, n_dev: int = 6, n_test: int = 8,
                  too_long: int = 0, seed: int = 0, chars: str = CHARS) -> Path:
    """Write a complete prepared language under `root`; `too_long` extra train utterances get a 0.15 s
    clip with a 20-character transcript (more labels than frames). Returns `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    for split, count in counts.items():
        utterances = [_utterance(root, language, f"{split}{i:03d}", random_text(rng, chars), rng, i)
                      for i in range(count)]
        if split == "train":
            utterances += [_utterance(root, language, f"long{i:03d}", "ab" * 10, rng, i, seconds=0.15)
                           for i in range(too_long)]
        write_manifest(paths.manifest_path(root, language, split), utterances)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: 3 + i for i, c in enumerate(sorted(chars))}}
    paths.vocab_path(root, language).write_text(json.dumps(vocab), encoding="utf-8")
    summary = PreparedSummary(
        language=language, source="tinydata", seed=seed, train_hours=0.0, train_utterances=n_train + too_long,
        dev_utterances=n_dev, test_utterances=n_test, vocab=sorted(chars), vocab_threshold=0.0, char_map={},
        oov_rate={"dev": 0.0, "test": 0.0}, skipped={}, normalization={},
    )
    paths.prepared_summary_path(root, language).write_text(json.dumps(summary.to_json()), encoding="utf-8")
    return root


def _utterance(root, language, stem, text, rng, index, seconds=None) -> Utterance:
    gender = "female" if index % 2 else "male"
    audio = tone_audio(text, rng, pitch=1.08 if gender == "female" else 1.0)
    if seconds is not None:
        audio = audio[: int(seconds * SAMPLE_RATE)]
    path = paths.audio_cache_path(root, language, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return Utterance(id=stem, audio=str(path.relative_to(root)), num_samples=len(audio), text=text,
                     sentence=text, speaker=f"spk{index % 4}", gender=gender)


#: The five types of the reference study (CNN feature encoder with a selectable norm).
MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "unispeech", "unispeech-sat")
#: Every model type with a transformers CTC head that crossling fine-tunes.
ALL_MODEL_TYPES = (*MODEL_TYPES, "data2vec-audio", "wav2vec2-conformer", "wav2vec2-bert")

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, hidden_dropout=0.0,
             attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)
_TINY_CNN = dict(conv_dim=[32] * 7, conv_bias=True, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
# per type: values beyond the shared ones (data2vec's positional convolution is a stack of small layers;
# the Conformer and w2v-BERT have depthwise convolutions; the tiny w2v-BERT gets the adapter its fine-tuning
# recipe adds, so that the adapter's frame arithmetic is exercised)
_TINY_EXTRA = {
    "data2vec-audio": dict(_TINY_CNN, num_conv_pos_embeddings=2, conv_pos_kernel_size=5),
    "wav2vec2-conformer": dict(_TINY_CNN, conv_depthwise_kernel_size=3),
    "wav2vec2-bert": dict(conv_depthwise_kernel_size=3, output_hidden_size=32, add_adapter=True,
                          num_adapter_layers=1, adapter_kernel_size=3, adapter_stride=2, mask_time_prob=0.0),
}


def tiny_config(model_type: str, feat_extract_norm: str = "layer"):
    """A tiny random architecture of `model_type`: hidden 32, 2 layers; CNN types get conv_dim 32 x 7 (320x
    downsampling), w2v-BERT takes 160-dim log-mel rows (20 ms each) and halves them in its adapter."""
    from transformers import AutoConfig

    extra = _TINY_EXTRA.get(model_type, _TINY_CNN)
    if model_type != "wav2vec2-bert":
        extra = dict(extra, feat_extract_norm=feat_extract_norm, do_stable_layer_norm=feat_extract_norm == "layer")
    return AutoConfig.for_model(model_type, **_TINY, **extra)


def make_tiny_checkpoint(directory: Path, model_type: str = "wav2vec2", feat_extract_norm: str = "layer",
                         seed: int = 0, preprocessor: dict | None = None) -> Path:
    """Save a tiny randomly initialised base model (no CTC head) like a pre-trained hub checkpoint."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(model_type, feat_extract_norm))
    directory = Path(directory)
    model.save_pretrained(directory)
    if preprocessor is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    return directory


def cpu_learner(prepared: Path, checkpoint: str, config, *, step_seconds: float = float("inf")):
    """(prepared language "xx", a CPU Learner of `checkpoint` fine-tuned by `config`, its training data), all
    seeded 0 — what the training-step tests start from."""
    import torch

    from crossling.batching import training_data
    from crossling.finetune import Learner, make_optimizer
    from crossling.models import load_for_finetuning, load_tokenizer, resolve
    from crossling.prepared import open_prepared

    data = open_prepared(prepared, "xx")
    model, spec = load_for_finetuning(resolve(checkpoint), len(data.vocab), config, seed=0)
    training = training_data(data, load_tokenizer(data.vocab_file), model.config, config, seed=0)
    learner = Learner(model=model, optimizer=make_optimizer(model, config), spec=spec, device="cpu",
                      scaler=torch.amp.GradScaler("cpu", enabled=False), step_seconds=step_seconds)
    return data, learner, training
