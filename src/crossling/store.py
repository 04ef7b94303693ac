"""The results store: one directory per run (result.json = done, error.json = failed; a corrupt record is
renamed aside), and numbered claim generations with a heartbeat, so that processes on any machine sharing
the filesystem never run a run twice and take over the runs of dead owners."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.atomic import read_json, write_json_atomic, write_text_atomic
from crossling.errors import ConfigError, CorruptArtifactError, CrosslingError, OutputError
from crossling.records import RunFailure, RunIdentity, RunRecord, StudyPlan

log = logging.getLogger(__name__)

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"


@dataclass(frozen=True)
class Claim:
    """A held claim on one run: its `generation` (1, 2, ... per run: a takeover makes the next one) and
    `token` (unique to this claim; it names the owner in attempt logs)."""

    run_id: str
    token: str
    generation: int
    path: Path


@dataclass(frozen=True)
class ClaimFile:
    """One file in a run's claim folder: its generation, whether it is still held, where it is."""

    generation: int
    held: bool
    path: Path


_CLAIM_NAME = re.compile(r"(\d+)\.(claim|released)")


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

    # --- state ----------------------------------------------------------------------------------

    def state(self, run_id: str) -> str:
        """'done' (result.json), 'running' (live claim), 'failed' (error.json) or 'pending'."""
        recorded = self.recorded_state(run_id)
        if recorded != DONE and self.claim_is_live(run_id):
            return RUNNING
        return recorded

    def recorded_state(self, run_id: str) -> str:
        """What the run directory says, claims aside: 'done', 'failed' or 'pending' (a corrupt record is
        quarantined and does not count)."""
        if self.result(run_id) is not None:
            return DONE
        return FAILED if self.error(run_id) is not None else PENDING

    def result(self, run_id: str) -> RunRecord | None:
        """The run's record; None if there is none, or it was corrupt or another run's (then quarantined)."""
        path = paths.run_result_path(self.run_dir(run_id))
        record = self._read_record(path, lambda: RunRecord.read(path))
        if record is not None and isinstance(record.identity, RunIdentity) \
                and not run_id.endswith(f"-{record.identity.digest()}"):
            self._quarantine(path, f"its identity (digest {record.identity.digest()}) is not run {run_id}'s")
            return None
        return record

    def error(self, run_id: str) -> RunFailure | None:
        path = paths.run_error_path(self.run_dir(run_id))
        return self._read_record(path, lambda: RunFailure.from_json(read_json(path), str(path)))

    def _read_record(self, path: Path, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except FileNotFoundError:
            return None
        except (CorruptArtifactError, UnicodeDecodeError) as error:
            self._quarantine(path, str(error))
            return None

    def _quarantine(self, path: Path, reason: str) -> None:
        """Rename a corrupt record aside (the run then counts as not done and runs again)."""
        aside = paths.quarantine_path(path, time.strftime("%Y%m%dT%H%M%S") + f"-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return  # another reader moved it already
        except OSError as error:  # a read-only store: report it, move nothing
            log.warning("%s is corrupt (%s) and cannot be moved aside: %s", path, reason, error)
            return
        log.warning("quarantined %s -> %s: %s", path, aside.name, reason)

    def quarantined(self, run_id: str) -> list[Path]:
        """The run's records renamed aside as corrupt (newest last)."""
        run_dir = self.run_dir(run_id)
        return sorted(run_dir.glob("*.corrupt-*"), key=lambda p: p.name.rsplit(".corrupt-", 1)[1]) \
            if run_dir.is_dir() else []

    def claim_owner(self, run_id: str) -> dict[str, Any] | None:
        current = self._current(run_id)
        return _read_record(current.path) if current is not None and current.held else None

    def claim_is_live(self, run_id: str) -> bool:
        current = self._current(run_id)
        return current is not None and current.held and not self._is_stale(current.path)

    def _is_stale(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.stale_seconds:
            return True
        record = _read_record(path)
        return record is not None and _process_is_gone(record)

    def _claim_files(self, run_id: str) -> list[ClaimFile]:
        """The run's claim files, oldest generation first."""
        directory = paths.store_claims_dir(self.root, run_id)
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise _claims_error(directory, error) from None
        found = []
        for entry in entries:
            if (match := _CLAIM_NAME.fullmatch(entry.name)) is None:
                continue
            if not entry.is_file(follow_symlinks=False):
                raise OutputError(f"{entry.path}: expected a claim file, found a directory or link; remove it "
                                  "(crossling keeps its claims there)")
            found.append(ClaimFile(int(match[1]), match[2] == "claim", Path(entry.path)))
        return sorted(found, key=lambda f: f.generation)

    def _current(self, run_id: str) -> ClaimFile | None:
        """The newest claim file: it alone says whether the run is held, and by whom."""
        files = self._claim_files(run_id)
        return files[-1] if files else None

    # --- claims ---------------------------------------------------------------------------------

    def try_claim(self, run_id: str, owner: str = "") -> Claim | None:
        """Claim `run_id` for this process, taking over a stale claim; None if someone else holds it.

        Each claim is the next generation's file, created with O_CREAT|O_EXCL: of all processes claiming
        (or taking over) the same generation exactly one succeeds, and a generation number is never used
        twice for a run (the newest file is kept, as `<n>.released`, after release). The held claim is
        refreshed by a heartbeat thread until `release`."""
        current = self._current(run_id)
        if current is not None and current.held and not self._is_stale(current.path):
            return None
        generation = current.generation + 1 if current is not None else 1
        path = paths.store_claim_path(self.root, run_id, generation)
        token = uuid.uuid4().hex
        record = {"token": token, "run_id": run_id, "generation": generation, "owner": owner, "time": time.time(),
                  **owner_record()}
        if not self._create_claim(path, record):
            return None  # another process claimed this generation first
        newest = self._current(run_id)
        if newest is None or newest.generation != generation:  # we looked at an old generation: not ours
            path.unlink(missing_ok=True)
            return None
        self._remove_older(run_id, generation)
        if current is not None and current.held:
            log.warning("took over the stale claim on %s (generation %d -> %d)", run_id, current.generation,
                        generation)
        claim = Claim(run_id=run_id, token=token, generation=generation, path=path)
        with self._lock:
            self._held[run_id] = claim
        self._ensure_heartbeat()
        return claim

    @staticmethod
    def _create_claim(path: Path, record: dict[str, Any]) -> bool:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return _create_exclusive(path, record)
        except OSError as error:
            raise _claims_error(path, error) from None

    def _remove_older(self, run_id: str, generation: int) -> None:
        """Delete the claim files of generations before `generation` (so claims/ holds one file a run)."""
        for old in self._claim_files(run_id):
            if old.generation < generation:
                old.path.unlink(missing_ok=True)

    def holds(self, claim: Claim) -> bool:
        """Whether `claim` is still this run's current claim and fresh: the newest generation, held, with
        our token, its heartbeat younger than half the staleness (so no one can be taking it over now)."""
        try:
            current = self._current(claim.run_id)
        except OutputError:
            return False
        if current is None or current.generation != claim.generation or not current.held:
            return False
        record = _read_record(current.path)
        if record is None or record.get("token") != claim.token:
            return False
        try:
            return time.time() - current.path.stat().st_mtime <= self.stale_seconds / 2
        except FileNotFoundError:
            return False

    def release(self, claim: Claim) -> None:
        """Give up a claim (only if it is still ours): its file stays as `<n>.released`, so the next claim
        of the run is generation n + 1."""
        with self._lock:
            self._held.pop(claim.run_id, None)
        current = self._current(claim.run_id)
        record = _read_record(claim.path) if current is not None and current.path == claim.path else None
        if record is not None and record.get("token") == claim.token:
            try:
                os.rename(claim.path, paths.store_claim_path(self.root, claim.run_id, claim.generation, released=True))
            except FileNotFoundError:
                pass  # taken over meanwhile

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
        try:
            current = self._current(claim.run_id)
            record = _read_record(claim.path) if current is not None and current.path == claim.path else None
            if record is not None and record.get("token") == claim.token:
                os.utime(claim.path)
                return True
        except (OSError, CrosslingError):
            pass  # taken over (the file is gone), or the claim folder was tampered with
        log.error("lost the claim on %s (taken over after a missed heartbeat)", claim.run_id)
        with self._lock:
            self._held.pop(claim.run_id, None)
        return False

    def close(self) -> None:
        """Release every held claim and stop the heartbeat."""
        for claim in self.held():
            self.release(claim)
        self._stop.set()

    # --- records written by the process that executes a run --------------------------------------

    def log_attempt(self, run_id: str, event: str, **fields: Any) -> None:
        """Append one event to the run's attempt log (one short O_APPEND write: lines never interleave)."""
        path = paths.store_attempts_path(self.root, run_id)
        line = json.dumps({"event": event, "time": time.time(), **owner_record(), **fields}) + "\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
        except OSError as error:
            raise OutputError(f"{path}: cannot append to the attempt log ({error.strerror})") from None

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        """The run's attempt events (a line that is not a JSON object, such as one torn by a crash, is
        skipped here; `repair_attempts` quarantines it)."""
        return _parse_attempts(paths.store_attempts_path(self.root, run_id))[0]

    def repair_attempts(self, run_id: str) -> None:
        """Under the run's claim: if a line of the attempt log is corrupt, rename the log aside and write
        its good lines back (so appending goes on after a clean line end)."""
        path = paths.store_attempts_path(self.root, run_id)
        rows, bad = _parse_attempts(path)
        if not bad:
            return
        self._quarantine(path, f"line(s) {', '.join(map(str, bad))} are not JSON objects")
        write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))

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


def _parse_attempts(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """(the attempt log's events, the numbers of its corrupt lines); a log that does not end with a
    newline has a torn last line."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    rows, bad = [], []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and "event" in row and (number < len(lines)):
            rows.append(row)
        else:
            bad.append(number)
    return rows, bad


def _claims_error(path: Path, error: OSError) -> OutputError:
    return OutputError(f"{path}: cannot use this claim location ({error.strerror}); crossling keeps a run's "
                       "claims in the folder claims/<run id>/ of the store")
