"""Fault injection for tests: small or read-only file systems (real tmpfs mounts where the test runs as
root with mount rights, as in CI's container) — each test also has an injected-error twin that runs
everywhere."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def tmpfs(where: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A fresh tmpfs of `size` mounted at `where` (read-only if asked); skips the test where mounting
    is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)):
        pytest.skip("cannot mount a tmpfs here (needs root with mount rights)")
    try:
        if read_only and not _mount("-o", "remount,ro", str(where)):
            pytest.skip("cannot remount a tmpfs read-only here")
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
