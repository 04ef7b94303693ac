"""crossling: cross-lingual transfer studies of pre-trained self-supervised speech models."""

import os

__version__ = "0.1.0"

# How long an idle OpenMP thread spins before it sleeps (GNU libgomp, which PyPI's torch wheels use;
# its default is 300 000). Measured by bench/bench_threads.py on a tiny model's training step: as fast as
# the default on an idle machine, and a median 2.25x faster than it with two other busy processes
# (BENCHMARKS.md).
OPENMP_SPIN_COUNT = "3000"


def short_openmp_spin() -> None:
    """Let idle OpenMP threads spin only briefly before sleeping (unless the user chose a wait policy).

    On a shared CPU (a study grid, other jobs) long-spinning threads take the cores their busy siblings
    need; sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs about 20 % on an idle machine instead. No computed
    value changes. libgomp reads the setting once, when torch loads it, so call this before torch is
    first imported."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPIN_COUNT)
