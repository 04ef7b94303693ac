import math

import pytest

from crossling.config import TrainConfig
from crossling.schedule import FAIRSEQ_INIT_LR_SCALE, describe, learning_rate, stages

PEAK = 1e-3


def lr(step, **kw):
    return learning_rate(step, TrainConfig(learning_rate=PEAK, max_steps=1000, **kw))


def test_stages_split_the_steps_10_40_50():
    s = stages(TrainConfig(max_steps=4000))
    assert (s.warmup, s.hold, s.decay) == (400, 1600, 2000)


def test_linear_variant_boundaries():
    assert lr(0) == 0.0
    assert lr(50) == pytest.approx(PEAK / 2)
    assert lr(99) == pytest.approx(PEAK * 0.99)
    assert lr(100) == PEAK and lr(499) == PEAK
    assert lr(500) == PEAK
    assert lr(750) == pytest.approx(PEAK / 2)
    assert lr(1000) == 0.0 and lr(2000) == 0.0


def test_exponential_variant_boundaries():
    kw = {"schedule": "tri_stage_exponential", "final_lr_scale": 0.05}
    assert lr(0, **kw) == pytest.approx(PEAK * FAIRSEQ_INIT_LR_SCALE)
    assert lr(100, **kw) == PEAK and lr(499, **kw) == PEAK
    assert lr(750, **kw) == pytest.approx(PEAK * math.sqrt(0.05))
    assert lr(1000, **kw) == pytest.approx(PEAK * 0.05)
    assert lr(5000, **kw) == pytest.approx(PEAK * 0.05)


def test_schedule_is_monotone_within_stages():
    values = [lr(s) for s in range(1001)]
    assert all(a < b for a, b in zip(values[:100], values[1:101], strict=True))
    assert all(a > b for a, b in zip(values[500:-1], values[501:], strict=True))


def test_describe_names_the_variant():
    assert "linear" in describe(TrainConfig()) and "400" in describe(TrainConfig())
    assert "0.05x" in describe(TrainConfig(schedule="tri_stage_exponential"))
