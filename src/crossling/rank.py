"""Rank checkpoints for a language before fine-tuning any: a seeded sample of the prepared train audio
(bounded by seconds) -> each checkpoint's frozen hidden states -> transferability scores per layer with
bootstrap uncertainty -> a `RankRecord` (crossling.rankrecord; JSON at paths.rank_record_path)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import crossling
from crossling import paths
from crossling.errors import ConfigError, DataError, ModelError
from crossling.manifest import Utterance
from crossling.progress import Track, no_progress
from crossling.rankrecord import (
    BOOTSTRAP_REPLICATES,
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    CheckpointScores,
    EstimatorScore,
    RankRecord,
    read_record,
    write_record,
)
from crossling.transferability import (
    ProbeFit,
    ProbeRecipe,
    ctc_forced_alignment,
    fit_probe,
    logme_resampled,
    narrow_threads,
    uniform_alignment,
)

log = logging.getLogger(__name__)

LAYER_CHOICES = ("all", "last")
HELDOUT_FRACTION = 0.25
#: The wav2vec2-family CNN: a 400-sample receptive field every 320 samples (20 ms frames at 16 kHz).
RECEPTIVE_FIELD, FRAME_STRIDE = 400, 320
#: Padded audio per forward pass when extracting (layer-norm checkpoints batch; a LARGE model's 24 layers
#: of 60 s hold ~0.3 GB of hidden states).
EXTRACT_BATCH_SECONDS = 60.0


@dataclass(frozen=True)
class RankOptions:
    """What `rank_language` scores and how (the command's flags)."""

    data: Path
    language: str
    models: tuple[str, ...]
    layers: str = "all"
    budget_seconds: float = 300.0
    seed: int = 0
    device: str = "auto"
    estimator: str = DEFAULT_ESTIMATOR
    bootstrap: int = BOOTSTRAP_REPLICATES
    threads: int | None = None
    probe: ProbeRecipe = field(default_factory=ProbeRecipe)
    compare: bool = False  # compute every estimator, not only `estimator` (to validate them against runs)

    @property
    def estimators(self) -> frozenset[str]:
        return frozenset(ESTIMATORS) if self.compare else frozenset({self.estimator})

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("--models: name at least one checkpoint to rank")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"--models lists a checkpoint twice: {' '.join(self.models)}")
        _choice("--layers", self.layers, LAYER_CHOICES)
        _choice("--estimator", self.estimator, ESTIMATORS)
        if not self.budget_seconds > 0:
            raise ConfigError(f"--budget-seconds must be > 0 (seconds of train audio to score on), got {self.budget_seconds}")
        if self.bootstrap < 20:
            raise ConfigError(f"--bootstrap must be >= 20 replicates for a 95 % interval, got {self.bootstrap}")
        if self.probe.steps < 1:
            raise ConfigError(f"--probe-steps must be >= 1, got {self.probe.steps}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")


def _choice(flag: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r} is not valid; choose one of {', '.join(choices)}")


# --- the sample ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The utterances scored, their waveforms and label ids, the probe's train / held-out split, and the
    bootstrap's draws (replicates x utterances counts; the same for every checkpoint)."""

    utterances: tuple[Utterance, ...]
    waveforms: tuple[np.ndarray, ...]
    labels: tuple[tuple[int, ...], ...]
    train: tuple[int, ...]
    heldout: tuple[int, ...]
    draws: np.ndarray
    heldout_draws: np.ndarray

    @property
    def audio_seconds(self) -> float:
        return sum(u.duration for u in self.utterances)


def nominal_frames(num_samples: int) -> int:
    return max((num_samples - RECEPTIVE_FIELD) // FRAME_STRIDE + 1, 0)


def sample_utterances(utterances: Sequence[Utterance], labels: Sequence[Sequence[int]], budget_seconds: float,
                      seed: int) -> list[int]:
    """Indices of a seeded random subset of at most `budget_seconds` of audio, in drawn order, among the
    utterances whose labels fit a CTC path at 20 ms frames."""
    from crossling.batching import ctc_min_frames

    order = np.random.default_rng([seed, 0]).permutation(len(utterances))
    chosen, total = [], 0.0
    for index in order.tolist():
        utterance = utterances[index]
        if ctc_min_frames(labels[index]) > nominal_frames(utterance.num_samples) or not labels[index]:
            continue
        if total + utterance.duration > budget_seconds:
            break
        chosen.append(index)
        total += utterance.duration
    return chosen


def draw_sample(data, options: RankOptions, track: Track = no_progress) -> Sample:
    """The scored sample of a prepared language (`crossling.prepared.PreparedLanguage`)."""
    from crossling.models import load_tokenizer
    from crossling.prepared import load_audio

    utterances = data.split("train")
    tokenizer = load_tokenizer(data.vocab_file)
    labels = [tuple(tokenizer(u.text).input_ids) for u in utterances]
    chosen = sample_utterances(utterances, labels, options.budget_seconds, options.seed)
    if len(chosen) < 4:
        raise DataError(f"{paths.manifest_path(data.root, data.language, 'train')}: only {len(chosen)} train "
                        f"utterance(s) fit in --budget-seconds {options.budget_seconds:g}; ranking needs at least 4")
    picked = [utterances[i] for i in chosen]
    waveforms = tuple(load_audio(data.root, u) for u in track(picked, len(picked), "reading audio"))
    rng = np.random.default_rng([options.seed, 1])
    heldout = max(1, round(HELDOUT_FRACTION * len(chosen)))
    split = rng.permutation(len(chosen))
    return Sample(utterances=tuple(picked), waveforms=waveforms, labels=tuple(labels[i] for i in chosen),
                  train=tuple(sorted(split[heldout:].tolist())), heldout=tuple(sorted(split[:heldout].tolist())),
                  draws=_draws(rng, len(chosen), options.bootstrap), heldout_draws=_draws(rng, heldout, options.bootstrap))


def _draws(rng: np.random.Generator, count: int, replicates: int) -> np.ndarray:
    """`replicates` bootstrap resamples of `count` items, as counts per item."""
    return rng.multinomial(count, np.full(count, 1.0 / count), size=replicates)


# --- one checkpoint ------------------------------------------------------------------------------------


def load_frozen(model: str, vocab_size: int, seed: int, device: str):
    """Any checkpoint crossling fine-tunes (random init drawn from `seed`), in eval mode -> (model, InputSpec)."""
    from crossling.config import TrainConfig
    from crossling.models import load_for_finetuning, resolve

    loaded, spec = load_for_finetuning(resolve(model), vocab_size, TrainConfig(), seed)
    return loaded.to(device).eval(), spec


def hidden_states(model, spec, waveforms: Sequence[np.ndarray], device: str) -> list[np.ndarray]:
    """(layers + 1, frames, dim) hidden states of each utterance: index 0 is the transformer's input, i
    the output of layer i. The one place a model's input is made (`frontend.model_input`: waveform or
    log-mel), so every architecture plugs in here. Checkpoints that take an attention mask and whose outputs
    do not depend on padding run as one padded batch, exact because padded frames are masked; the others
    one utterance at a time (group norm spans the padding; see `frontend.padding_invariant`)."""
    from crossling.frontend import model_input, padding_invariant
    from crossling.models import frames_for_samples

    inputs = [model_input(w, spec) for w in waveforms]
    samples = [len(w) for w in waveforms]
    base = getattr(model, model.base_model_prefix)
    if spec.use_attention_mask and padding_invariant(model.config):
        states = _forward(base, spec, inputs, samples, device)
    else:
        states = [_forward(base, spec, [x], [n], device)[0] for x, n in zip(inputs, samples, strict=True)]
    return [states[row][:, : frames_for_samples(model.config, n)] for row, n in enumerate(samples)]


def _forward(base, spec, inputs: Sequence[np.ndarray], samples: Sequence[int], device: str) -> np.ndarray:
    """(batch, layers + 1, frames, dim) hidden states of right-padded model inputs, under the attention
    mask when the checkpoint takes one."""
    import torch

    from crossling.frontend import input_name, pad_inputs, valid_input_length

    values, mask = pad_inputs(inputs, [valid_input_length(spec, n) for n in samples], spec.padding_value)
    masked = {"attention_mask": mask.to(device)} if spec.use_attention_mask else {}
    with torch.inference_mode():
        return _stacked(base(**{input_name(spec): values.to(device)}, **masked, output_hidden_states=True))


def _stacked(output) -> np.ndarray:
    """(batch, layers + 1, frames, dim) from a model output's hidden states."""
    import torch

    return torch.stack(output.hidden_states, dim=1).float().cpu().numpy()


def _extract(model, spec, waveforms: Sequence[np.ndarray], device: str, layers: str,
             track: Track, name: str) -> list[np.ndarray]:
    """Hidden states of every utterance, in length-sorted batches of at most EXTRACT_BATCH_SECONDS."""
    from crossling.batching import length_sorted_batches

    batches = length_sorted_batches([len(w) / 16_000 for w in waveforms], EXTRACT_BATCH_SECONDS)
    features: list = [None] * len(waveforms)
    for batch in track(batches, len(batches), f"{name}: hidden states"):
        for index, states in zip(batch, hidden_states(model, spec, [waveforms[i] for i in batch], device), strict=True):
            features[index] = _select(states, layers)
    return features


def score_checkpoint(model_name: str, sample: Sample, classes: int, options: RankOptions, device: str,
                     track: Track = no_progress) -> CheckpointScores:
    """Load `model_name`, compute its hidden states on the sample and score them with the estimators asked for."""
    started = time.monotonic()
    model, spec = load_frozen(model_name, classes, options.seed, device)
    with narrow_threads(model.config.hidden_size):
        features = _extract(model, spec, sample.waveforms, device=device, layers=options.layers, track=track,
                            name=model_name)
    model_type, dim = model.config.model_type, features[0].shape[2]
    del model
    extract_seconds = time.monotonic() - started
    estimates = _estimates(features, sample, classes, options, device)
    score_seconds = time.monotonic() - started - extract_seconds
    log.info("%s: %s", model_name, ", ".join(f"{e.estimator} {e.score:.4f} (layer {e.layer})" for e in estimates))
    return CheckpointScores(checkpoint=model_name, model_type=model_type, dim=dim, layers=features[0].shape[0],
                            extract_seconds=extract_seconds, score_seconds=score_seconds, estimates=estimates)


def _select(states: np.ndarray, layers: str) -> np.ndarray:
    return states if layers == "all" else states[-1:]


def _estimates(features, sample: Sample, classes: int, options: RankOptions, device: str) -> tuple[EstimatorScore, ...]:
    """The estimators `options` asks for (`RankOptions.estimators`), in ESTIMATORS order. An utterance
    with fewer frames than its labels need (coarser frames than 20 ms) is left out of the probe and
    aligned uniformly."""
    from crossling.batching import ctc_min_frames

    wanted = options.estimators
    fits = np.array([ctc_min_frames(labels) <= f.shape[1] for f, labels in zip(features, sample.labels, strict=True)])
    uniform = [uniform_alignment(f.shape[1], labels) for f, labels in zip(features, sample.labels, strict=True)]
    scores = {}
    if "logme" in wanted:
        scores["logme"] = _timed(lambda: _logme_score("logme", features, uniform, classes, sample.draws))
    if wanted & {"logme-probe", "probe-loss", "probe-cer"}:
        scores.update(_probe_estimates(features, sample, classes, options, device=device, fits=fits, uniform=uniform))
    return tuple(scores[name] for name in ESTIMATORS if name in wanted)


def _probe_estimates(features, sample: Sample, classes: int, options: RankOptions, device: str, fits,
                     uniform) -> dict[str, EstimatorScore]:
    """probe-loss, probe-cer and logme-probe from one linear CTC probe."""
    started = time.monotonic()
    train = [i for i in sample.train if fits[i]]
    if not train:
        raise ModelError(f"no training utterance of the probe has as many frames as its transcript needs "
                         f"({len(sample.train)} tried): this checkpoint's frames are too coarse for CTC here")
    probe = fit_probe(features, sample.labels, train=train, heldout=sample.heldout, classes=classes,
                      recipe=options.probe, seed=options.seed, device=device)
    probe_seconds = time.monotonic() - started
    heldout = {"probe": probe, "fits": fits[list(sample.heldout)], "draws": sample.heldout_draws,
               "seconds": probe_seconds}
    loss = _probe_score("probe-loss", probe.heldout_loss, **heldout)
    cer = _probe_score("probe-cer", probe.heldout_errors, **heldout)
    scores = {"probe-loss": loss, "probe-cer": cer}
    if "logme-probe" in options.estimators:
        aligned = _probe_alignment(features, sample, probe, layer=loss.layer, uniform=uniform, fits=fits)
        scores["logme-probe"] = _timed(lambda: _logme_score("logme-probe", features, aligned, classes, sample.draws),
                                       extra=probe_seconds)
    return scores


def _timed(compute, extra: float = 0.0) -> EstimatorScore:
    """`compute()` with its wall time (plus `extra`, time spent on what it builds on) as its seconds."""
    started = time.monotonic()
    score = compute()
    return replace(score, seconds=time.monotonic() - started + extra)


def _logme_score(name: str, features, frame_labels, classes: int, draws: np.ndarray) -> EstimatorScore:
    """LogME of every layer on all utterances; bootstrap replicates at the best layer."""
    everything = np.ones((1, len(features)))
    by_layer = [float(logme_resampled([f[layer] for f in features], frame_labels, classes, everything)[0])
                for layer in range(features[0].shape[0])]
    best = int(np.argmax(by_layer))
    replicates = logme_resampled([f[best] for f in features], frame_labels, classes, draws)
    return EstimatorScore(estimator=name, layer=best, score=by_layer[best], by_layer=tuple(by_layer),
                          replicates=tuple(replicates.tolist()), seconds=0.0)


def _probe_score(name: str, per_utterance: np.ndarray, *, probe: ProbeFit, fits: np.ndarray, draws: np.ndarray,
                 seconds: float) -> EstimatorScore:
    """Minus (held-out total / held-out characters) per layer; replicates re-weight held-out utterances.
    Held-out utterances too short for this model's frames count for nothing."""
    labels = np.where(fits, probe.heldout_labels, 0).astype(np.float64)
    values = np.where(fits[None, :], per_utterance, 0.0)
    by_layer = -values.sum(axis=1) / labels.sum()
    best = int(np.argmax(by_layer))
    replicates = -(draws @ values[best]) / np.maximum(draws @ labels, 1.0)
    return EstimatorScore(estimator=name, layer=best, score=float(by_layer[best]), by_layer=tuple(by_layer.tolist()),
                          replicates=tuple(replicates.tolist()), seconds=seconds)


def _probe_alignment(features, sample: Sample, probe: ProbeFit, layer: int, uniform, fits) -> list[np.ndarray]:
    """Frame labels (blank = 0) from the CTC forced alignment of the probe at `layer` (uniform where the
    utterance has too few frames for a CTC path)."""
    return [ctc_forced_alignment(probe.heads.log_probs(f[layer:layer + 1])[0], labels) if fit else fallback
            for f, labels, fit, fallback in zip(features, sample.labels, fits, uniform, strict=True)]


# --- the command ---------------------------------------------------------------------------------------


def rank_language(options: RankOptions, out: Path | str | None = None, track: Track = no_progress) -> RankRecord:
    """Score every checkpoint of `options` on the language's sample, write the record to `out` (default
    `paths.rank_record_path(data, language)`; '-' is standard output, see crossling.atomic) and return it."""
    crossling.short_openmp_spin()  # before torch loads, as fine-tuning does
    import torch

    from crossling.evaluate import pick_device
    from crossling.prepared import open_prepared

    data = open_prepared(options.data, options.language)
    device = pick_device(options.device)
    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        started = time.monotonic()
        sample = draw_sample(data, options, track)
        sample_seconds = time.monotonic() - started
        scored = tuple(score_checkpoint(m, sample, len(data.vocab), options, device=device, track=track)
                       for m in options.models)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    record = RankRecord(
        language=options.language, data=str(options.data), seed=options.seed, budget_seconds=options.budget_seconds,
        audio_seconds=round(sample.audio_seconds, 3), utterances=len(sample.utterances),
        heldout_utterances=len(sample.heldout), layers=options.layers, estimator=options.estimator, device=device,
        threads=threads, sample_seconds=sample_seconds, checkpoints=scored, bootstrap=options.bootstrap,
        probe_steps=options.probe.steps)
    write_record(record, out or paths.rank_record_path(options.data, options.language))
    return record


def rank_study(study, store_dir: Path, threads: int | None = 1, track: Track = no_progress,
               probe: ProbeRecipe | None = None, bootstrap: int = BOOTSTRAP_REPLICATES,
               compare: bool = False) -> dict[str, RankRecord]:
    """Rank a study's checkpoints on each of its languages (its prepared data, its first seed) with the
    default estimator (every one with `compare`), from frozen features only (no run is read), writing
    each record to `paths.store_rank_path`; a record already there for the same options is kept. One
    thread by default, as the demo's grid workers use."""
    from crossling.grid import open_store
    from crossling.sources import prepare_source

    prepared = prepare_source(study.data, study.languages, open_store(study, store_dir), track)
    records = {}
    for language in study.languages:
        options = RankOptions(data=prepared, language=language, models=tuple(study.checkpoints),
                              seed=study.seeds[0], threads=threads, probe=probe or ProbeRecipe(), bootstrap=bootstrap,
                              compare=compare)
        path = paths.store_rank_path(store_dir, language)
        records[language] = _kept(path, options) or rank_language(options, out=path, track=track)
    return records


def _kept(path: Path, options: RankOptions) -> RankRecord | None:
    """The record at `path` if it was made with `options` (else None: rank again)."""
    try:
        record = read_record(path) if path.is_file() else None
    except DataError as error:
        log.warning("ranking again: %s", error)
        return None
    same = record is not None and (
        tuple(c.checkpoint for c in record.checkpoints), record.seed, record.budget_seconds, record.layers,
        record.data, record.estimator, record.bootstrap, record.probe_steps) == (
        options.models, options.seed, options.budget_seconds, options.layers, str(options.data), options.estimator,
        options.bootstrap, options.probe.steps) and all(
        {e.estimator for e in c.estimates} >= options.estimators for c in record.checkpoints)
    return record if same else None
