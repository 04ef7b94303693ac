"""The memory budget of a training step: what a step of given audio takes on the device (weights, gradients
and Adam state counted; activations measured on the meta device, so nothing is allocated), how much audio
one step may hold on a device of given memory, and a batch split into micro-batches within that cap; and
the operational options of a run (`RunOptions`: memory and disk, never part of its identity)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from crossling.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
#: The share of a GPU's memory a step may plan to use: the rest is for the CUDA context, the allocator's
#: fragmentation and the evaluation's batches (an OOM then lowers the cap further, see `smaller_cap`).
USABLE_FRACTION = 0.8
#: Clips in the measured batch: enough that per-clip costs dominate fixed ones.
MEASURED_CLIPS = 4


@dataclass(frozen=True, kw_only=True)
class StepMemory:
    """Bytes one training step holds: `state` (weights, gradients of the trained ones, Adam's two moments)
    plus `activations_per_second` for each second of audio in the step (clips `clip_seconds` long)."""

    state: int
    activations_per_second: float
    clip_seconds: float
    dtype: str
    checkpointing: bool = False
    parameters: int = 0  # all of the model's
    trained: int = 0  # those Adam updates (the frozen CNN left out)

    def bytes_for(self, step_seconds: float) -> float:
        return self.state + self.activations_per_second * step_seconds


def measure_step_memory(model_config: Mapping, *, vocab_size: int, clip_seconds: float, dtype: str = "float32",
                        frozen_cnn: bool = True, checkpointing: bool = False) -> StepMemory:
    """Build the CTC model of `model_config` (a config.json's values) on the meta device and run one
    training forward on `MEASURED_CLIPS` clips: the tensors autograd saves for backward are the step's
    activations. Weights in `dtype` approximate autocast's activations (it keeps a few ops in fp32);
    without SpecAugment, layer drop or padding, which change it little."""
    import torch

    from crossling import frontend

    model = _meta_model(model_config, vocab_size, dtype, checkpointing)
    if frozen_cnn:
        frontend.freeze_feature_encoder(model)  # a no-op for log-mel front ends (w2v-BERT)
    parameters = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # autocast keeps fp32 weights (and so fp32 gradients and Adam moments) plus a cached 16-bit copy
    copies = 0 if dtype == "float32" else torch.tensor([], dtype=getattr(torch, dtype)).element_size()
    state = parameters * (4 + copies) + trained * (4 + 4 + 4)
    saved = _saved_bytes(model, _meta_input(model.config.model_type, clip_seconds, getattr(torch, dtype)))
    return StepMemory(state=state, activations_per_second=saved / (MEASURED_CLIPS * clip_seconds),
                      clip_seconds=clip_seconds, dtype=dtype, checkpointing=checkpointing, parameters=parameters,
                      trained=trained)


def _meta_input(model_type: str, clip_seconds: float, dtype) -> dict:
    """The forward's keyword input for `MEASURED_CLIPS` clips: waveforms, or stacked log-mel rows."""
    import torch

    from crossling import frontend

    samples = int(clip_seconds * SAMPLE_RATE)
    if frontend.front_end(model_type) == frontend.LOG_MEL:
        rows, _ = frontend.log_mel_rows(samples)
        shape = (MEASURED_CLIPS, rows, frontend.MEL_BINS * frontend.MEL_STACK)
        return {"input_features": torch.zeros(shape, device="meta", dtype=dtype)}
    return {"input_values": torch.zeros(MEASURED_CLIPS, samples, device="meta", dtype=dtype)}


def _meta_model(model_config: Mapping, vocab_size: int, dtype: str, checkpointing: bool):
    import torch
    from transformers import AutoConfig, AutoModelForCTC

    from crossling.models import quiet_transformers

    quiet_transformers()
    values = {key: value for key, value in model_config.items() if key not in ("architectures", "transformers_version")}
    config = AutoConfig.for_model(**{**values, "vocab_size": vocab_size, "mask_time_prob": 0.0,
                                     "mask_feature_prob": 0.0, "layerdrop": 0.0})
    with torch.device("meta"):
        model = AutoModelForCTC.from_config(config).to(getattr(torch, dtype))
    if checkpointing:
        enable_checkpointing(model)
    return model.train()


def enable_checkpointing(model) -> None:
    """Recompute each transformer layer in backward (non-reentrant, RNG preserved: same gradients)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_checkpointing(model) -> bool:
    if hasattr(model, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(model.is_gradient_checkpointing)


def _saved_bytes(model, inputs: dict) -> int:
    """Bytes of the distinct tensors (views counted once, parameters left out) saved for backward."""
    import torch

    parameters = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        base = tensor if tensor._base is None else tensor._base
        if id(base) not in parameters and id(tensor) not in parameters:
            saved[id(base)] = base.numel() * base.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), _fused_attention():
        model(**inputs)
    return sum(saved.values())


@contextmanager
def _fused_attention():
    """Attention as a GPU (and a CPU) runs it: a fused kernel that keeps its output and log-sum-exp for
    backward, not the frames x frames scores, which torch's unfused path, its choice on the meta device,
    would keep."""
    import torch
    from torch.nn import functional

    unfused = functional.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]

    functional.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = unfused


def step_audio_cap(memory: StepMemory, device_bytes: float, *, longest_clip: float) -> float:
    """Seconds of audio one step may hold on a device of `device_bytes`; refused when not even one clip of
    `longest_clip` seconds fits (then only gradient checkpointing or a larger GPU helps)."""
    free = USABLE_FRACTION * device_bytes - memory.state
    cap = free / memory.activations_per_second if free > 0 else 0.0
    if cap < longest_clip:
        hint = "" if memory.checkpointing else "turn on gradient checkpointing, or "
        raise ConfigError(f"one {longest_clip:g} s clip needs {memory.bytes_for(longest_clip) / 2**30:.1f} GiB "
                          f"({memory.dtype}), more than {USABLE_FRACTION:.0%} of this GPU's "
                          f"{device_bytes / 2**30:.1f} GiB; {hint}use a GPU with more memory")
    return cap


def micro_batches(durations: Sequence[float], cap: float) -> list[list[int]]:
    """Positions 0..n-1 of a batch's utterances in consecutive groups of at most `cap` seconds each (a
    longer utterance alone); one group when the whole batch fits, so the step is today's step."""
    groups: list[list[int]] = [[]]
    held = 0.0
    for position, seconds in enumerate(durations):
        if groups[-1] and held + seconds > cap:
            groups.append([])
            held = 0.0
        groups[-1].append(position)
        held += seconds
    return groups


def smaller_cap(cap: float, step_seconds: float, longest: float) -> float:
    """The cap after an out-of-memory error in a step of `step_seconds`: half of what the step held (at
    least its longest utterance); refused when even that failed."""
    held = min(cap, step_seconds)
    if held <= longest:
        raise ConfigError(f"out of GPU memory with one {longest:g} s utterance per micro-batch; turn on gradient "
                          f"checkpointing or use a GPU with more memory")
    new = max(held / 2, longest)
    log.warning("out of GPU memory with %.0f s of audio per micro-batch: retrying the step with at most %.0f s", held, new)
    return new


@dataclass(frozen=True)
class RunOptions:
    """How a run keeps within its device's memory and its disk (operational: none changes the run's
    identity). `max_step_seconds`: audio per forward/backward pass, the recipe's batch then accumulated
    over several (None: chosen from the GPU's memory; no cap on CPU). `gradient_checkpointing`: recompute
    each layer's activations in backward instead of keeping them (about a third more compute).
    `half_precision_model`: the final model saved in 16 bits (half the disk)."""

    max_step_seconds: float | None = None
    gradient_checkpointing: bool = False
    half_precision_model: bool = False

    def __post_init__(self) -> None:
        if self.max_step_seconds is not None and not (math.isfinite(self.max_step_seconds) and self.max_step_seconds > 0):
            raise ConfigError(f"--max-step-seconds must be a positive number of seconds, got {self.max_step_seconds!r}")


def automatic_cap(options: RunOptions, *, model_config: Mapping, vocab_size: int, longest_clip: float,
                  device_bytes: float | None, dtype: str) -> float:
    """The audio per pass: the user's cap, else (on a GPU of `device_bytes`) what its memory allows by the
    meta-device measurement, else (CPU) none."""
    if options.max_step_seconds is not None:
        return options.max_step_seconds
    if device_bytes is None:
        return math.inf
    memory = measure_step_memory(model_config, vocab_size=vocab_size, clip_seconds=longest_clip, dtype=dtype,
                                 checkpointing=options.gradient_checkpointing)
    cap = step_audio_cap(memory, device_bytes, longest_clip=longest_clip)
    log.info("memory budget: %.1f GiB of weights, gradients and Adam + %.0f MiB per second of audio (%s, meta-device "
             "measurement): at most %.0f s of audio per pass on %.1f GiB", memory.state / 2**30,
             memory.activations_per_second / 2**20, dtype, cap, device_bytes / 2**30)
    return cap
