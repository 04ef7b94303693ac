"""Fencing: while a claimed run executes, every write into its run directory first checks that the claim
is still current (`check_write`); an owner that lost its claim (paused past the heartbeat, taken over)
gets `ClaimLost` at its next write instead of writing a second result."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ClaimLost(Exception):
    """This process no longer holds the claim of the run it was writing (another process took it over)."""


@dataclass(frozen=True)
class Fence:
    """Writes under `directory` are allowed while `holds()` is True; `what` names the claim in errors."""

    directory: Path
    holds: Callable[[], bool]
    what: str


_fences: list[Fence] = []
_lock = threading.Lock()


@contextmanager
def fenced(directory: Path, holds: Callable[[], bool], what: str) -> Iterator[Fence]:
    """Fence every write under `directory` by `holds` for the duration of the block."""
    fence = Fence(Path(os.path.realpath(directory)), holds, what)
    with _lock:
        _fences.append(fence)
    try:
        yield fence
    finally:
        with _lock:
            _fences.remove(fence)


def _fence_of(target: Path) -> Fence | None:
    where = Path(os.path.realpath(target))
    with _lock:
        return next((f for f in _fences if where == f.directory or f.directory in where.parents), None)


def check_write(target: Path | str) -> None:
    """Raise `ClaimLost` if `target` lies in a fenced run directory whose claim is no longer held."""
    fence = _fence_of(Path(target))
    if fence is not None and not fence.holds():
        raise ClaimLost(f"{fence.what}: the claim was taken over by another process; not writing {target}")


def still_held(target: Path | str) -> bool:
    """False if `target` lies in a fenced directory whose claim is lost (for writes that must not raise)."""
    try:
        check_write(target)
    except ClaimLost:
        return False
    return True


class FencedLogFilter(logging.Filter):
    """Drops the records of a log file in a fenced run directory once the claim is lost, so that an old
    owner's lines never mix into the new owner's log."""

    def __init__(self, target: Path) -> None:
        super().__init__()
        self.target = Path(target)

    def filter(self, record: logging.LogRecord) -> bool:
        return still_held(self.target)
