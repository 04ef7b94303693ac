"""The results store: one directory per run (result.json = done, error.json = failed), claim files
with a heartbeat so that processes on any machine sharing the filesystem never run a run twice."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.atomic import read_json, read_jsonl, write_json_atomic
from crossling.errors import ConfigError
from crossling.records import RunFailure, RunRecord, StudyPlan

log = logging.getLogger(__name__)

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"


@dataclass(frozen=True)
class Claim:
    """A held claim on one run: `token` is unique to this claim (it names the owner in attempt logs)."""

    run_id: str
    token: str
    path: Path


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The kernel's start time of `pid` (guards against a recycled pid), '' if unknown or gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_record() -> dict[str, Any]:
    """Who is acting: host, boot id and process (written into claims and attempt logs)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "pid_start": _process_start(pid)}


def _process_is_gone(owner: dict[str, Any]) -> bool:
    """True only when `owner` ran on this very machine and its process no longer exists."""
    here = owner_record()
    if owner.get("host") != here["host"] or not owner.get("boot_id") or owner.get("boot_id") != here["boot_id"]:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    started = _process_start(pid)
    return started == "" or (bool(owner.get("pid_start")) and started != owner.get("pid_start"))


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    """Create `path` holding `record` iff it does not exist (O_CREAT|O_EXCL is atomic, also on NFS v3+)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _read_record(path: Path) -> dict[str, Any] | None:
    """A claim's JSON, or None if it vanished or is still being written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Store:
    """A study's results store at `root`.

    A claim is live while its owner refreshes the file's mtime every `heartbeat_seconds`; it is
    stale after `stale_seconds` without a heartbeat, or at once when its owner process is gone from
    this machine. `Store` objects are cheap; a worker process builds its own from `root`."""

    root: Path
    heartbeat_seconds: float = 10.0
    stale_seconds: float = 120.0
    _held: dict[str, Claim] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _beat: threading.Thread | None = field(default=None, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.stale_seconds <= 2 * self.heartbeat_seconds:
            raise ConfigError(
                f"stale_seconds ({self.stale_seconds:g}) must exceed two heartbeats ({self.heartbeat_seconds:g} s)"
            )

    # --- where things are -----------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return paths.store_run_dir(self.root, run_id)

    def claim_path(self, run_id: str) -> Path:
        return paths.store_claim_path(self.root, run_id)

    # --- state ----------------------------------------------------------------------------------

    def state(self, run_id: str) -> str:
        """'done' (result.json), 'running' (live claim), 'failed' (error.json) or 'pending'."""
        recorded = self.recorded_state(run_id)
        if recorded != DONE and self.claim_is_live(run_id):
            return RUNNING
        return recorded

    def recorded_state(self, run_id: str) -> str:
        """What the run directory says, claims aside: 'done', 'failed' or 'pending'."""
        run_dir = self.run_dir(run_id)
        if paths.run_result_path(run_dir).is_file():
            return DONE
        return FAILED if paths.run_error_path(run_dir).is_file() else PENDING

    def result(self, run_id: str) -> RunRecord | None:
        path = paths.run_result_path(self.run_dir(run_id))
        return RunRecord.read(path) if path.is_file() else None

    def error(self, run_id: str) -> RunFailure | None:
        path = paths.run_error_path(self.run_dir(run_id))
        return RunFailure.from_json(read_json(path), str(path)) if path.is_file() else None

    def claim_owner(self, run_id: str) -> dict[str, Any] | None:
        return _read_record(self.claim_path(run_id))

    def claim_is_live(self, run_id: str) -> bool:
        path = self.claim_path(run_id)
        return path.exists() and not self._is_stale(path, _read_record(path))

    def _is_stale(self, path: Path, record: dict[str, Any] | None) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.stale_seconds:
            return True
        return record is not None and _process_is_gone(record)

    # --- claims ---------------------------------------------------------------------------------

    def try_claim(self, run_id: str, owner: str = "") -> Claim | None:
        """Claim `run_id` for this process, taking over a stale claim; None if someone else holds it.

        The held claim is refreshed by a heartbeat thread until `release`."""
        path = self.claim_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        record = {"token": token, "run_id": run_id, "owner": owner, "time": time.time(), **owner_record()}
        if not _create_exclusive(path, record) and not self._take_over(path, record):
            return None
        claim = Claim(run_id=run_id, token=token, path=path)
        with self._lock:
            self._held[run_id] = claim
        self._ensure_heartbeat()
        return claim

    def _take_over(self, path: Path, record: dict[str, Any]) -> bool:
        """Replace a stale claim. Exactly one taker wins per stale claim: each taker must first create
        a marker named after the stale claim's identity with O_EXCL."""
        try:
            stale_identity = self._identity(path)
        except FileNotFoundError:  # released meanwhile: an ordinary claim attempt
            return _create_exclusive(path, record)
        if not self._is_stale(path, _read_record(path)):
            return False
        marker = path.with_name(f"{path.name}.{stale_identity}.takeover")
        if not _create_exclusive(marker, record):
            return False  # another taker won this stale claim
        if not self._bury(path, stale_identity, record["token"]):
            return False
        log.warning("took over stale claim on %s (%s)", record["run_id"], stale_identity)
        return _create_exclusive(path, record)

    @staticmethod
    def _identity(path: Path) -> str:
        """Names one claim file: its token, or its inode while its content is not written yet."""
        found = _read_record(path)
        return found["token"] if found and "token" in found else f"ino{path.stat().st_ino}"

    def _bury(self, path: Path, stale_identity: str, token: str) -> bool:
        """Move the stale claim aside; if what was moved is a newer claim, put it back."""
        grave = path.with_name(f"{path.name}.{token}.stale")
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return True  # released by its owner meanwhile
        try:
            if self._identity(grave) == stale_identity:
                return True
            try:
                os.link(grave, path)  # atomic restore: fails if yet another claim appeared
            except FileExistsError:
                log.warning("a claim on %s changed hands during a takeover", path.stem)
            return False
        finally:
            grave.unlink(missing_ok=True)

    def release(self, claim: Claim) -> None:
        """Give up a claim (only if it is still ours)."""
        with self._lock:
            self._held.pop(claim.run_id, None)
        current = _read_record(claim.path)
        if current is not None and current.get("token") == claim.token:
            claim.path.unlink(missing_ok=True)

    def held(self) -> list[Claim]:
        with self._lock:
            return list(self._held.values())

    def _ensure_heartbeat(self) -> None:
        with self._lock:
            if self._beat is None or not self._beat.is_alive():
                self._stop.clear()
                self._beat = threading.Thread(target=self._heartbeat, name="crossling-claims", daemon=True)
                self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            for claim in self.held():
                self.refresh(claim)

    def refresh(self, claim: Claim) -> bool:
        """Touch a held claim; False (and the claim is dropped) if it is no longer ours."""
        current = _read_record(claim.path)
        if current is None or current.get("token") != claim.token:
            log.error("lost the claim on %s (taken over after a missed heartbeat)", claim.run_id)
            with self._lock:
                self._held.pop(claim.run_id, None)
            return False
        os.utime(claim.path)
        return True

    def close(self) -> None:
        """Release every held claim and stop the heartbeat."""
        for claim in self.held():
            self.release(claim)
        self._stop.set()

    # --- records written by the process that executes a run --------------------------------------

    def log_attempt(self, run_id: str, event: str, **fields: Any) -> None:
        """Append one event to the run's attempt log (one short O_APPEND write: lines never interleave)."""
        path = paths.store_attempts_path(self.root, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"event": event, "time": time.time(), **owner_record(), **fields}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        path = paths.store_attempts_path(self.root, run_id)
        if not path.is_file():
            return []
        return read_jsonl(path)

    def write_error(self, run_id: str, error: BaseException | str, traceback_text: str) -> None:
        """Record a failed attempt (error.json: the error, its type and the traceback)."""
        kind = type(error).__name__ if isinstance(error, BaseException) else "Error"
        record = RunFailure(run_id=run_id, error=f"{kind}: {error}", type=kind, traceback=traceback_text,
                            time=time.time(), **owner_record())
        write_json_atomic(paths.run_error_path(self.run_dir(run_id)), record.to_json())

    def clear_error(self, run_id: str) -> None:
        paths.run_error_path(self.run_dir(run_id)).unlink(missing_ok=True)

    def write_plan(self, plan: StudyPlan) -> None:
        write_json_atomic(paths.store_plan_path(self.root), plan.to_json())

    def read_plan(self) -> StudyPlan | None:
        path = paths.store_plan_path(self.root)
        return StudyPlan.from_json(read_json(path), str(path)) if path.is_file() else None
