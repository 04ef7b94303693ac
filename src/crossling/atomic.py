"""Writing outputs without harming what crossling did not create: every file crossling writes goes through
`atomic_path`, which picks how by what the target is (see `output_kind`).

A regular file (or a new path) is replaced atomically: written to a temporary sibling, fsynced, renamed over
it. A symlink keeps being a link: its destination is written that way. A FIFO, socket or character device is
written in place (renaming over it would replace the device itself, as a rename over /dev/stdout once did).
`-` means standard output. A directory where a file is expected, and an OS refusal (read-only, full disk),
are `OutputError`s naming the target; the old content is then untouched and no temporary file is left."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crossling.errors import CorruptArtifactError, OutputError
from crossling.fence import check_write

STDOUT = "-"
#: In the name of every temporary file crossling makes, so that cleaning up never touches a user's file.
TEMPORARY_MARK = "crossling-"
#: How a target is written (see `output_kind`).
REPLACE, IN_PLACE, SOCKET, TO_STDOUT = "replace", "in place", "socket", "stdout"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_kind(target: Path | str) -> tuple[str, Path]:
    """(how to write `target`, the path to write): REPLACE a regular or new file (a symlink's
    destination); IN_PLACE for a FIFO or device, or a file reached through /proc (such as /dev/stdout
    redirected to a file, whose shell holds it open); SOCKET for a Unix socket; TO_STDOUT for '-'.
    A directory is an `OutputError`."""
    if str(target) == STDOUT:
        return TO_STDOUT, Path(STDOUT)
    target = Path(target)
    try:
        mode = os.stat(target).st_mode  # follows symlinks
    except FileNotFoundError:
        return REPLACE, Path(os.path.realpath(target))  # new, or a dangling link's destination
    except OSError as error:
        raise _output_error(target, error) from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"{target}: is a directory; expected a file name (or '-' for standard output)")
    if stat.S_ISSOCK(mode):
        return SOCKET, target
    if not stat.S_ISREG(mode) or _reached_through_proc(target):
        return IN_PLACE, target
    return REPLACE, Path(os.path.realpath(target))


def _reached_through_proc(target: Path) -> bool:
    """Whether `target`, or a link on the way to it, lies in /proc: another process's open file, such as
    /dev/stdout or /dev/fd/1 (links to /proc/self/fd/1) while the shell redirects it to a file."""
    path = os.path.abspath(target)
    for _ in range(40):  # the kernel's own limit on nested links
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if path.startswith("/proc/"):
            return True
        if not os.path.islink(path):
            return False
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    return False


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; when the block succeeds its content lands on `target` as
    `output_kind` says. A failure inside the block leaves `target` as it was (old content or absent)."""
    kind, destination = output_kind(target)
    check_write(destination)  # a run that lost its claim writes nothing more
    directory = destination.parent if kind == REPLACE else None
    tmp_path = _temporary(destination, directory)
    try:
        try:
            yield tmp_path
        except OSError as error:
            if _writing_failed(error, tmp_path):
                raise _output_error(Path(target), error) from None
            raise
        except Exception:  # a writer that hides the OS error (torch.save raises RuntimeError on a full disk)
            if (full := out_of_space(Path(target), tmp_path.parent)) is not None:
                raise full from None
            raise
        check_write(destination)  # again at the commit point: the block may have taken long
        try:
            _replace(tmp_path, destination) if kind == REPLACE else _deliver(tmp_path, kind, destination)
        except BrokenPipeError:
            raise  # a reader that stopped early (`| head`): the caller ends quietly
        except OSError as error:
            raise _output_error(Path(target), error) from None
    finally:
        tmp_path.unlink(missing_ok=True)


#: Errors of writing data (as opposed to e.g. reading an input inside the block).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def _writing_failed(error: OSError, tmp_path: Path) -> bool:
    """Whether an error raised inside the block is the temporary file's write failing."""
    return error.filename in (None, str(tmp_path)) and error.errno in _WRITE_ERRNOS


def _temporary(destination: Path, directory: Path | None) -> Path:
    """A new empty file beside `destination` (same filesystem, so the rename is atomic), or in the
    system's temporary folder for targets written in place."""
    try:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{destination.name}.{TEMPORARY_MARK}", suffix=".tmp", dir=directory)
    except OSError as error:
        raise _output_error(destination, error) from None
    os.close(fd)
    return Path(name)


def is_temporary_of(name: str, target: Path) -> bool:
    """Whether the file `name` is a temporary file `atomic_path` made for `target` (this version's
    `.<target>.crossling-XXXXXXXX.tmp`, or an earlier version's `.<target>.XXXXXXXX.tmp`)."""
    pattern = rf"\.{re.escape(Path(target).name)}\.({TEMPORARY_MARK})?[a-z0-9_]{{8}}\.tmp"
    return re.fullmatch(pattern, name) is not None


def _replace(tmp_path: Path, destination: Path) -> None:
    # mkstemp creates 0600 files: an existing file keeps its mode, a new one gets the umask's, so a
    # shared store stays readable.
    try:
        mode = stat.S_IMODE(os.stat(destination).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    os.chmod(tmp_path, mode)
    with open(tmp_path, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp_path, destination)


def _deliver(tmp_path: Path, kind: str, destination: Path) -> None:
    """Copy the finished temporary file into a target that must not be replaced."""
    with open(tmp_path, "rb") as source:
        if kind == TO_STDOUT:
            sys.stdout.flush()
            shutil.copyfileobj(source, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        elif kind == SOCKET:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.connect(str(destination))
                connection.sendfile(source)
        else:
            with open(destination, "wb") as out:
                shutil.copyfileobj(source, out)


def out_of_space(target: Path, directory: Path) -> OutputError | None:
    """The `OutputError` for `target` if the file system of `directory` is full (under 64 KiB free), else
    None: for writers whose own error does not say so."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    if info.f_bavail * info.f_frsize >= 64 * 1024:
        return None
    return _output_error(target, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))


_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a directory; expected a file name",
    errno.ENXIO: "nothing is listening on this socket or device",
    errno.ECONNREFUSED: "nothing is listening on this socket",
}


def _output_error(target: Path, error: OSError) -> OutputError:
    reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
    return OutputError(f"{target}: cannot write ({reason}); nothing was changed there")


@contextmanager
def directory_kept_on_success(path: Path | str) -> Iterator[Path]:
    """Create the folder `path` (and missing parents) for the block; if the block fails, remove again
    the folders this created that are still empty, so a failed command leaves the disk as it found it
    (a folder holding anything is kept: it may hold work already done)."""
    path = Path(path)
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (work done, or someone else's files): keep it
                break
        raise


def write_text_atomic(target: Path | str, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(target: Path | str, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: Path | str, obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl_atomic(target: Path | str, rows: list[dict[str, Any]]) -> None:
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
