"""One run: (checkpoint, prepared language, seed, recipe) -> a run directory with the fine-tuned model +
processor (HF format), hypotheses, scores, logs and result.json (written last). A periodic atomic resume
file (model, optimizer, step, RNG states, data position) lets a killed run resume exactly."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import crossling
from crossling import budget, devices, paths
from crossling.atomic import directory_kept_on_success, write_json_atomic
from crossling.batching import DataPosition, TrainingData, feature_cache, make_batch, training_data
from crossling.budget import RunOptions
from crossling.checkpoints import CheckpointWriter, frozen_digest, frozen_names, snapshot, trained_state
from crossling.config import TrainConfig
from crossling.environment import run_environment
from crossling.errors import ConfigError
from crossling.evaluate import evaluate_model, pick_device
from crossling.fence import FencedLogFilter
from crossling.metrics import TrainingRecorder, evaluation_due
from crossling.modelcard import CardFacts, write_model_card
from crossling.models import (
    FrozenFeatureCache,
    InputSpec,
    ModelSource,
    build_processor,
    load_for_finetuning,
    load_tokenizer,
    resolve,
)
from crossling.prefetch import WaveformPrefetcher
from crossling.prepared import PreparedLanguage, open_prepared
from crossling.progress import Track, no_progress
from crossling.records import (
    Collapse,
    LegacyIdentity,
    RunCost,
    RunIdentity,
    RunRecord,
    SplitScores,
    run_identity,
    same_run,
)
from crossling.registry import find_checkpoint
from crossling.rundir import check_outputs, exclusive, remove_own_temporaries, save_model_folder
from crossling.safeload import load_resume_file
from crossling.schedule import describe, learning_rate

# Before torch loads OpenMP (none of the crossling modules above imports torch at module level).
crossling.short_openmp_spin()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

log = logging.getLogger(__name__)

#: 3: frozen parameters left out (their digest kept); 2: the identity is a `RunIdentity` (all weights);
#: 1 (files named checkpoint.pt): the legacy identity dict.
RESUME_FORMAT = 3


@dataclass(frozen=True)
class TrainState:
    """Everything besides weights and optimizer that the loop carries from step to step."""

    step: int = 0
    position: DataPosition = field(default_factory=DataPosition)
    nonfinite_steps: int = 0
    overflow_steps: int = 0  # fp16: steps the loss scaler skipped (its normal search for a scale)
    audio_seconds: float = 0.0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # of all processes so far, up to their last resume file
    blank_streak: int = 0
    collapse_warned: bool = False
    last_loss: float = math.nan
    resumed_from: tuple[int, ...] = ()  # the steps at which this run was resumed


@dataclass(frozen=True)
class FinetuneJob:
    """One run to execute: its identity, and where its model (`resolve`-able) and prepared data are."""

    identity: RunIdentity
    model: str
    prepared: Path

    def owns(self, stored: RunIdentity | LegacyIdentity) -> bool:
        """Whether a resume file or result with identity `stored` is this run's."""
        return same_run(stored, self.identity, prepared=self.prepared, model=self.model)


@dataclass(frozen=True)
class Learner:
    """What one optimisation step needs: the model, its optimizer and loss scaler, and how its inputs are
    made (the checkpoint's input spec, the device, autocast, the frozen CNN's feature cache)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    spec: InputSpec
    device: str
    amp_dtype: torch.dtype | None = None
    cache: FrozenFeatureCache | None = None
    step_seconds: float = math.inf  # audio per forward/backward pass: the batch is accumulated over passes


def finetune(prepared: Path, language: str, model: str, *, out: Path, config: TrainConfig, seed: int = 0,
             device: str = "auto", track: Track = no_progress, options: RunOptions | None = None) -> RunRecord:
    """Fine-tune `model` on `language`, evaluate dev/test, save everything under `out`; returns the result
    record. Resumes from the run's resume file if present; a finished run returns its record unchanged."""
    identity = standalone_identity(open_prepared(prepared, language), model, seed, config)
    with exclusive(Path(out)):  # two `crossling finetune --out DIR` never both run
        return run_finetune(identity=identity, model=model, prepared=prepared, out=out, device=device, track=track,
                            options=options)


def run_finetune(*, identity: RunIdentity, model: str, prepared: Path, out: Path, device: str = "auto",
                 track: Track = no_progress, options: RunOptions | None = None) -> RunRecord:
    """The grid's run function: the run `identity` (built from the study), loading `model` and reading
    data from `prepared`, in the run directory `out`, with the operational `options` (memory and disk:
    `budget.RunOptions`)."""
    job, out = FinetuneJob(identity, model, Path(prepared)), Path(out)
    finished = _finished_record(out, job)
    if finished is not None:
        return finished
    resolve(model)  # a wrong --model fails here, before the run directory and its train.log exist
    check_outputs(out)
    with directory_kept_on_success(out):
        handler = _attach_log(out)
        remove_own_temporaries(out)
        try:
            return _run(job, out, pick_device(device), track, options or RunOptions())
        except BaseException:
            _remove_if_empty(paths.run_log_path(out))  # failed before logging anything: leave no trace
            raise
        finally:
            logging.getLogger("crossling").removeHandler(handler)
            handler.close()


def _remove_if_empty(path: Path) -> None:
    if path.is_file() and path.stat().st_size == 0:
        path.unlink()


def standalone_identity(data: PreparedLanguage, model: str, seed: int, config: TrainConfig) -> RunIdentity:
    """The identity of a run started by hand (`crossling finetune`): the data named by the fingerprint of
    the prepared files' content, a local checkpoint directory by its files' content, so that the run
    resumes wherever the project is moved (a study's runs are named by the study file's declarations)."""
    local = Path(model).expanduser()
    weights = None
    if find_checkpoint(model) is None and local.is_dir():
        model, weights = local.resolve().name, f"local:{directory_fingerprint(local)}"
    return run_identity(model=model, weights=weights, language=data.language, seed=seed, recipe=config,
                        data={"source": "prepared", "content": data.fingerprint()})


def directory_fingerprint(directory: Path) -> str:
    """16 hex digits of SHA-256 over the names and contents of a directory's visible files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(".")):
        with open(path, "rb") as handle:
            digest.update(path.name.encode() + b"\0" + hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def _run(job: FinetuneJob, out: Path, device: str, track: Track, options: RunOptions) -> RunRecord:
    started = time.monotonic()
    config, seed = job.identity.recipe, job.identity.seed
    seed_everything(seed)
    data = open_prepared(job.prepared, job.identity.language)
    source = resolve(job.model)
    tokenizer = load_tokenizer(data.vocab_file)
    model, spec = load_for_finetuning(source, len(data.vocab), config, seed)
    model.to(device)
    devices.reset_peak_memory(device)
    amp_dtype = autocast_dtype(config, device)
    training = training_data(data, tokenizer, model.config, config, seed)
    learner = Learner(model=model, optimizer=make_optimizer(model, config), spec=spec, device=device,
                      scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
                      amp_dtype=amp_dtype, cache=feature_cache(model, spec, config, training, amp_dtype),
                      step_seconds=step_seconds(model, config, device, options, amp_dtype))
    write_json_atomic(paths.run_config_path(out), _resolved_config(job.identity, source, learner))
    resume = ResumeFile(out, job)
    state = resume.restore(learner) or TrainState()
    devices.warn_nondeterminism(device, resumed=bool(state.resumed_from))
    previous_wall = state.wall_seconds
    recorder = TrainingRecorder(out, state.step, config.eval_every, config.max_steps,
                                lambda: _dev_scores(learner, data, config))

    def wall() -> float:
        return previous_wall + time.monotonic() - started

    try:
        state = train(learner, training, state, resume=resume, wall=wall, track=track, recorder=recorder)
    finally:
        resume.writer.join()  # no write of this run outlives it (nor its claim's fence)
    resume.wait()  # the last resume file is on disk before evaluation (a crash there resumes after training)
    scores, hypotheses = evaluate_model(model, spec, data, splits=("dev", "test"), out=out, device=device,
                                        batch_seconds=config.eval_batch_seconds, autocast_dtype=amp_dtype,
                                        track=track)
    recorder.final(state.step, scores["dev"])
    save_hf(final_weights(model, options, amp_dtype), build_processor(tokenizer, spec), paths.run_model_dir(out))
    record = result_record(job.identity, state, skipped=training.skipped, scores=scores,
                           blank_fraction=_blank_fraction(hypotheses["test"]), device=device, wall=wall())
    write_model_card(out, record, CardFacts(source_kind=source.kind, source_location=source.location,
                                            precision=_precision(learner), data=data.summary))
    write_json_atomic(paths.run_result_path(out), record.to_json())
    # the record now marks the run finished; the resume file (weights + Adam state) would only take space
    resume.remove()
    log.info("run done: test CER %s, %d steps", record.test_cer(), state.step)
    return record


def seed_everything(seed: int) -> None:
    """Seed every RNG the run draws from: python, numpy (SpecAugment masks), torch (init, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _dev_scores(learner: Learner, data: PreparedLanguage, config: TrainConfig) -> SplitScores:
    """Dev CER/WER of the model as it stands (for the training curve; writes no hypotheses)."""
    scores, _ = evaluate_model(learner.model, learner.spec, data, splits=("dev",), out=None, device=learner.device,
                               batch_seconds=config.eval_batch_seconds, autocast_dtype=learner.amp_dtype)
    return scores["dev"]


def train(learner: Learner, training: TrainingData, state: TrainState, *, resume: ResumeFile,
          wall: Callable[[], float], track: Track = no_progress,
          recorder: TrainingRecorder | None = None) -> TrainState:
    """The loop: batch -> lr(step) -> forward/backward -> clip -> Adam step; metrics after every step
    (`recorder`); a resume file periodically. The steps' results stay on the device and are read on the
    host together (`_settle`) every `LOG_EVERY` steps and before each resume file and dev evaluation: the
    loop's own bookkeeping never makes the host wait for the device."""
    config = resume.job.identity.recipe
    learner.model.train()
    steps = range(state.step, config.max_steps)
    position, pending = state.position, []
    with prefetching(training, learner) as reader:
        for step in track(steps, len(steps), "fine-tuning"):
            tick = time.monotonic()
            reader.ahead(position)  # this batch and the next, read while this step computes
            indices, position = training.plan.take(position)
            lr = learning_rate(step, config)
            outcome, learner = fitting_step(learner, training, indices, lr, config, waveform=reader.waveform)
            audio = sum(training.utterances[i].duration for i in indices)
            pending.append(PendingStep(step, position, outcome, lr, audio, seconds=time.monotonic() - tick))
            save = (step + 1) % config.checkpoint_every == 0 or step + 1 == config.max_steps or resume.writer.due()
            if save or _read_due(step, config):
                state = _settle(state, pending, config, recorder=recorder, model=learner.model)
                pending = []
            if save:  # after `_settle`: a resumed run keeps what was recorded up to its resume file
                state = replace(state, wall_seconds=wall())
                resume.save(learner, state)
    return state


#: Steps between host reads of the steps' results (and between progress lines in the log).
LOG_EVERY = 50


def _read_due(step: int, config: TrainConfig) -> bool:
    """Whether the results up to step `step` are read now: at a progress line, before a dev evaluation."""
    return step % LOG_EVERY == 0 or evaluation_due(step + 1, config.eval_every, config.max_steps)


@dataclass(frozen=True)
class PendingStep:
    """A step done whose results (`outcome`, on the device) have not been read yet."""

    step: int
    position: DataPosition
    outcome: StepOutcome
    learning_rate: float
    audio_seconds: float
    seconds: float


def _settle(state: TrainState, pending: list[PendingStep], config: TrainConfig, *,
            recorder: TrainingRecorder | None, model: nn.Module) -> TrainState:
    """The state after the `pending` steps, their results read with one host sync; each step is then
    logged and recorded as if it had been read when it was done."""
    if not pending:
        return state
    rows = torch.stack([torch.stack([p.outcome.loss.float(), p.outcome.blank_only.float(),
                                     p.outcome.grad_norm.float()]) for p in pending]).tolist()  # the one sync
    for done, (loss, blank_only, grad_norm) in zip(pending, rows, strict=True):
        state = _advance(state, StepDone(done.step, done.position, loss, bool(blank_only),
                                         audio_seconds=done.audio_seconds, seconds=done.seconds,
                                         overflow=loss == OVERFLOW), config)
        if recorder is not None:
            recorder.update(model, step=state.step, loss=loss, learning_rate=done.learning_rate, grad_norm=grad_norm)
    return state


@contextlib.contextmanager
def prefetching(training: TrainingData, learner: Learner):
    """A `WaveformPrefetcher` for the run (skipping utterances whose CNN features are cached), closed after."""
    cache = learner.cache
    reader = WaveformPrefetcher(training, learner.spec, needed=lambda i: cache is None or i not in cache.store)
    try:
        yield reader
    finally:
        reader.close()


#: The loss `train_step` reports for a step fp16's loss scaler skipped (an overflow, not a bad loss).
OVERFLOW = math.inf


class StepOutcome(NamedTuple):
    """What one update did, as 0-d tensors on the device (read by the host only at log intervals): the
    loss (nan: skipped as non-finite; `OVERFLOW`: fp16's loss scaler skipped it), whether the batch's
    greedy output was blank-only, the gradient norm before clipping (nan when the loss was not finite)."""

    loss: torch.Tensor
    blank_only: torch.Tensor
    grad_norm: torch.Tensor

    def read(self) -> tuple[float, bool, float]:
        """The outcome on the host (a sync: for tests and benchmarks, not the training loop)."""
        loss, blank_only, grad_norm = torch.stack([self.loss.float(), self.blank_only.float(),
                                                   self.grad_norm.float()]).tolist()
        return loss, bool(blank_only), grad_norm


def fitting_step(learner: Learner, training: TrainingData, indices: list[int], lr: float, config: TrainConfig,
                 waveform: Callable[[int], np.ndarray] | None = None) -> tuple[StepOutcome, Learner]:
    """`train_step` on the batch `indices` in passes of at most `learner.step_seconds` of audio; out of GPU
    memory, the step is retried with smaller passes (the learner returned carries the new cap)."""
    durations = [training.utterances[i].duration for i in indices]
    while True:
        try:
            passes = budget.micro_batches(durations, learner.step_seconds)
            batches = [make_batch(training, [indices[p] for p in group], learner.spec, learner.device,
                                  cache=learner.cache, read=waveform) for group in passes]
            return train_step(learner, batches, lr, config), learner
        except torch.OutOfMemoryError:
            learner.optimizer.zero_grad(set_to_none=True)
            batches = []
            devices.release_cached_memory(learner.device)
            learner = replace(learner, step_seconds=budget.smaller_cap(learner.step_seconds, sum(durations),
                                                                       max(durations)))


def train_step(learner: Learner, batch: dict | list[dict], lr: float, config: TrainConfig) -> StepOutcome:
    """One update on a batch, or on a batch in passes (micro-batches) whose gradients add up to the whole
    batch's. A non-finite loss or gradient leaves the weights and Adam's state untouched (loss = nan), as
    does fp16's loss scaler when it finds non-finite gradients (loss = `OVERFLOW`: it lowers its scale, as
    it is designed to). Decided on the device: no host sync, except one between passes of a micro-batched
    step (a non-finite pass ends the step there, so the later passes draw no SpecAugment masks or dropout
    and the random stream stays what it was)."""
    model, optimizer, scaler = learner.model, learner.optimizer, learner.scaler
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    passes = batch if isinstance(batch, list) else [batch]
    utterances = sum(len(part["frames"]) for part in passes)
    total, blank_only, finite = 0.0, None, None
    for index, part in enumerate(passes):
        if index and not bool(finite):  # the one sync of a micro-batched step, see above
            break
        share = len(part["frames"]) / utterances  # the CTC loss is a mean over utterances
        loss, blank = _forward(learner, part)
        blank_only = blank if blank_only is None else blank_only & blank
        finite = torch.isfinite(loss) if finite is None else finite & torch.isfinite(loss)
        scaler.scale(loss * share).backward()
        total = total + loss.detach() * share
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    update = finite & torch.isfinite(norm)
    overflow = _step_unless(learner, skip=~update, loss_finite=finite)
    nan = torch.full_like(total, math.nan)
    loss = torch.where(update, total, torch.where(overflow, torch.full_like(total, OVERFLOW), nan))
    return StepOutcome(loss, blank_only, torch.where(finite, norm.to(total.dtype), nan))


def _step_unless(learner: Learner, *, skip: torch.Tensor, loss_finite: torch.Tensor) -> torch.Tensor:
    """Adam's update unless the device flag `skip` is set: the fused kernel reads it on the device (its
    `found_inf`, what the loss scaler hands it), without a host sync. With fp16's scaler its scale is
    updated as it would be after `scaler.step`, except after a non-finite loss (no step was tried) -> whether
    the scaler backed off (an overflow)."""
    optimizer, scaler = learner.optimizer, learner.scaler
    if optimizer.defaults.get("fused"):
        optimizer.found_inf, optimizer.grad_scale = skip.float(), None
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale
    elif not bool(skip):  # an optimizer without a fused kernel cannot skip on the device
        optimizer.step()
    if not scaler.is_enabled():
        return torch.zeros_like(skip)
    scale, tracker = scaler._scale.clone(), scaler._growth_tracker.clone()  # torch keeps them private
    scaler.update()
    scaler._scale.copy_(torch.where(loss_finite, scaler._scale, scale))
    scaler._growth_tracker.copy_(torch.where(loss_finite, scaler._growth_tracker, tracker))
    return skip & loss_finite & (scaler._scale < scale)


def _forward(learner: Learner, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The CTC loss of one (micro-)batch under the run's autocast, and whether its greedy output is blank
    (a device flag)."""
    device_type = batch["labels"].device.type
    frames, features = batch.pop("frames"), batch.pop("features", None)
    replay = learner.cache.replay(features) if features is not None else contextlib.nullcontext()
    with replay, torch.autocast(device_type=device_type, dtype=learner.amp_dtype,
                                enabled=learner.amp_dtype is not None):
        output = learner.model(**batch)
    return output.loss, all_blank(output.logits, frames)


def all_blank(logits: torch.Tensor, frames: list[int]) -> torch.Tensor:
    """Whether every utterance's greedy output (its first `frames` frames) is blank (id 0), as a flag on the
    logits' device (the frame counts go there without blocking): no host sync."""
    ids = logits.argmax(-1)
    counts = devices.to_device(torch.tensor(frames), str(ids.device))
    inside = torch.arange(ids.shape[1], device=ids.device)[None, :] < counts[:, None]
    return ~(ids.ne(0) & inside).any()


@dataclass(frozen=True)
class StepDone:
    """What one training step did: where the data stream stands after it, its loss (nan: skipped as
    non-finite), whether its greedy output was blank-only, the audio it saw and the time it took."""

    step: int
    position: DataPosition
    loss: float
    blank_only: bool
    audio_seconds: float
    seconds: float
    overflow: bool = False


def _advance(state: TrainState, done: StepDone, config: TrainConfig) -> TrainState:
    """The state after step `done.step`; logs progress and warns once when output stays blank-only."""
    step, loss = done.step, done.loss
    finite = math.isfinite(loss) or done.overflow
    if done.overflow:
        log.info("step %d: fp16 gradient overflow, the loss scaler skipped the update", step)
    if not finite:
        log.warning("step %d: non-finite loss or gradient, update skipped", step)
    streak = state.blank_streak + 1 if done.blank_only else 0
    warn = streak >= config.collapse_patience and not state.collapse_warned
    if warn:
        log.warning("step %d: output has been blank-only for %d steps (collapse?); check the learning rate",
                    step, streak)
    if step % LOG_EVERY == 0 or step + 1 == config.max_steps:
        log.info("step %d lr %.3g loss %.4f blank-only %s", step, learning_rate(step, config), loss, done.blank_only)
    return replace(
        state, step=step + 1, position=done.position, nonfinite_steps=state.nonfinite_steps + (not finite),
        overflow_steps=state.overflow_steps + done.overflow,
        audio_seconds=state.audio_seconds + done.audio_seconds, train_seconds=state.train_seconds + done.seconds,
        blank_streak=streak, collapse_warned=state.collapse_warned or warn, last_loss=loss,
    )


# --- optimizer and precision -----------------------------------------------------------------------


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (the frozen feature encoder is left out), as torch's fused kernel
    where the device has one: one pass over all tensors instead of a Python loop per tensor (2-4x faster
    steps of the optimizer, same update up to float rounding)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in parameters) or None
    return torch.optim.Adam(parameters, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                            eps=config.adam_epsilon, weight_decay=config.weight_decay, fused=fused)


def autocast_dtype(config: TrainConfig, device: str) -> torch.dtype | None:
    """The recipe's precision on this device (`devices.choose_precision`): bf16 autocast where the GPU has
    it natively, fp16 (with the loss scaler) on older GPUs, fp32 on CPU, unless the recipe says otherwise."""
    precision = devices.choose_precision(config.precision, device, devices.capability_of(device))
    return getattr(torch, precision.autocast) if precision.autocast else None


def step_seconds(model: nn.Module, config: TrainConfig, device: str, options: RunOptions,
                 amp_dtype: torch.dtype | None) -> float:
    """The audio one forward/backward pass may hold (`budget.automatic_cap`); turns on gradient
    checkpointing when asked."""
    if options.gradient_checkpointing:
        budget.enable_checkpointing(model)
    return budget.automatic_cap(options, model_config=model.config.to_dict(), vocab_size=model.config.vocab_size,
                                longest_clip=config.max_utterance_seconds, device_bytes=devices.memory_bytes(device),
                                dtype=str(amp_dtype or torch.float32).removeprefix("torch."))


# --- the resume file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResumeFile:
    """A run's resume file (`paths.run_resume_path`): everything needed to continue exactly, as one dict
    written atomically, under the run's identity. The frozen parameters (the CNN feature encoder) are left
    out: a resumed run has them from the pre-trained checkpoint it loads, checked against their digest. A
    run interrupted before the file got its name left a `checkpoint.pt` (`paths.run_legacy_resume_path`);
    it is taken over when it is this run's. `writer` defaults to one due every `checkpoint_minutes`."""

    run_dir: Path
    job: FinetuneJob
    writer: CheckpointWriter | None = field(default=None, compare=False)
    _frozen: dict = field(default_factory=dict, compare=False, repr=False)  # the digest, computed once

    def __post_init__(self) -> None:
        if self.writer is None:
            minutes = self.job.identity.recipe.checkpoint_minutes
            object.__setattr__(self, "writer", CheckpointWriter(every_seconds=60.0 * minutes))

    @property
    def path(self) -> Path:
        return paths.run_resume_path(self.run_dir)

    def save(self, learner: Learner, state: TrainState) -> None:
        """Snapshot the learner and RNGs now; the file is written off the step (`checkpoints`)."""
        numpy_state = np.random.get_state()
        checkpoint = {
            "format": RESUME_FORMAT,
            "identity": self.job.identity.to_json(),
            "model": snapshot(trained_state(learner.model)),
            "frozen": self._frozen_facts(learner.model),
            "optimizer": snapshot(learner.optimizer.state_dict()),
            "scaler": snapshot(learner.scaler.state_dict()),
            "state": asdict(state),
            "rng": {
                "python": random.getstate(),
                "numpy": (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]),
                "torch": torch.get_rng_state(),
                "cuda": devices.cuda_rng_state(learner.device),  # this run's GPU only: resumable on any GPU
            },
            "threads": torch.get_num_threads(),
        }
        self.writer.write(self.path, checkpoint)

    def _frozen_facts(self, model: nn.Module) -> dict:
        if not self._frozen:
            self._frozen.update(names=frozen_names(model), sha256=frozen_digest(model))
        return dict(self._frozen)

    def wait(self) -> None:
        """Until the last resume file is on disk."""
        self.writer.wait()

    def restore(self, learner: Learner) -> TrainState | None:
        """Load the resume file into the learner and the RNGs -> its TrainState (None if there is none).
        The frozen parameters' digest is taken here, before training (their host copies stay off the steps)."""
        self._frozen_facts(learner.model)
        path = self._existing()
        if path is None:
            return None
        checkpoint = load_resume_file(path)  # never unpickles code: a crafted file is a clear error
        if not self.job.owns(_stored_identity(checkpoint, path)):
            raise ConfigError(f"{path} belongs to a different run (model, data, seed or recipe); use a new --out")
        self._check_frozen(learner.model, checkpoint, path)
        if path != self.path:
            os.replace(path, self.path)  # a legacy name: from now on the file is this run's resume file
        _load_into(learner, checkpoint, path)
        values = checkpoint["state"]
        state = TrainState(**{**values, "position": DataPosition(**values["position"]),
                              "resumed_from": tuple(values.get("resumed_from", ()))})
        log.info("resumed from %s at step %d", path, state.step)
        return replace(state, resumed_from=(*state.resumed_from, state.step))

    def _check_frozen(self, model: nn.Module, checkpoint: dict, path: Path) -> None:
        """Refuse a resume file whose run froze other weights than the pre-trained checkpoint now gives."""
        stored = checkpoint.get("frozen")
        if stored is None:  # format 2: every weight is in the file
            return
        found = self._frozen_facts(model)
        if found != stored:
            raise ConfigError(
                f"{path}: the frozen parameters of {self.job.model!r} ({len(found['names'])} tensors, the CNN "
                f"feature encoder) are not those this run was trained with (expected SHA-256 {stored['sha256']}, "
                f"found {found['sha256']}): the pre-trained checkpoint changed since the resume file was "
                f"written, so the run cannot resume exactly; restore its weights, or start the run anew with a "
                f"new --out")

    def remove(self) -> None:
        self.writer.wait()
        self.path.unlink(missing_ok=True)

    def _existing(self) -> Path | None:
        for path in (self.path, paths.run_legacy_resume_path(self.run_dir)):
            if path.is_file():
                return path
        return None


def _stored_identity(checkpoint: dict, path: Path) -> RunIdentity | LegacyIdentity:
    if checkpoint.get("format") in (2, RESUME_FORMAT):
        return RunIdentity.from_json(checkpoint["identity"], f"{path} identity")
    if checkpoint.get("format") == 1 and isinstance(checkpoint.get("identity"), dict):
        return LegacyIdentity(checkpoint["identity"])
    raise ConfigError(f"{path} is not a crossling resume file of a known format; use a new --out")


def _load_into(learner: Learner, checkpoint: dict, path: Path) -> None:
    missing, unexpected = learner.model.load_state_dict(checkpoint["model"], strict=False)
    left_out = checkpoint["frozen"]["names"] if "frozen" in checkpoint else []
    if sorted(missing) != left_out or unexpected:
        raise ConfigError(f"{path}: its weights are not this run's model's (missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]}); use a new --out")
    learner.optimizer.load_state_dict(checkpoint["optimizer"])
    learner.scaler.load_state_dict(checkpoint["scaler"])
    rng = checkpoint["rng"]
    random.setstate(_as_tuples(rng["python"]))
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    devices.restore_cuda_rng(rng["cuda"], learner.device)
    if checkpoint["threads"] != torch.get_num_threads():
        log.warning("resuming with %d threads, resume file written with %d: results may differ in the last digits",
                    torch.get_num_threads(), checkpoint["threads"])


def _as_tuples(value):
    """`random.setstate` wants the nested tuples it gave out (a save/load round trip may yield lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


# --- outputs ---------------------------------------------------------------------------------------


def save_hf(model: nn.Module, processor, target: Path) -> None:
    """Model + processor in Hugging Face format, built in a temporary sibling and renamed into place."""

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        # preprocessor_config.json + tokenizer files, the layout every transformers version reads
        # (transformers 5's processor_config.json makes Wav2Vec2Processor.from_pretrained fail on 4.x)
        processor.feature_extractor.save_pretrained(staging)
        # tokenizer_config.json then names the processor class, as ProcessorMixin.save_pretrained writes it:
        # AutoProcessor reads it there for model types it has no mapping of (data2vec-audio, ...)
        processor.tokenizer._set_processor_class(type(processor).__name__)
        processor.tokenizer.save_pretrained(staging)

    save_model_folder(target, write)


def result_record(identity: RunIdentity, state: TrainState, *, skipped: dict[str, int],
                  scores: dict[str, SplitScores], blank_fraction: float, device: str, wall: float) -> RunRecord:
    """The run's record. `wall` counts every process the run took, each up to its last resume file (work
    lost to a kill after it is not counted)."""
    allocated, reserved = devices.peak_memory_mb(device)
    cost = RunCost(
        wall_seconds=wall, device=device, device_hours=wall / 3600.0, audio_seconds_trained=state.audio_seconds,
        audio_seconds_per_second=state.audio_seconds / state.train_seconds if state.train_seconds else 0.0,
        peak_memory_mb=allocated, peak_reserved_mb=reserved, threads=torch.get_num_threads(),
        facts=devices.facts_of(device),
    )
    counts = {"nonfinite_loss_steps": state.nonfinite_steps, "fp16_overflow_steps": state.overflow_steps}
    return RunRecord(
        identity=identity, steps=state.step, skipped={**skipped, **counts},
        scores=scores, cost=cost, collapse=Collapse(blank_only_fraction=blank_fraction, warned=state.collapse_warned),
        versions=run_environment(device),
        schedule=describe(identity.recipe), resumed_from=state.resumed_from,
    )


def final_weights(model: nn.Module, options: RunOptions, amp_dtype: torch.dtype | None) -> nn.Module:
    """The model to save: as trained (fp32), or with `half_precision_model` in the run's 16-bit dtype (bf16
    where the run used fp32: its range is fp32's). Scores are computed before, from the trained weights."""
    if not options.half_precision_model:
        return model
    return model.to(amp_dtype or torch.bfloat16)


def _blank_fraction(hypotheses: list[str]) -> float:
    return sum(not h for h in hypotheses) / len(hypotheses) if hypotheses else 0.0




def _resolved_config(identity: RunIdentity, source: ModelSource, learner: Learner) -> dict:
    """config.json of the run: its identity and how it was executed (what loaded, where, how)."""
    return {
        **identity.to_json(),
        "schedule": describe(identity.recipe),
        "source": asdict(source),
        "input": asdict(learner.spec),
        "device": learner.device,
        "precision": _precision(learner),
        "threads": torch.get_num_threads(),
        "ctc_loss_reduction": "mean",
        "feature_cache": learner.cache is not None,
        "max_step_seconds": learner.step_seconds if math.isfinite(learner.step_seconds) else None,
        "gradient_checkpointing": budget.is_checkpointing(learner.model),
    }


def _precision(learner: Learner) -> str:
    return str(learner.amp_dtype).removeprefix("torch.") if learner.amp_dtype else "fp32"


def _finished_record(out: Path, job: FinetuneJob) -> RunRecord | None:
    path = paths.run_result_path(out)
    if not path.is_file():
        return None
    record = RunRecord.read(path)
    if not job.owns(record.identity):
        raise ConfigError(f"{path}: {out} holds a finished run of another model, data, seed or recipe")
    log.info("%s is already finished; returning its record", out)
    return record


def _attach_log(out: Path) -> logging.Handler:
    """Send the package's INFO+ records to the run's train.log (appending across resumes)."""
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.run_log_path(out), encoding="utf-8")
    handler.addFilter(FencedLogFilter(paths.run_log_path(out)))  # silent once another process owns the run
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("crossling")
    package_logger.addHandler(handler)
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)  # otherwise INFO records never reach the file
    return handler
