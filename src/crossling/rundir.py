"""A run directory's housekeeping: outputs of the wrong type (or not this run's) refused before training,
only crossling's own temporaries removed, the model folder saved with the umask's permissions, and one
`crossling finetune` at a time per --out."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crossling import paths
from crossling.atomic import (
    TEMPORARY_MARK,
    current_umask,
    directory_kept_on_success,
    is_temporary_of,
    out_of_space,
)
from crossling.errors import OutputError
from crossling.fence import check_write

LOCK_NAME = ".crossling-finetune.lock"


def run_files(out: Path) -> tuple[Path, ...]:
    """The files a run writes in its directory (each replaced atomically)."""
    return (paths.run_config_path(out), paths.run_resume_path(out), paths.run_legacy_resume_path(out),
            paths.run_scores_path(out), *(paths.run_hypotheses_path(out, s) for s in ("dev", "test")),
            paths.run_log_path(out), paths.run_result_path(out), paths.run_error_path(out), paths.run_metrics_path(out))


def check_outputs(out: Path) -> None:
    """Before any work: every output path is absent or of the kind crossling writes there, and a model
    folder already present is this run's (a resume file beside it says so): an `OutputError` otherwise,
    instead of a failure after training (or a user's folder replaced)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: expected a folder for the run's outputs, found a file; use another --out")
    for path in run_files(out):
        if path.exists() and not path.is_file():
            raise OutputError(f"{path}: expected a file crossling writes, found a folder; move it away or use "
                              "another --out")
    model = paths.run_model_dir(out)
    if model.exists() and not model.is_dir():
        raise OutputError(f"{model}: expected the folder crossling saves the fine-tuned model in, found a file; "
                          "move it away or use another --out")
    resumable = any(p.is_file() for p in (paths.run_resume_path(out), paths.run_legacy_resume_path(out)))
    if model.is_dir() and not resumable:
        raise OutputError(f"{model}: a model folder this run did not write (no resume file beside it); crossling "
                          "would replace it: move it away or use another --out")


_MODEL_STAGING = re.compile(rf"\.{re.escape('model')}\.({TEMPORARY_MARK})?[a-z0-9_]{{8}}")


def remove_own_temporaries(out: Path) -> list[Path]:
    """Remove what a killed run left half-written: temporaries `atomic_path` made for the run's own files,
    and model staging folders -- by their exact names, never anything else. Returns what was removed."""
    removed = []
    if not out.is_dir():
        return removed
    for entry in out.iterdir():
        if entry.is_file() and any(is_temporary_of(entry.name, f) for f in run_files(out)):
            entry.unlink(missing_ok=True)
        elif entry.is_dir() and not entry.is_symlink() and _MODEL_STAGING.fullmatch(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            continue
        removed.append(entry)
    return removed


def save_model_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Build a folder with `write(staging)` beside `target` and rename it into place, with the umask's
    permissions (mkdtemp makes 0700 folders, unreadable to others on a shared store). A full disk is an
    `OutputError` naming the target; a run that lost its claim does not replace it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{TEMPORARY_MARK}", dir=target.parent))
    try:
        write(staging)
        os.chmod(staging, 0o777 & ~current_umask())
        check_write(target)
        if target.is_dir():
            shutil.rmtree(target)  # this run's own earlier save (`check_outputs` made sure)
        staging.rename(target)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        full = out_of_space(target, target.parent) if not isinstance(error, OutputError) else None
        if full is not None:
            raise full from None
        raise


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold the run directory's lock (a POSIX lock: also across NFS clients) for the block; another
    process holding it is an `OutputError` saying which. The lock file goes when the block ends (removed
    while still locked; a process that locked the removed file tries again on the new one), and so does
    the folder if this made it and the block failed leaving it empty: a failed command leaves no trace."""
    path = out / LOCK_NAME
    with directory_kept_on_success(out):
        for _ in range(3):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if not _lock(fd, path, out):
                    continue
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                try:
                    yield
                finally:
                    path.unlink(missing_ok=True)
                return
            finally:
                os.close(fd)  # releases the lock
        raise OutputError(f"{out}: cannot lock {path}: other crossling finetune runs keep replacing it")


def _lock(fd: int, path: Path, out: Path) -> bool:
    """Lock the open lock file; False if the file at `path` is no longer the one locked."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        raise OutputError(f"{out}: another crossling finetune (pid {holder}) is working in this folder; "
                          "wait for it or use another --out") from None
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
