import os

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file
from tinydata_factory import make_prepared, make_tiny_checkpoint

from crossling import paths, sharing
from crossling.batching import feature_cache, training_data
from crossling.config import TrainConfig
from crossling.finetune import finetune
from crossling.models import load_for_finetuning, load_tokenizer, resolve
from crossling.prepared import SplitAudio, load_audio, open_prepared

TINY = TrainConfig(learning_rate=2e-3, max_steps=30, batch_seconds=8.0, checkpoint_every=15, collapse_patience=30)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(autouse=True)
def fresh_process_state():
    sharing.clear()
    yield
    sharing.clear()


def counting(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or original(*a, **k))
    return calls


def test_audio_is_read_once_per_process_and_again_after_the_file_changed(prepared, monkeypatch):
    reads = counting(monkeypatch, sharing, "load_audio")
    utterances = open_prepared(prepared, "xx").split("test")
    first = [a.copy() for a in SplitAudio(prepared, utterances)]
    again = list(SplitAudio(prepared, utterances))
    assert len(reads) == len(utterances)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(np.array_equal(a, load_audio(prepared, u)) for a, u in zip(again, utterances, strict=True))
    # a file rewritten in place (other content, later modification time) is read again
    path = prepared / utterances[0].audio
    soundfile.write(path, np.zeros(utterances[0].num_samples, dtype=np.float32), 16_000, subtype="PCM_16")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert not SplitAudio(prepared, utterances)[0].any() and len(reads) == len(utterances) + 1


def test_audio_budget_keeps_the_most_recent_waveforms(prepared):
    cache = sharing._AudioCache(max_bytes=1)
    utterances = open_prepared(prepared, "xx").split("test")[:3]
    for utterance in utterances:
        cache.read(prepared, utterance)
    assert list(cache.waveforms) == [sharing.audio_key(prepared, utterances[-1])]


def _cache(prepared, checkpoint, seed):
    data = open_prepared(prepared, "xx")
    model, spec = load_for_finetuning(resolve(str(checkpoint)), len(data.vocab), TINY, seed=seed)
    training = training_data(data, load_tokenizer(data.vocab_file), model.config, TINY, seed=seed)
    return feature_cache(model, spec, TINY, training)


def test_seeds_of_one_checkpoint_share_features_and_other_weights_do_not(prepared, tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "a", "wav2vec2")
    other = make_tiny_checkpoint(tmp_path / "b", "wav2vec2", seed=1)
    seed0, seed1 = _cache(prepared, checkpoint, 0), _cache(prepared, checkpoint, 1)
    assert seed0.store.shared is seed1.store.shared  # the heads differ, the frozen encoders are the same
    assert _cache(prepared, other, 0).store.shared is not seed0.store.shared
    with torch.no_grad():
        seed1.encoder.conv_layers[0].conv.weight.add_(1e-6)  # weights that differ in the last digits: not shared
    assert sharing.feature_store(seed1.encoder) is not seed0.store.shared


def test_random_init_seeds_do_not_share_features(prepared):
    a, b = _cache(prepared, "zoo-random", 0), _cache(prepared, "zoo-random", 1)
    assert a.store.shared is not b.store.shared


@pytest.mark.slow
def test_a_run_on_shared_features_equals_the_run_alone(prepared, tmp_path, monkeypatch):
    """Seed 1 after seed 0 in the same process (its features and audio come from seed 0's run) gives
    bit-identical weights, losses and transcripts to seed 1 in a fresh process state."""
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    finetune(prepared, "xx", str(checkpoint), seed=0, out=tmp_path / "s0", config=TINY, device="cpu")
    reads = counting(monkeypatch, sharing, "load_audio")
    shared = finetune(prepared, "xx", str(checkpoint), seed=1, out=tmp_path / "shared", config=TINY, device="cpu")
    assert reads == []  # nothing read or computed again
    sharing.clear()
    alone = finetune(prepared, "xx", str(checkpoint), seed=1, out=tmp_path / "alone", config=TINY, device="cpu")
    assert reads  # the fresh state did read
    assert shared.scores == alone.scores
    weights = [load_file(paths.run_model_dir(tmp_path / d) / "model.safetensors") for d in ("shared", "alone")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for split in ("dev", "test"):
        texts = [paths.run_hypotheses_path(tmp_path / d, split).read_text() for d in ("shared", "alone")]
        assert texts[0] == texts[1]
    losses = [[line.split(" loss ")[1].split()[0] for line in paths.run_log_path(tmp_path / d).read_text().splitlines()
               if " loss " in line] for d in ("shared", "alone")]
    assert losses[0] == losses[1] and len(losses[0]) >= 2
