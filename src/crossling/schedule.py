"""The tri-stage learning-rate schedule as a pure function of the step (warm-up, hold, decay).

'tri_stage_linear' (the study author's code): 0 -> peak linearly, hold, linear decay to 0.
'tri_stage_exponential' (fairseq): 0.01 x peak -> peak linearly, hold, exponential decay to final_lr_scale x peak."""

from __future__ import annotations

import math
from dataclasses import dataclass

from crossling.config import TrainConfig

#: fairseq's `init_lr_scale` default: warm-up starts at 1 % of the peak.
FAIRSEQ_INIT_LR_SCALE = 0.01


@dataclass(frozen=True)
class Stages:
    """Step counts of the three stages; they sum to the run's `max_steps`."""

    warmup: int
    hold: int
    decay: int


def stages(config: TrainConfig) -> Stages:
    """Split `max_steps` by the configured fractions (rounded; decay takes the remainder)."""
    warmup = round(config.warmup_fraction * config.max_steps)
    hold = round(config.hold_fraction * config.max_steps)
    return Stages(warmup=warmup, hold=hold, decay=max(config.max_steps - warmup - hold, 0))


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate of the update that follows `step` completed updates (0-based)."""
    s = stages(config)
    peak = config.learning_rate
    exponential = config.schedule == "tri_stage_exponential"
    if step < s.warmup:
        start = FAIRSEQ_INIT_LR_SCALE if exponential else 0.0
        return peak * (start + (1.0 - start) * step / s.warmup)
    if step < s.warmup + s.hold:
        return peak
    into_decay = min(step - s.warmup - s.hold, s.decay)
    progress = into_decay / s.decay if s.decay else 1.0
    if exponential:
        return peak * math.exp(math.log(config.final_lr_scale) * progress)
    return peak * (1.0 - progress)


def describe(config: TrainConfig) -> str:
    """A readable name of the schedule a run used, e.g. for the result record."""
    s = stages(config)
    end = f"{config.final_lr_scale:g}x peak (exponential)" if config.schedule == "tri_stage_exponential" else "0 (linear)"
    return (
        f"{config.schedule}: peak {config.learning_rate:g}, warm-up {s.warmup} / hold {s.hold} / "
        f"decay {s.decay} steps, decay to {end}"
    )
