"""Progress reporting without printing: library loops take a `Track` and the CLI passes tqdm."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

#: track(iterable, total, description) -> the same items, possibly drawing a progress bar.
Track = Callable[[Iterable[T], int, str], Iterable[T]]


def no_progress(items: Iterable[T], total: int, description: str) -> Iterable[T]:
    """The default `Track`: yields the items unchanged and shows nothing."""
    return items
