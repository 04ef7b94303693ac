"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crossling.errors import CorruptArtifactError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it is renamed onto `target`.

    A crash inside the block leaves `target` untouched (old content or absent)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; artifacts get the usual permissions so a shared store stays readable.
    os.chmod(tmp_path, 0o666 & ~_current_umask())
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: Path, obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl_atomic(target: Path, rows: list[dict[str, Any]]) -> None:
    lines = (json.dumps(row, ensure_ascii=False) for row in rows)
    write_text_atomic(target, "".join(line + "\n" for line in lines))


def read_json(path: Path) -> Any:
    """Parse a JSON file; a corrupt one raises CorruptArtifactError naming the file, line and column."""
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise _corrupt(path, error.lineno, error) from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file (blank lines skipped); a corrupt line raises CorruptArtifactError naming it."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise _corrupt(path, line_number, error) from None
    return rows


def _corrupt(path: Path, line_number: int, error: json.JSONDecodeError) -> CorruptArtifactError:
    return CorruptArtifactError(f"{path}:{line_number}: not valid JSON ({error.msg}, column {error.colno})")
