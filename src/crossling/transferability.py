"""Transferability estimators on frozen features: LogME evidence of frame features for character labels
(You et al. 2021), frame-to-character alignments (uniform, or CTC forced alignment), and a short linear
CTC probe. Inputs: one (frames, dim) array per utterance and its label ids; outputs: scores, higher better."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

#: Evidence maximisation stops when alpha/beta moves by less than this fraction (You et al.'s criterion).
LOGME_TOLERANCE = 1e-3
LOGME_MAX_ITERATIONS = 50
#: Bootstrap replicates stack per-utterance F^T F matrices below this size, else re-weight all frames.
PER_UTTERANCE_MOMENTS_MAX_BYTES = 512 * 2**20
#: Features at most this wide are scored on one thread (see `narrow_threads`).
NARROW_DIM = 256
_EPSILON = 1e-5  # keeps alpha and beta finite for a perfectly fitted or empty target (as in LogME's code)


@contextmanager
def narrow_threads(dim: int) -> Iterator[None]:
    """One torch thread and one BLAS thread while scoring features at most NARROW_DIM wide. Measured on this
    project's 2 shared cores: a 64x64 eigh ran 20x and a micro model's probe step 10-50x slower on two
    threads than on one (the threads wait on each other for tiny operations); LARGE models keep them all."""
    if dim > NARROW_DIM:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


# --- LogME -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moments:
    """What LogME needs of (features F, one-hot targets Y), optionally weighted per frame:
    F^T W F (dim x dim), F^T W Y (dim x classes), the weighted frame count per class and in all."""

    gram: np.ndarray
    cross: np.ndarray
    class_frames: np.ndarray
    frames: float


def moments(features: np.ndarray, labels: np.ndarray, classes: int, weights: np.ndarray | None = None) -> Moments:
    """Moments of frame `features` (frames, dim) with integer frame `labels` in [0, classes)."""
    f = np.asarray(features, dtype=np.float64)
    w = np.ones(len(f)) if weights is None else np.asarray(weights, dtype=np.float64)
    onehot = np.zeros((len(f), classes))
    onehot[np.arange(len(f)), labels] = 1.0
    weighted = f * w[:, None]
    return Moments(weighted.T @ f, weighted.T @ onehot, w @ onehot, float(w.sum()))


def utterance_moments(features: Sequence[np.ndarray], frame_labels: Sequence[np.ndarray], classes: int) -> Moments:
    """`moments` of each utterance, stacked along a leading utterance axis (so that a resample of
    utterances is a weighted sum: see `combine`)."""
    each = [moments(f, labels, classes) for f, labels in zip(features, frame_labels, strict=True)]
    return Moments(np.stack([m.gram for m in each]), np.stack([m.cross for m in each]),
                   np.stack([m.class_frames for m in each]), np.array([m.frames for m in each]))


def combine(stacked: Moments, counts: np.ndarray) -> Moments:
    """The moments of multisets of utterances: row r of `counts` (replicates x utterances) holds how many
    copies of each utterance multiset r has. The result has a leading replicate axis."""
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    return Moments(np.tensordot(counts, stacked.gram, axes=1), np.tensordot(counts, stacked.cross, axes=1),
                   counts @ stacked.class_frames, counts @ stacked.frames)


def logme_resampled(features: Sequence[np.ndarray], frame_labels: Sequence[np.ndarray], classes: int,
                    counts: np.ndarray) -> np.ndarray:
    """LogME of each row of `counts` (replicates x utterances: how often each utterance is drawn)."""
    dim = features[0].shape[1]
    with narrow_threads(dim):
        if len(features) * dim * (dim + classes) * 8 <= PER_UTTERANCE_MOMENTS_MAX_BYTES:
            return logme(combine(utterance_moments(features, frame_labels, classes), counts))
        frames = np.concatenate(features)  # too many utterances x dim^2 to stack: weight the frames instead
        labels = np.concatenate(frame_labels)
        lengths = [len(f) for f in features]
        return np.array([logme(moments(frames, labels, classes, np.repeat(row, lengths)))
                         for row in np.atleast_2d(counts)]).ravel()


def logme(m: Moments) -> np.ndarray | float:
    """The log maximum evidence per frame of a Bayesian linear model from features to each class's
    indicator, averaged over the classes that occur (You et al. 2021: MacKay's fixed-point update of the
    prior precision alpha and noise precision beta on the eigenvalues of F^T F, here for every class
    and every leading replicate axis at once). Higher: the features fit the labels linearly with less
    complexity. A float for one set of moments, an array for a stack of them."""
    gram, cross = np.asarray(m.gram), np.asarray(m.cross)
    single = gram.ndim == 2
    gram, cross = np.atleast_3d(gram[None] if single else gram), cross[None] if single else cross
    class_frames = np.atleast_2d(m.class_frames)
    frames = np.atleast_1d(np.asarray(m.frames, dtype=np.float64))[:, None]
    sigma, vectors = np.linalg.eigh(gram)  # (R, d), (R, d, d)
    kept = sigma > np.maximum(sigma.max(axis=1, keepdims=True), 0.0) * 1e-10
    sigma = np.where(kept, sigma, 0.0)[:, :, None]  # a dropped direction adds log(alpha), as it should
    projected2 = np.where(kept[:, :, None], np.einsum("rdk,rdc->rkc", vectors, cross) ** 2
                          / np.where(kept, sigma[:, :, 0], 1.0)[:, :, None], 0.0)  # (U^T y)^2 per direction
    residual_outside = np.maximum(class_frames - projected2.sum(axis=1), 0.0)
    present = class_frames > 0
    alpha, beta = _maximise_evidence(sigma, projected2, residual_outside, frames, present)
    shrink = (alpha / beta)[:, None, :]
    weight2 = (sigma * projected2 / (shrink + sigma) ** 2).sum(axis=1)
    residual2 = (projected2 / (1 + sigma / shrink) ** 2).sum(axis=1) + residual_outside
    dim = gram.shape[-1]
    log_det = np.log(alpha[:, None, :] + beta[:, None, :] * sigma).sum(axis=1)
    evidence = (dim / 2 * np.log(alpha) + frames / 2 * np.log(beta) - log_det / 2 - beta / 2 * residual2
                - alpha / 2 * weight2 - frames / 2 * math.log(2 * math.pi)) / frames
    mean = np.where(present, evidence, 0.0).sum(axis=1) / present.sum(axis=1)
    return float(mean[0]) if single else mean


def _maximise_evidence(sigma, projected2, residual_outside, frames, present) -> tuple[np.ndarray, np.ndarray]:
    """MacKay's fixed point for (alpha, beta) of every (replicate, class), from alpha = beta = 1."""
    alpha, beta = np.ones(residual_outside.shape), np.ones(residual_outside.shape)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # absent classes diverge; masked out
        for _ in range(LOGME_MAX_ITERATIONS):
            shrink = alpha / beta
            gamma = (sigma / (sigma + shrink[:, None, :])).sum(axis=1)
            weight2 = (sigma * projected2 / (shrink[:, None, :] + sigma) ** 2).sum(axis=1)
            residual2 = (projected2 / (1 + sigma / shrink[:, None, :]) ** 2).sum(axis=1) + residual_outside
            alpha = gamma / (weight2 + _EPSILON)
            beta = (frames - gamma) / (residual2 + _EPSILON)
            if np.all((np.abs(alpha / beta - shrink) / shrink <= LOGME_TOLERANCE)[present]):
                break
    return np.where(present, alpha, 1.0), np.where(present, beta, 1.0)


# --- frame labels without a trained model ------------------------------------------------------------


def uniform_alignment(frames: int, labels: Sequence[int]) -> np.ndarray:
    """Each of `frames` frames labelled with the character whose equal share of the utterance it falls in."""
    positions = (np.arange(frames) + 0.5) * len(labels) / frames
    return np.asarray(labels, dtype=np.int64)[np.minimum(positions.astype(np.int64), len(labels) - 1)]


def ctc_forced_alignment(log_probs: np.ndarray, labels: Sequence[int], blank: int = 0) -> np.ndarray:
    """The most likely CTC path of `labels` through `log_probs` (frames, classes) as one class per frame
    (the blank where the path emits none); needs at least `ctc_min_frames(labels)` frames."""
    states = np.full(2 * len(labels) + 1, blank, dtype=np.int64)
    states[1::2] = labels
    emit = log_probs[:, states]
    skip = np.zeros(len(states), dtype=bool)
    skip[3::2] = states[3::2] != states[1:-2:2]  # a label may follow the previous label without a blank
    score = np.full(len(states), -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((len(log_probs), len(states)), dtype=np.int64)
    for t in range(1, len(log_probs)):
        candidates = np.stack([score, np.r_[-np.inf, score[:-1]], np.where(skip, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)])
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + emit[t]
    state = len(states) - 1 if len(states) == 1 or score[-1] >= score[-2] else len(states) - 2
    path = np.empty(len(log_probs), dtype=np.int64)
    for t in range(len(log_probs) - 1, -1, -1):
        path[t] = state
        state -= back[t, state]
    return states[path]


# --- a short linear CTC probe ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRecipe:
    """A linear CTC head per layer on standardised frozen features, trained with Adam."""

    steps: int = 300
    learning_rate: float = 5e-3
    batch_utterances: int = 16


@dataclass(frozen=True)
class LinearHeads:
    """One linear CTC head per layer over standardised features (torch tensors on the probe's device)."""

    weights: object  # (layers, dim, classes)
    bias: object  # (layers, classes)
    mean: object  # (layers, dim)
    scale: object  # (layers, dim)

    def logits(self, padded):
        """(batch, layers, frames, dim) features -> (frames, batch, layers, classes) logits."""
        import torch

        x = (padded - self.mean[None, :, None]) / self.scale[None, :, None]
        return torch.einsum("bltd,ldk->tblk", x, self.weights) + self.bias

    def log_probs(self, features: np.ndarray) -> np.ndarray:
        """(layers, frames, classes) log-probabilities of one utterance's (layers, frames, dim) features."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(features).to(self.weights.device)[None]
            return torch.log_softmax(self.logits(x)[:, 0], dim=-1).permute(1, 0, 2).cpu().numpy()


@dataclass(frozen=True)
class ProbeFit:
    """Per layer and held-out utterance: CTC loss (summed over its labels) and greedy-decoding character
    edits; the held-out label counts; the trained heads (for alignment)."""

    heldout_loss: np.ndarray  # (layers, heldout utterances)
    heldout_errors: np.ndarray  # (layers, heldout utterances)
    heldout_labels: np.ndarray  # (heldout utterances,)
    heads: LinearHeads


def fit_probe(features: Sequence[np.ndarray], labels: Sequence[Sequence[int]], *, train: Sequence[int],
              heldout: Sequence[int], classes: int, recipe: ProbeRecipe, seed: int, device: str = "cpu") -> ProbeFit:
    """Train one linear CTC head per layer on the `train` utterances (each `features[i]` is (layers,
    frames, dim)) for `recipe.steps` Adam steps on seeded mini-batches, then score the `heldout` ones.
    Every utterance must have at least `ctc_min_frames` frames for its labels (callers filter)."""
    with narrow_threads(features[train[0]].shape[2]):
        return _fit_probe(features, labels, train=train, heldout=heldout, classes=classes, recipe=recipe, seed=seed,
                          device=device)


def _fit_probe(features, labels, *, train, heldout, classes: int, recipe: ProbeRecipe, seed: int,
               device: str) -> ProbeFit:
    import torch

    mean, scale = _standardiser([features[i] for i in train], device)
    layers, dim = features[train[0]].shape[0], features[train[0]].shape[2]
    weights = torch.zeros(layers, dim, classes, device=device, requires_grad=True)
    bias = torch.zeros(layers, classes, device=device, requires_grad=True)
    heads = LinearHeads(weights, bias, mean, scale)
    optimiser = torch.optim.Adam([weights, bias], lr=recipe.learning_rate)
    # linear decay to 0: the held-out score is read at the end, where a constant rate leaves it at the
    # mercy of the last few mini-batches
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1 - step / recipe.steps)
    for batch in _batches(train, recipe, seed):
        losses = _ctc_losses(heads, [features[i] for i in batch], [labels[i] for i in batch], device)
        optimiser.zero_grad()
        # per layer: loss per label of the batch; layers are independent, so their sum trains each alone
        (losses.sum(0) / sum(len(labels[i]) for i in batch)).sum().backward()
        optimiser.step()
        schedule.step()
    frozen = LinearHeads(weights.detach(), bias.detach(), mean, scale)
    with torch.no_grad():
        losses, errors = _heldout_scores(frozen, features, labels, heldout, device)
    return ProbeFit(losses, errors, np.array([len(labels[i]) for i in heldout]), frozen)


def _batches(train: Sequence[int], recipe: ProbeRecipe, seed: int) -> Iterator[list[int]]:
    """`recipe.steps` mini-batches: epochs over the train utterances, each in a fresh seeded order."""
    rng = np.random.default_rng([seed, 3])
    size = min(recipe.batch_utterances, len(train))
    order: list[int] = []
    for _ in range(recipe.steps):
        if len(order) < size:
            order += rng.permutation(train).tolist()
        yield order[:size]
        order = order[size:]


def _standardiser(features: Sequence[np.ndarray], device: str):
    """Per layer and dimension: mean and standard deviation over the training frames."""
    import torch

    frames = np.concatenate([f.astype(np.float64) for f in features], axis=1)  # (layers, frames, dim)
    mean, std = frames.mean(axis=1), frames.std(axis=1) + 1e-5
    return (torch.tensor(mean, dtype=torch.float32, device=device),
            torch.tensor(std, dtype=torch.float32, device=device))


def _ctc_losses(heads: LinearHeads, features: Sequence[np.ndarray], labels: Sequence[Sequence[int]], device: str):
    """(utterances, layers) CTC losses, summed over each utterance's labels."""
    import torch

    layers, longest = features[0].shape[0], max(f.shape[1] for f in features)
    padded = torch.zeros(len(features), layers, longest, features[0].shape[2], device=device)
    for row, f in enumerate(features):
        padded[row, :, : f.shape[1]] = torch.from_numpy(f).to(device)
    log_probs = torch.log_softmax(heads.logits(padded), dim=-1).reshape(longest, len(features) * layers, -1)
    targets = torch.tensor([c for label in labels for _ in range(layers) for c in label], dtype=torch.long)
    losses = torch.nn.functional.ctc_loss(
        log_probs, targets,
        input_lengths=torch.tensor([f.shape[1] for f in features for _ in range(layers)]),
        target_lengths=torch.tensor([len(label) for label in labels for _ in range(layers)]),
        blank=0, reduction="none", zero_infinity=True)
    return losses.reshape(len(features), layers)


def _heldout_scores(heads: LinearHeads, features, labels, heldout: Sequence[int], device: str):
    """(layers, utterances) held-out CTC losses and greedy-decoding character edit counts."""
    from rapidfuzz.distance import Levenshtein

    losses, errors = [], []
    for i in heldout:
        losses.append(_ctc_losses(heads, [features[i]], [labels[i]], device)[0].cpu().numpy())
        best = heads.log_probs(features[i]).argmax(axis=-1)  # (layers, frames)
        errors.append([Levenshtein.distance(greedy_collapse(path), list(labels[i])) for path in best])
    return np.array(losses).T, np.array(errors, dtype=np.float64).T


def greedy_collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """Greedy CTC output of a best path: repeats merged, blanks dropped."""
    out: list[int] = []
    previous = None
    for token in path:
        if token != previous and token != blank:
            out.append(int(token))
        previous = token
    return out
