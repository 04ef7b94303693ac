"""Child processes end with their parent: pool workers ask the kernel (Linux PR_SET_PDEATHSIG) for SIGKILL
when the process that started them dies, since a `kill -9` of crossling gives it no chance to stop them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
