"""Greedy CTC decoding: waveforms -> model inputs (waveform or log-mel) -> batched, length-sorted inference
-> argmax paths -> text.

The text rule is Wav2Vec2CTCTokenizer's (merge repeats, drop blanks, '|' -> space, strip), so a saved
model transcribed by plain transformers gives the same strings."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import numpy as np

from crossling.batching import length_sorted_batches
from crossling.frontend import (
    input_name,
    model_input,
    pad_features,
    pad_inputs,
    padding_invariant,
    valid_input_length,
)
from crossling.manifest import SAMPLE_RATE
from crossling.models import InputSpec, decoded_frames, feature_encoder, replaying
from crossling.progress import Track, no_progress

BLANK_ID = 0
# On CPU, batches of more audio than this push the CNN's activations out of the caches: 400 s batches
# decoded 2-3x slower than 10-30 s ones (bench/bench_eval.py); padding is masked, so outputs are the same.
CPU_BATCH_SECONDS = 16.0
WORD_DELIMITER = "|"


def path_to_text(path: Sequence[int], id_to_token: dict[int, str], unk_token: str = "<unk>") -> str:
    """One best path (frame-wise argmax ids) -> text: merge repeats, drop blanks, map ids to tokens."""
    merged = (token_id for token_id, _ in groupby(path) if token_id != BLANK_ID)
    tokens = (id_to_token.get(token_id, unk_token) for token_id in merged)
    return "".join(" " if token == WORD_DELIMITER else token for token in tokens).strip()


def best_paths(model, waveforms: Sequence[np.ndarray], spec: InputSpec, device: str = "cpu",
               batch_seconds: float = 400.0, autocast_dtype=None, lengths: Sequence[int] | None = None,
               track: Track = no_progress) -> list[list[int]]:
    """Frame-wise argmax ids of each waveform (cut to the frame count it gets alone), in input order.

    `waveforms` may read from disk when indexed (e.g. `prepared.SplitAudio`); `lengths` (samples) then
    orders them without reading. Batches are length-sorted to limit padding, and padding never changes
    an utterance's output (see `batch_logits`); models whose outputs depend on padding
    (`frontend.padding_invariant`) decode one utterance at a time."""
    import torch

    lengths = lengths if lengths is not None else [len(w) for w in waveforms]
    durations = [n / SAMPLE_RATE for n in lengths]
    if not device.startswith("cuda"):
        batch_seconds = min(batch_seconds, CPU_BATCH_SECONDS)
    if not padding_invariant(model.config):
        batch_seconds = 0.0  # each utterance alone: padding would change its last frames

    batches = length_sorted_batches(durations, batch_seconds)
    paths: list[list[int]] = [[] for _ in durations]
    model.eval()
    with torch.inference_mode():
        for batch in track(batches, len(batches), "decoding"):
            inputs = [model_input(waveforms[i], spec) for i in batch]
            samples = [lengths[i] for i in batch]
            with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                ids = batch_logits(model, inputs, spec, device, samples).argmax(dim=-1).cpu()
            for row, (index, n) in enumerate(zip(batch, samples, strict=True)):
                paths[index] = ids[row, : decoded_frames(model.config, n)].tolist()
    return paths


def batch_logits(model, inputs: Sequence[np.ndarray], spec: InputSpec, device: str,
                 samples: Sequence[int] | None = None):
    """CTC logits (batch, frames, vocab) of model inputs (`frontend.model_input`) of utterances of `samples`
    samples, right-padded; each utterance's frames are what it would get alone.

    A layer-norm CNN sees each frame's own samples only, and log-mel rows are computed per utterance, so
    the padded batch runs as is under an attention mask. A group-norm CNN normalises over the whole input,
    padding included, so its features are computed one utterance at a time and only the transformer runs
    batched (under the mask, which also keeps the zero-padded frames out of the positional convolution)."""
    samples = samples if samples is not None else [len(x) for x in inputs]
    valid = [valid_input_length(spec, n) for n in samples]
    values, mask = pad_inputs(inputs, valid, spec.padding_value)
    values, mask = values.to(device), mask.to(device)
    if spec.use_attention_mask:
        return model(**{input_name(spec): values, "attention_mask": mask}).logits
    if len(inputs) == 1:  # exactly as the checkpoint is used alone: no mask
        return model(input_values=values).logits
    encoder = feature_encoder(model)
    features = [encoder(values[row: row + 1, : len(waveform)])[0] for row, waveform in enumerate(inputs)]
    with replaying(encoder, pad_features(features, max(feature.shape[1] for feature in features))):
        return model(input_values=values, attention_mask=mask).logits


def transcribe(model, waveforms: Sequence[np.ndarray], spec: InputSpec, id_to_token: dict[int, str],
               **options) -> list[str]:
    """Greedy CTC transcripts of the waveforms, in input order (options as for `best_paths`)."""
    return [path_to_text(path, id_to_token) for path in best_paths(model, waveforms, spec, **options)]
