"""Child processes end with their parent, since a `kill -9` of crossling gives it no chance to stop them:
pool workers ask the kernel (Linux PR_SET_PDEATHSIG) for SIGKILL when their parent dies; process trees
that others start for crossling (a local Ray instance's agents) are ended by a small reaper process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """A pool initializer: this process is killed when its parent dies (and exits now if it already has).
    Elsewhere than Linux it does nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not permitted here: the process outlives a killed parent, as before
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


# --- a reaper for process trees crossling starts but does not spawn itself (a local Ray instance) ----------


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process (Linux /proc)."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), fields[19])
            except (OSError, IndexError, ValueError):
                continue
    return table


def descendants(roots: list[int]) -> dict[int, str]:
    """`roots` and every process below them -> their start times (so a recycled pid is never mistaken)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, queue = {}, [pid for pid in roots if pid in table]
    while queue:
        pid = queue.pop()
        if pid not in found:
            found[pid] = table[pid][1]
            queue.extend(children.get(pid, []))
    return found


def reap_when_parent_ends(roots: list[int], grace_seconds: float = 5.0) -> None:
    """The reaper's loop: keep a list of the trees under `roots` while standard input stays open (the
    parent holds the other end); when it closes -- the parent ended, even by SIGKILL -- give the trees
    `grace_seconds` to end on their own, then SIGKILL what is left of them."""
    known: dict[int, str] = {}
    while not select.select([sys.stdin], [], [], 1.0)[0]:
        known.update(descendants(roots))
    known.update(descendants(roots))
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and _alive(known):
        time.sleep(0.2)
    for pid in _alive(known):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(known: dict[int, str]) -> list[int]:
    table = _process_table()
    return [pid for pid, started in known.items() if pid in table and table[pid][1] == started]


def start_reaper(roots: list[int]) -> subprocess.Popen:
    """A separate process that ends the process trees under `roots` once this process ends (however: its
    pipe closes); close its stdin to hand over after a normal shutdown."""
    code = f"from crossling.children import reap_when_parent_ends; reap_when_parent_ends({list(roots)!r})"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                                str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))})
