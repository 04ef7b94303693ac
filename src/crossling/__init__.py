"""crossling: cross-lingual transfer studies of pre-trained self-supervised speech models."""

import os

__version__ = "0.1.0"


def prefer_sleeping_openmp_waits() -> None:
    """Ask OpenMP for sleeping, not spinning, idle threads (unless the user chose otherwise).

    On a shared CPU (a study grid, other jobs) spinning threads take the cores their busy siblings need:
    training steps ran 3-8x slower (BENCHMARKS.md). No computed value changes. libgomp reads the setting
    once, when torch loads it, so call this before torch is first imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
