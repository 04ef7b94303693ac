"""Model front ends: a 16 kHz waveform -> what each CTC architecture's forward takes (a normalized waveform
for the CNN feature encoders of wav2vec2/HuBERT/WavLM/UniSpeech(-SAT)/data2vec-audio/Conformer; stacked
log-mel frames for w2v-BERT), padded batches with their masks, and the output frame counts of both kinds.

"Freeze the feature encoder" freezes the CNN over the waveform where there is one. w2v-BERT has none: its
log-mel front end has no parameters, and the feature projection after it is trained, as in Seamless and in
transformers' own fine-tuning recipe, so freezing is a no-op there (logged)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache

import numpy as np

log = logging.getLogger(__name__)

WAVEFORM, LOG_MEL = "waveform", "log-mel"
LOG_MEL_TYPES = frozenset({"wav2vec2-bert"})
# Feature encoders whose conv layers are each followed by a LayerNorm whatever the config says (data2vec's
# config has no feat_extract_norm at all); their frames depend on their own samples only.
ALWAYS_LAYER_NORM_TYPES = frozenset({"data2vec-audio"})
PADDING_SENSITIVE_TYPES = frozenset({"data2vec-audio", "wav2vec2-conformer"})

# The log-mel front end of SeamlessM4TFeatureExtractor: Kaldi fbank frames of 25 ms every 10 ms (no padding
# at the edges), stacked in pairs -> 160 values per 20 ms frame.
FBANK_WINDOW, FBANK_HOP, MEL_BINS, MEL_STACK = 400, 160, 80, 2


def front_end(model_type: str) -> str:
    """WAVEFORM or LOG_MEL: what an architecture takes as input."""
    return LOG_MEL if model_type in LOG_MEL_TYPES else WAVEFORM


def feature_norm(model_config) -> str:
    """'layer' or 'group' for the CNN feature encoder's normalization, 'none' where there is no CNN."""
    if front_end(model_config.model_type) == LOG_MEL:
        return "none"
    if model_config.model_type in ALWAYS_LAYER_NORM_TYPES:
        return "layer"
    return getattr(model_config, "feat_extract_norm", "group")


def takes_attention_mask(model_config) -> bool:
    """Layer-norm CNNs and log-mel front ends get a mask; group-norm CNNs were trained on zero-padded input
    without one (their normalization spans the padding), so they get none."""
    return feature_norm(model_config) in ("layer", "none")


def padding_invariant(model_config) -> bool:
    """Whether an utterance's outputs are the same padded in a batch as alone. Not so for transformers'
    data2vec-audio (its stack of positional convolutions carries the padded frames' values into the last
    real frames), Wav2Vec2-Conformer (its depthwise convolutions see the padding unmasked) and w2v-BERT with
    its adapter (the adapter's strided convolutions see the padded rows); decoding runs those one utterance
    at a time, as transformers' pipeline does, while training batches them as the transformers recipes do."""
    if model_config.model_type == "wav2vec2-bert":
        return not getattr(model_config, "add_adapter", False)
    return model_config.model_type not in PADDING_SENSITIVE_TYPES


def freeze_feature_encoder(model) -> bool:
    """Freeze the CNN over the waveform; False (nothing to freeze) for log-mel front ends."""
    if front_end(model.config.model_type) == LOG_MEL:
        log.info("%s has no CNN feature encoder (log-mel input): nothing to freeze", model.config.model_type)
        return False
    model.freeze_feature_encoder()
    return True


# --- frame arithmetic --------------------------------------------------------------------------------


def fbank_frames(num_samples: int) -> int:
    """Kaldi fbank frames of a waveform (25 ms windows every 10 ms, none past the end)."""
    return 0 if num_samples < FBANK_WINDOW else 1 + (num_samples - FBANK_WINDOW) // FBANK_HOP


def log_mel_rows(num_samples: int) -> tuple[int, int]:
    """(rows, valid rows) of the stacked log-mel input of one utterance: the extractor pads an odd frame
    count with one padding frame and masks the pair it ends up in."""
    frames = fbank_frames(num_samples)
    return -(-frames // MEL_STACK), frames // MEL_STACK


def adapter_frames(model_config, rows: int) -> int:
    """Frames after w2v-BERT's optional adapter (strided convolutions, padded by kernel // 2)."""
    if not getattr(model_config, "add_adapter", False):
        return rows
    kernel, stride = model_config.adapter_kernel_size, model_config.adapter_stride
    for _ in range(model_config.num_adapter_layers):
        rows = (rows + 2 * (kernel // 2) - kernel) // stride + 1
    return max(rows, 0)


def conv_frames(model_config, num_samples: int) -> int:
    """Frames of a CNN feature encoder (no padding: each layer maps L to floor((L - kernel) / stride) + 1)."""
    length = num_samples
    for kernel, stride in zip(model_config.conv_kernel, model_config.conv_stride, strict=True):
        length = max((length - kernel) // stride + 1, 0)
    return length


def valid_input_length(spec, num_samples: int) -> int:
    """How much of an utterance's model input is unmasked: samples, or valid stacked log-mel rows."""
    return log_mel_rows(num_samples)[1] if spec.features == LOG_MEL else num_samples


# --- model inputs ----------------------------------------------------------------------------------------


def input_name(spec) -> str:
    """The keyword the model's forward takes its input under."""
    return "input_features" if spec.features == LOG_MEL else "input_values"


def normalize_waveform(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole utterance, as `Wav2Vec2FeatureExtractor(do_normalize=True)`
    computes it for one unpadded input (same formula, so our inputs equal the pipeline's)."""
    return (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)


def model_input(audio: np.ndarray, spec) -> np.ndarray:
    """The model input of one waveform, as the checkpoint's feature extractor makes it for that waveform
    alone: the (normalized) samples, or the stacked log-mel rows (rows, 160)."""
    audio = np.asarray(audio, dtype=np.float32)
    if spec.features == LOG_MEL:
        extracted = log_mel_extractor(spec.padding_value)(audio, sampling_rate=16_000, return_tensors="np")
        return np.asarray(extracted["input_features"][0], dtype=np.float32)
    return normalize_waveform(audio) if spec.do_normalize else audio


@cache
def log_mel_extractor(padding_value: float):
    """transformers' SeamlessM4TFeatureExtractor (w2v-BERT's), the one saved with the fine-tuned model."""
    from transformers import SeamlessM4TFeatureExtractor

    return SeamlessM4TFeatureExtractor(feature_size=MEL_BINS, num_mel_bins=MEL_BINS, sampling_rate=16_000,
                                       padding_value=padding_value, stride=MEL_STACK)


def pad_inputs(inputs: Sequence[np.ndarray], valid_lengths: Sequence[int], padding_value: float = 0.0):
    """Right-pad per-utterance inputs (1-D samples or 2-D rows x values) along their first axis ->
    (float32 tensor [B, T, ...], bool mask [B, T] that is True on each utterance's first `valid` entries)."""
    import torch

    longest = max(len(x) for x in inputs)
    values = torch.full((len(inputs), longest, *inputs[0].shape[1:]), padding_value, dtype=torch.float32)
    mask = torch.zeros(len(inputs), longest, dtype=torch.bool)
    for row, (x, valid) in enumerate(zip(inputs, valid_lengths, strict=True)):
        values[row, : len(x)] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        mask[row, :valid] = True
    return values, mask


def pad_features(features: Sequence, frames: int):
    """Right-pad CNN outputs (channels, n) with zeros -> (batch, channels, frames), on their device."""
    import torch

    first = features[0]
    padded = torch.zeros(len(features), first.shape[0], frames, dtype=first.dtype, device=first.device)
    for row, feature in enumerate(features):
        padded[row, :, : feature.shape[1]] = feature
    return padded
