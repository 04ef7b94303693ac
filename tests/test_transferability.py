import math

import numpy as np
import pytest
from scipy import optimize

from crossling.transferability import (
    ProbeRecipe,
    combine,
    ctc_forced_alignment,
    fit_probe,
    greedy_collapse,
    logme,
    logme_resampled,
    moments,
    uniform_alignment,
    utterance_moments,
)


def direct_evidence(f: np.ndarray, y: np.ndarray, log_alpha: float, log_beta: float) -> float:
    """log p(y | F, alpha, beta) / n of Bayesian linear regression, from the matrices themselves."""
    n, d = f.shape
    alpha, beta = math.exp(log_alpha), math.exp(log_beta)
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    value = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * np.linalg.slogdet(a)[1]
             - beta / 2 * np.sum((y - f @ m) ** 2) - alpha / 2 * m @ m - n / 2 * math.log(2 * math.pi))
    return value / n


def maximised_evidence(f: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Mean over present classes of the evidence maximised by a general-purpose optimiser."""
    values = []
    for c in range(classes):
        y = (labels == c).astype(float)
        if not y.any():
            continue
        best = optimize.minimize(lambda p, y=y: -direct_evidence(f, y, *p), x0=[0.0, 0.0], method="Nelder-Mead",
                                 options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000})
        values.append(-best.fun)
    return float(np.mean(values))


def labelled_frames(rng, n=300, d=6, classes=4, signal=1.5):
    labels = rng.integers(classes, size=n)
    centres = rng.normal(size=(classes, d)) * signal
    return centres[labels] + rng.normal(size=(n, d)), labels


def test_logme_is_the_maximum_of_the_evidence():
    rng = np.random.default_rng(0)
    f, labels = labelled_frames(rng)
    labels[labels == 3] = 0  # class 3 absent: it must not count
    ours = logme(moments(f, labels, 4))
    assert ours == pytest.approx(maximised_evidence(f, labels, 4), abs=2e-4)


def test_logme_of_a_rank_deficient_matrix_is_the_evidence_too():
    rng = np.random.default_rng(1)
    f, labels = labelled_frames(rng, n=40, d=5, classes=3)
    f = np.hstack([f, f[:, :2]])  # 7 columns of rank 5: two prior directions see no data
    assert logme(moments(f, labels, 3)) == pytest.approx(maximised_evidence(f, labels, 3), abs=2e-4)


def test_informative_features_score_higher_than_noise():
    rng = np.random.default_rng(2)
    f, labels = labelled_frames(rng)
    noise = rng.normal(size=f.shape)
    assert logme(moments(f, labels, 4)) > logme(moments(noise, labels, 4)) + 0.05


def test_resampled_moments_equal_the_repeated_utterances():
    rng = np.random.default_rng(3)
    features = [rng.normal(size=(int(rng.integers(5, 12)), 4)) for _ in range(6)]
    labels = [rng.integers(3, size=len(f)) for f in features]
    counts = np.array([[2, 0, 1, 1, 0, 2], [1, 1, 1, 1, 1, 1], [0, 0, 6, 0, 0, 0]])
    stacked = utterance_moments(features, labels, 3)
    together = logme(combine(stacked, counts))
    for row, value in zip(counts, together, strict=True):
        repeated = [i for i, k in enumerate(row) for _ in range(k)]
        expected = logme(moments(np.concatenate([features[i] for i in repeated]),
                                 np.concatenate([labels[i] for i in repeated]), 3))
        assert value == pytest.approx(expected, rel=1e-6)  # same moments up to summation order
    assert logme_resampled(features, labels, 3, counts) == pytest.approx(together, rel=1e-12)


def test_frame_weights_path_matches_stacked_moments(monkeypatch):
    import crossling.transferability as t

    rng = np.random.default_rng(4)
    features = [rng.normal(size=(8, 3)) for _ in range(5)]
    labels = [rng.integers(2, size=8) for _ in range(5)]
    counts = np.array([[1, 2, 0, 1, 1], [5, 0, 0, 0, 0]])
    stacked = logme_resampled(features, labels, 2, counts)
    monkeypatch.setattr(t, "PER_UTTERANCE_MOMENTS_MAX_BYTES", 0)
    assert logme_resampled(features, labels, 2, counts) == pytest.approx(stacked, rel=1e-6)


def test_uniform_alignment_shares_frames_evenly():
    assert uniform_alignment(10, [5, 6]).tolist() == [5] * 5 + [6] * 5
    assert uniform_alignment(6, [3, 4, 5]).tolist() == [3, 3, 4, 4, 5, 5]
    assert sorted(set(uniform_alignment(2, [3, 4, 5, 6]).tolist())) == [4, 6]  # fewer frames than characters


def test_forced_alignment_follows_the_evidence_and_needs_blanks_between_repeats():
    path = [0, 3, 3, 0, 4, 0, 4, 4]
    log_probs = np.log(np.full((len(path), 5), 0.02))
    log_probs[np.arange(len(path)), path] = np.log(0.92)
    assert ctc_forced_alignment(log_probs, [3, 4, 4]).tolist() == path
    flat = np.log(np.full((3, 5), 0.2))  # no evidence: still a valid path, blank forced between the repeats
    assert ctc_forced_alignment(flat, [4, 4]).tolist() == [4, 0, 4]


def test_greedy_collapse_merges_repeats_and_drops_blanks():
    assert greedy_collapse([0, 3, 3, 0, 3, 4, 4, 0]) == [3, 3, 4]


def test_probe_learns_informative_features_and_not_noise():
    rng = np.random.default_rng(5)
    classes, centres = 12, rng.normal(size=(12, 8)) * 3
    labels, features = [], []
    for _ in range(24):
        label = rng.integers(3, classes, size=4).tolist()
        frames = np.repeat(centres[label], 4, axis=0) + rng.normal(size=(16, 8))
        features.append(np.stack([frames, rng.normal(size=frames.shape)]).astype(np.float32))  # layer 1: noise
        labels.append(label)
    fit = fit_probe(features, labels, train=list(range(18)), heldout=list(range(18, 24)), classes=classes,
                    recipe=ProbeRecipe(steps=150, learning_rate=3e-2), seed=0)
    per_char = fit.heldout_loss.sum(axis=1) / fit.heldout_labels.sum()
    errors = fit.heldout_errors.sum(axis=1) / fit.heldout_labels.sum()
    assert per_char[0] < 0.5 * per_char[1]
    assert errors[0] < 0.5 * errors[1]
    assert fit.heads.log_probs(features[0]).shape == (2, 16, classes)
