"""Seeded subsets: exactly N hours of training audio, and capped dev/test splits.

Pure functions over sequences of items with `duration` (seconds) and `speaker`; the caller may pass a lazy
iterator so that only as much audio as the budget needs gets decoded."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import TypeVar

from crossling.errors import DataError

T = TypeVar("T")


def seeded_order(items: Sequence[T], seed: int, key: Callable[[T], str]) -> list[T]:
    """`items` in a random order that depends only on `seed` and the items' keys (not on input order)."""
    ordered = sorted(items, key=key)
    random.Random(seed).shuffle(ordered)
    return ordered


def take_hours(ordered: Iterable[T], hours: float, what: str,
               max_hours_per_speaker: float | None = None) -> list[T]:
    """Items taken in order until their total reaches `hours`: the total lands in [N, N + one clip).

    With a per-speaker cap, a clip that would push its speaker past the cap is passed over. Too little
    audio is a DataError saying how many hours there are (`what` names the split in the message)."""
    if hours <= 0:
        raise DataError(f"train hours must be > 0, got {hours}")
    budget, cap = hours * 3600.0, None if max_hours_per_speaker is None else max_hours_per_speaker * 3600.0
    chosen: list[T] = []
    total = usable = 0.0
    per_speaker: dict[str, float] = defaultdict(float)
    for item in ordered:
        usable += item.duration
        if cap is not None and per_speaker[item.speaker] + item.duration > cap:
            continue
        chosen.append(item)
        per_speaker[item.speaker] += item.duration
        total += item.duration
        if total >= budget:
            return chosen
    raise DataError(_shortfall(what, hours, total, usable, max_hours_per_speaker))


def _shortfall(what: str, hours: float, total: float, usable: float, cap: float | None) -> str:
    message = (f"{what}: asked for {hours:g} h of training audio but only {usable / 3600:.4f} h "
               f"({usable:.1f} s) are usable")
    if cap is not None:
        message += f" ({total / 3600:.4f} h under the per-speaker cap of {cap:g} h)"
    return message + "; lower --train-hours or use a larger release"


def take_count(ordered: Iterable[T], max_items: int | None) -> list[T]:
    """The first `max_items` items of `ordered` (all of them when None); lazy like `take_hours`."""
    if max_items is None:
        return list(ordered)
    if max_items < 0:
        raise DataError(f"split cap must be >= 0, got {max_items}")
    return list(islice(ordered, max_items))


def eval_order(items: Sequence[T], seed: int | None, key: Callable[[T], str]) -> list[T]:
    """Order for picking capped dev/test items: as listed (seed None, i.e. the first K) or seeded."""
    return list(items) if seed is None else seeded_order(items, seed, key)
