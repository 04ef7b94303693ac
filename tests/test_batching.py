
import numpy as np

from crossling.batching import (
    BatchPlan,
    DataPosition,
    ctc_min_frames,
    filter_for_ctc,
    length_sorted_batches,
    pad_labels,
)
from crossling.frontend import normalize_waveform, pad_inputs
from crossling.manifest import Utterance


def utt(seconds, text="ab"):
    return Utterance(id=f"u{seconds}", audio="x.wav", num_samples=int(seconds * 16_000), text=text, sentence=text)


def test_ctc_needs_a_blank_between_repeated_labels():
    assert ctc_min_frames([]) == 0
    assert ctc_min_frames([3, 4, 5]) == 3
    assert ctc_min_frames([3, 3, 4, 4, 4]) == 5 + 3


def test_filter_counts_labels_longer_than_frames_and_long_audio():
    utterances = [utt(1.0), utt(0.1), utt(40.0), utt(0.2), utt(2.0)]
    labels = [[3] * 10, [3, 4] * 5, [3], [3, 3, 3, 3, 3], [4] * 2]
    frames = lambda samples: samples // 320  # noqa: E731  (50 frames per second)
    kept, skipped = filter_for_ctc(utterances, labels, frames, max_seconds=30.0)
    # 0.1 s = 5 frames < 10 labels; 0.2 s = 10 frames >= 5 labels but 5 repeats need 9 -> kept
    assert kept == [0, 3, 4]
    assert skipped == {"label_too_long": 1, "audio_too_long": 1}
    _, none = filter_for_ctc(utterances[:1], labels[:1], frames, 30.0)
    assert none == {"label_too_long": 0, "audio_too_long": 0}


def test_batches_respect_the_padded_seconds_budget_and_cover_everything():
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 6.0, size=200).tolist() + [25.0]
    batches = length_sorted_batches(durations, batch_seconds=20.0)
    assert sorted(i for b in batches for i in b) == list(range(201))
    for batch in batches:
        lengths = [durations[i] for i in batch]
        assert lengths == sorted(lengths)
        assert len(batch) == 1 or len(batch) * max(lengths) <= 20.0
    assert [201 - 1] in batches  # longer than the budget: alone


def test_batch_plan_is_seeded_and_resumable_across_epochs():
    durations = np.random.default_rng(1).uniform(0.5, 3.0, size=50).tolist()
    plan = BatchPlan(durations, 6.0, seed=3)
    position, stream = DataPosition(), []
    for _ in range(60):
        batch, position = plan.take(position)
        stream.append(batch)
    assert position.epoch >= 1  # crossed an epoch boundary
    epoch0 = plan.epoch_batches(0)
    assert stream[: len(epoch0)] == epoch0 and plan.epoch_batches(1) != epoch0
    # a fresh plan started from a saved position continues identically
    resumed, position = BatchPlan(durations, 6.0, seed=3), DataPosition()
    for _ in range(25):
        _, position = resumed.take(position)
    fresh = BatchPlan(durations, 6.0, seed=3)
    continued = []
    for _ in range(35):
        batch, position = fresh.take(position)
        continued.append(batch)
    assert continued == stream[25:]
    assert BatchPlan(durations, 6.0, seed=4).epoch_batches(0) != epoch0


def test_normalization_matches_the_hf_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    audio = (0.1 * np.random.default_rng(0).standard_normal(8000) + 0.05).astype(np.float32)
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(audio, sampling_rate=16_000).input_values[0]
    np.testing.assert_array_equal(normalize_waveform(audio), expected)


def test_padding_gives_bool_masks_and_ignored_labels():
    values, mask = pad_inputs([np.ones(3, np.float32), np.ones(5, np.float32)], [3, 5])
    assert values.shape == (2, 5) and mask.dtype.is_floating_point is False and str(mask.dtype) == "torch.bool"
    assert mask.sum().item() == 8 and values[0, 3:].abs().sum() == 0
    labels = pad_labels([[3, 4], [5]])
    assert labels.tolist() == [[3, 4], [5, -100]]
