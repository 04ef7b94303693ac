"""One run: (checkpoint, prepared language, seed, recipe) -> a run directory with the fine-tuned model +
processor (HF format), hypotheses, scores, logs and result.json (written last). A periodic atomic
checkpoint (model, optimizer, step, RNG states, data position) lets a killed run resume exactly."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import crossling
from crossling import paths
from crossling.atomic import atomic_path, read_json, write_json_atomic
from crossling.batching import (
    DataPosition,
    TrainingData,
    feature_cache,
    make_batch,
    open_prepared,
    training_data,
)
from crossling.config import TrainConfig
from crossling.errors import ConfigError
from crossling.evaluate import evaluate_model, pick_device
from crossling.models import (
    InputSpec,
    build_processor,
    load_for_finetuning,
    load_tokenizer,
    resolve,
)
from crossling.progress import Track, no_progress
from crossling.registry import find_checkpoint, weights_source
from crossling.schedule import describe, learning_rate

# Before torch loads OpenMP (none of the crossling modules above imports torch at module level).
crossling.short_openmp_spin()

import numpy as np  # noqa: E402
import torch  # noqa: E402

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainState:
    """Everything besides weights and optimizer that the loop carries from step to step."""

    step: int = 0
    position: DataPosition = field(default_factory=DataPosition)
    nonfinite_steps: int = 0
    audio_seconds: float = 0.0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # of all processes so far, up to their last checkpoint
    blank_streak: int = 0
    collapse_warned: bool = False
    last_loss: float = math.nan


def finetune(
    prepared: Path,
    language: str,
    model: str,
    seed: int,
    out: Path,
    config: TrainConfig,
    device: str = "auto",
    track: Track = no_progress,
) -> dict:
    """Fine-tune `model` on `language`, evaluate dev/test, save everything under `out`; returns the result
    record. Resumes from the run's checkpoint if present; a finished run returns its record unchanged."""
    out = Path(out)
    identity = run_identity(prepared, language, model, seed, config)
    finished = _finished_record(out, identity)
    if finished is not None:
        return finished
    handler = _attach_log(out)
    _remove_stale_temporaries(out)
    try:
        return _run(prepared, language, model, seed, out, config, pick_device(device), identity, track)
    finally:
        logging.getLogger("crossling").removeHandler(handler)
        handler.close()


def run_identity(prepared: Path, language: str, model: str, seed: int, config: TrainConfig) -> dict:
    """What makes a run this run; a checkpoint or result of another identity is never reused."""
    checkpoint = find_checkpoint(model)
    return {
        "model": model,
        "checkpoint": checkpoint.alias if checkpoint else model,
        "weights": weights_source(model),
        "language": language,
        "seed": seed,
        "prepared": str(Path(prepared).resolve()),  # the same data named from another directory is the same run
        "config": asdict(config),
        "schedule": describe(config),
    }


def _run(prepared, language, model_name, seed, out, config, device, identity, track) -> dict:
    started = time.monotonic()
    seed_everything(seed)
    data = open_prepared(prepared, language)
    source = resolve(model_name)
    tokenizer = load_tokenizer(data.vocab_file)
    model, spec = load_for_finetuning(source, len(data.vocab), config, seed)
    model.to(device)
    amp_dtype = autocast_dtype(config, device)
    training = training_data(data, tokenizer, model.config, config, seed)
    cache = feature_cache(model, spec, config, training)
    resolved = _resolved_config(identity, source, spec, device, amp_dtype, cache is not None)
    write_json_atomic(paths.run_config_path(out), resolved)
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    state = restore(paths.run_checkpoint_path(out), identity, model, optimizer, scaler) or TrainState()
    previous_wall = state.wall_seconds

    def wall() -> float:
        return previous_wall + time.monotonic() - started

    state = train(model, optimizer, scaler, training, cache, spec, config, state, out, identity, device,
                  amp_dtype, wall, track)
    scores, hypotheses = evaluate_model(model, spec, data, ("dev", "test"), out, device,
                                        config.eval_batch_seconds, amp_dtype, track)
    save_hf(model, build_processor(tokenizer, spec), paths.run_model_dir(out))
    record = result_record(identity, state, training.skipped, scores, hypotheses, device, wall())
    write_json_atomic(paths.run_result_path(out), record)
    # the record now marks the run finished; the checkpoint (weights + Adam state) would only take space
    paths.run_checkpoint_path(out).unlink(missing_ok=True)
    log.info("run done: test CER %s, %d steps", record["scores"]["test"]["cer"], state.step)
    return record


def seed_everything(seed: int) -> None:
    """Seed every RNG the run draws from: python, numpy (SpecAugment masks), torch (init, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model, optimizer, scaler, training: TrainingData, cache, spec: InputSpec, config: TrainConfig,
          state: TrainState, out: Path, identity: dict, device: str, amp_dtype, wall, track: Track) -> TrainState:
    """The loop: batch -> lr(step) -> forward/backward -> clip -> Adam step; checkpoint periodically."""
    model.train()
    steps = range(state.step, config.max_steps)
    for step in track(steps, len(steps), "fine-tuning"):
        tick = time.monotonic()
        indices, position = training.plan.take(state.position)
        batch = make_batch(training, indices, spec, device, cache)
        loss, blank_only = train_step(model, optimizer, scaler, batch, learning_rate(step, config), config,
                                      amp_dtype, cache)
        state = _advance(state, step, position, loss, blank_only, training, indices, tick, config)
        if state.step % config.checkpoint_every == 0 or state.step == config.max_steps:
            state = replace(state, wall_seconds=wall())
            save_checkpoint(paths.run_checkpoint_path(out), identity, model, optimizer, scaler, state)
    return state


def train_step(model, optimizer, scaler, batch: dict, lr: float, config: TrainConfig, amp_dtype, cache=None):
    """One update -> (loss, whether the batch's greedy output was blank-only); a non-finite loss or
    gradient leaves the weights untouched and returns loss = nan."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["labels"].device.type
    frames, features = batch.pop("frames"), batch.pop("features", None)
    replay = cache.replay(features) if features is not None else contextlib.nullcontext()
    with replay, torch.autocast(device_type=device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
        output = model(**batch)
    blank_only = all(not row[:n].any() for row, n in zip(output.logits.argmax(-1), frames, strict=True))
    if not torch.isfinite(output.loss):
        return math.nan, blank_only
    scaler.scale(output.loss).backward()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        scaler.update()
        return math.nan, blank_only
    scaler.step(optimizer)
    scaler.update()
    return float(output.loss.detach()), blank_only


def _advance(state: TrainState, step: int, position: DataPosition, loss: float, blank_only: bool,
             training: TrainingData, indices: list[int], tick: float, config: TrainConfig) -> TrainState:
    """The state after `step`; logs progress and warns once when output stays blank-only."""
    finite = math.isfinite(loss)
    if not finite:
        log.warning("step %d: non-finite loss or gradient, update skipped", step)
    streak = state.blank_streak + 1 if blank_only else 0
    warn = streak >= config.collapse_patience and not state.collapse_warned
    if warn:
        log.warning("step %d: output has been blank-only for %d steps (collapse?); check the learning rate",
                    step, streak)
    if step % 50 == 0 or step + 1 == config.max_steps:
        log.info("step %d lr %.3g loss %.4f blank-only %s", step, learning_rate(step, config), loss, blank_only)
    return replace(
        state, step=step + 1, position=position, nonfinite_steps=state.nonfinite_steps + (not finite),
        audio_seconds=state.audio_seconds + sum(training.utterances[i].duration for i in indices),
        train_seconds=state.train_seconds + time.monotonic() - tick, blank_streak=streak,
        collapse_warned=state.collapse_warned or warn, last_loss=loss,
    )


# --- data ------------------------------------------------------------------------------------------


def make_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (the frozen feature encoder is left out), as torch's fused kernel
    where the device has one: one pass over all tensors instead of a Python loop per tensor (2-4x faster
    steps of the optimizer, same update up to float rounding)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in parameters) or None
    return torch.optim.Adam(parameters, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                            eps=config.adam_epsilon, weight_decay=config.weight_decay, fused=fused)


def autocast_dtype(config: TrainConfig, device: str):
    """bf16 (or fp16 where bf16 is missing) autocast on GPU, fp32 on CPU, unless the recipe says otherwise."""
    on_gpu = device.startswith("cuda")
    if config.precision == "fp32" or (config.precision == "auto" and not on_gpu):
        return None
    if config.precision == "fp16" and not on_gpu:
        raise ConfigError("precision = 'fp16' needs a CUDA device; use fp32, bf16 or auto on CPU")
    if config.precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if config.precision == "bf16" else torch.float16


# --- checkpoint ------------------------------------------------------------------------------------


def save_checkpoint(path: Path, identity: dict, model, optimizer, scaler, state: TrainState) -> None:
    """Everything needed to continue exactly, as one dict, written atomically."""
    numpy_state = np.random.get_state()
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "identity": identity,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "state": {**asdict(state), "position": asdict(state.position)},
        "rng": {
            "python": random.getstate(),
            "numpy": (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "threads": torch.get_num_threads(),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def restore(path: Path, identity: dict, model, optimizer, scaler) -> TrainState | None:
    """Load the run's checkpoint into model/optimizer/RNGs -> its TrainState (None if there is none)."""
    if not path.is_file():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT or checkpoint["identity"] != identity:
        raise ConfigError(f"{path} belongs to a different run (model, data, seed or recipe); use a new --out")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    rng = checkpoint["rng"]
    random.setstate(_as_tuples(rng["python"]))
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if checkpoint["threads"] != torch.get_num_threads():
        log.warning("resuming with %d threads, checkpoint written with %d: results may differ in the last digits",
                    torch.get_num_threads(), checkpoint["threads"])
    values = checkpoint["state"]
    state = TrainState(**{**values, "position": DataPosition(**values["position"])})
    log.info("resumed from %s at step %d", path, state.step)
    return state


def _as_tuples(value):
    """`random.setstate` wants the nested tuples it gave out (a save/load round trip may yield lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


# --- outputs ---------------------------------------------------------------------------------------


def save_hf(model, processor, target: Path) -> None:
    """Model + processor in Hugging Face format, built in a temporary sibling and renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def result_record(identity: dict, state: TrainState, skipped: dict, scores: dict, hypotheses: dict,
                  device: str, wall: float) -> dict:
    """The run's record (see the brief's contract). `wall` counts every process the run took, each up to
    its last checkpoint (work lost to a kill after it is not counted)."""
    test_hyps = hypotheses["test"]
    return {
        "run": identity,
        "status": "done",
        "steps": state.step,
        "skipped": {**skipped, "nonfinite_loss_steps": state.nonfinite_steps},
        "scores": scores,
        "cost": {
            "wall_seconds": wall,
            "device": device,
            "device_hours": wall / 3600.0,
            "audio_seconds_trained": state.audio_seconds,
            "audio_seconds_per_second": state.audio_seconds / state.train_seconds if state.train_seconds else 0.0,
            "peak_memory_mb": peak_memory_mb(device),
            "threads": torch.get_num_threads(),
        },
        "collapse": {
            "blank_only_fraction": sum(not h for h in test_hyps) / len(test_hyps) if test_hyps else 0.0,
            "warned": state.collapse_warned,
        },
        "versions": {"crossling": crossling.__version__, "torch": torch.__version__,
                     "transformers": _transformers_version()},
    }


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _resolved_config(identity: dict, source, spec: InputSpec, device: str, amp_dtype, cached: bool) -> dict:
    return {
        **identity,
        "source": asdict(source),
        "input": asdict(spec),
        "device": device,
        "precision": str(amp_dtype).removeprefix("torch.") if amp_dtype else "fp32",
        "threads": torch.get_num_threads(),
        "ctc_loss_reduction": "mean",
        "feature_cache": cached,
    }


def _finished_record(out: Path, identity: dict) -> dict | None:
    path = paths.run_result_path(out)
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("run") != identity:
        raise ConfigError(f"{path}: {out} holds a finished run of another model, data, seed or recipe")
    log.info("%s is already finished; returning its record", out)
    return record


def _remove_stale_temporaries(out: Path) -> None:
    """A process killed with -9 leaves half-written files (a checkpoint can be GBs) and model staging
    directories behind; only one process works in a run directory, so they are garbage."""
    for leftover in out.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    for leftover in out.glob(f".{paths.run_model_dir(out).name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _attach_log(out: Path) -> logging.Handler:
    """Send the package's INFO+ records to the run's train.log (appending across resumes)."""
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(paths.run_log_path(out), encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("crossling")
    package_logger.addHandler(handler)
    if package_logger.getEffectiveLevel() > logging.INFO:
        package_logger.setLevel(logging.INFO)  # otherwise INFO records never reach the file
    return handler
