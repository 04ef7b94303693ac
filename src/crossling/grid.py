"""The grid: a study's runs against its store -> plan (counts), run (through an executor, skipping
finished runs and resuming interrupted ones) and status (states, cost, projected remaining time)."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from crossling.budget import RunOptions
from crossling.errors import ConfigError, DataError
from crossling.executors import (
    CANCELLED,
    DEFAULT_RUN_FUNCTION,
    LOST,
    ExecOptions,
    Executor,
    Job,
    LocalExecutor,
    Outcome,
    RunEvent,
    StepEvent,
)
from crossling.prepared import open_prepared
from crossling.progress import Track, no_progress
from crossling.sources import prepare_source
from crossling.store import DONE, FAILED, PENDING, RUNNING, Store
from crossling.study import Run, Study, default_store, expand_runs, study_plan

log = logging.getLogger(__name__)

#: A selected run held by a process outside this grid (its state in the store is 'running').
ELSEWHERE = "elsewhere"


@dataclass(frozen=True)
class PlanCounts:
    """How many of a study's runs are in each state (`running`: held by any process)."""

    total: int
    done: int
    failed: int
    running: int
    pending: int


@dataclass(frozen=True, kw_only=True)
class GridProgress:
    """A progress event for a live display: the states of the grid's runs now -- `done` (finished,
    now or before), `failed`, `running` in this grid, `elsewhere` (held by another process), `pending`;
    they sum to `total` -- the run the event is about (`event`: started, done, failed or skipped, with
    `state` why; `worker`: the grid process) and the projected time to finish (None: unknown)."""

    total: int
    done: int
    failed: int
    running: int
    elsewhere: int
    pending: int
    eta_seconds: float | None
    run_id: str = ""
    event: str = ""
    state: str = ""
    worker: int = 0
    seconds: float | None = None  # of the execution that just ended
    step: str = ""  # the current run's step in a grid process, e.g. 'fine-tuning 120/280'


Progress = Callable[[GridProgress], None]


@dataclass(frozen=True, kw_only=True)
class GridSummary:
    """What one grid did: of its `total` runs, `done` are finished (`already_done` of them before it
    started), it `executed` some (`outcomes`; `failed` of them failed), `elsewhere` were held by another
    process and `skipped_failed` had failed before and were not retried."""

    total: int
    executed: int
    done: int
    failed: int
    already_done: int
    elsewhere: int
    skipped_failed: int
    wall_seconds: float
    outcomes: tuple[Outcome, ...] = ()

    @property
    def done_now(self) -> int:
        """Runs this grid executed to completion."""
        return self.done - self.already_done


def remaining_seconds(mean_run_seconds: float | None, runs_to_do: int, workers: int = 1) -> float | None:
    """The projected time to finish `runs_to_do` runs (pending or running; failed runs run again only with
    --retry-failed), each taking the mean wall time of a done run, `workers` at once (None: no run is done
    yet to measure)."""
    if mean_run_seconds is None:
        return None
    return mean_run_seconds * runs_to_do / max(1, workers)


def open_store(study: Study, store: Store | Path | str | None) -> Store:
    """A `Store` given one, a path, or None (the study's default store)."""
    if isinstance(store, Store):
        return store
    return Store(Path(store) if store is not None else default_store(study))


# --- plan ------------------------------------------------------------------------------------------


def plan_study(study: Study, store: Store | Path | str | None = None) -> PlanCounts:
    """Expand the study and count its runs by state in the store. Read-only: nothing is written (the
    store and its plan.json are created by the first `run_study`)."""
    store = open_store(study, store)
    runs = expand_runs(study)
    return count_states(store, runs)


def count_states(store: Store, runs: list[Run]) -> PlanCounts:
    return _counts([store.state(run.run_id) for run in runs])


def _counts(states: list[str]) -> PlanCounts:
    return PlanCounts(len(states), states.count(DONE), states.count(FAILED), states.count(RUNNING), states.count(PENDING))


def lane_order(runs: list[Run], lane: tuple[int, int]) -> list[Run]:
    """The order in which grid process `lane[0]` of `lane[1]` tries the runs. Runs of one checkpoint on
    one language share their frozen features within a process (`crossling.sharing`), so they form a
    group, and groups are dealt to the processes in turn: a process tries its own groups first (each
    group's features are computed once, by one process), then the other processes' groups from the last
    one back, so a process with nothing left takes whole groups from the end of another's list rather
    than the run that process is about to start."""
    index, count = lane
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.model, run.language), []).append(run)
    dealt = list(groups.values())
    own = [run for group in dealt[index::count] for run in group]
    others = [run for position in reversed(range(len(dealt))) if position % count != index for run in dealt[position]]
    return own + others


def select_shard(runs: list[Run], shard: tuple[int, int]) -> list[Run]:
    """Runs i, i+n, i+2n, ... of the study's stable order (shard i of n, 0-based)."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count} is invalid: need 0 <= i < n (e.g. --shard 0/4 ... 3/4)")
    return runs[index::count]


# --- run -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GridSpec:
    """Everything a grid process needs (picklable: `ProcessExecutor` starts grid processes from it):
    the study, the store, which runs (shard) and which of them first (lane), whether failures recorded before `since` are retried,
    the run function and the device."""

    study: Study
    store_root: Path
    shard: tuple[int, int] = (0, 1)
    lane: tuple[int, int] = (0, 1)  # this grid process of N on one machine (see `lane_order`)
    retry_failed: bool = False
    since: float = 0.0
    run_function: str = DEFAULT_RUN_FUNCTION
    device: str = "auto"
    run_options: RunOptions | None = None
    heartbeat_seconds: float = 10.0
    stale_seconds: float = 120.0

    def store(self) -> Store:
        return Store(self.store_root, heartbeat_seconds=self.heartbeat_seconds, stale_seconds=self.stale_seconds)


def content_fingerprints(prepared: Path, languages: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(language, content fingerprint) of each prepared language, as the driver found them."""
    return tuple((language, open_prepared(prepared, language).fingerprint()) for language in languages)


def run_study(
    study: Study,
    store: Store | Path | str | None = None,
    *,
    executor: Executor | None = None,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    progress: Progress | None = None,
    run_function: str = DEFAULT_RUN_FUNCTION,
    device: str = "auto",
    track: Track = no_progress,
    run_options: RunOptions | None = None,
) -> GridSummary:
    """Run the study's runs (shard i of n) that are not done, through `executor` (default: in this
    process, one at a time); returns a summary. `progress` receives a `GridProgress` event whenever a run
    starts, ends or is skipped; `track` shows data preparation (and, in this process, each run's steps).

    Safe to start many times, in parallel, on many machines sharing the store: claims make every
    run execute once; a killed grid resumes its interrupted runs from their resume files. Before it
    returns, a grid waits for the runs other processes hold, and takes over those whose owner dies."""
    opened = open_store(study, store)
    spec = GridSpec(study=study, store_root=opened.root, shard=shard, retry_failed=retry_failed, since=time.time(),
                    run_function=run_function, device=device, heartbeat_seconds=opened.heartbeat_seconds,
                    stale_seconds=opened.stale_seconds, run_options=run_options)
    return run_grid(spec, executor or LocalExecutor(), progress=progress, track=track)


def run_grid(spec: GridSpec, executor: Executor, *, progress: Progress | None = None,
             events: Callable[[RunEvent], None] | None = None, track: Track = no_progress) -> GridSummary:
    """`run_study` from a `GridSpec` (what a grid process runs); `events` also receives every run event."""
    store = spec.store()
    runs = expand_runs(spec.study)
    store.write_plan(study_plan(spec.study, runs))
    selected = lane_order(select_shard(runs, spec.shard), spec.lane)
    started = time.monotonic()
    try:
        prepared = prepare_source(spec.study.data, spec.study.languages, store, track).resolve()
        options = ExecOptions(store.root.resolve(), prepared, spec.run_function, spec.device,
                              run_options=spec.run_options, heartbeat_seconds=spec.heartbeat_seconds,
                              stale_seconds=spec.stale_seconds,
                              fingerprints=content_fingerprints(prepared, spec.study.languages))
        work = _Grid(spec, store, selected, options, tracker=_Tracker(store, selected, executor.workers, progress, events), track=track)
        executor.execute(work)
    finally:
        store.close()
    return work.tracker.summary(time.monotonic() - started)


class _Tracker:
    """The states of the grid's runs as this grid sees them (from its own claims and executions, or
    the events of its grid processes); emits `GridProgress` events and makes the summary."""

    def __init__(self, store: Store, runs: list[Run], workers: int, progress: Progress | None,
                 events: Callable[[RunEvent], None] | None) -> None:
        self.store, self.workers, self.progress, self.events = store, workers, progress, events
        self.states = {run.run_id: PENDING for run in runs}
        self.already_done: set[str] = set()
        self.skipped_failed: set[str] = set()
        self.outcomes: list[Outcome] = []
        self.run_seconds = _done_seconds(store, runs)
        self._lock = threading.Lock()  # events may come from an executor's threads

    def record(self, event: RunEvent) -> None:
        with self._lock:
            self._apply(event)
            update = self._progress(event)
        if self.events is not None:
            self.events(event)
        if self.progress is not None:
            self.progress(update)

    def step(self, event: StepEvent) -> None:
        """A grid process's run moved on: a progress update carrying its step."""
        if self.progress is None or self.workers > 1:  # several runs at once: no single current step
            return
        with self._lock:
            update = self._progress(RunEvent("", "step", worker=event.worker))
        self.progress(dataclasses.replace(update, step=f"{event.description} {event.done}/{event.total}"))

    def _apply(self, event: RunEvent) -> None:
        run_id, current = event.run_id, self.states[event.run_id]
        if event.event == "started":
            self.states[run_id] = RUNNING
        elif event.event == "skipped":
            self._skipped(run_id, current, event.state)
        elif event.outcome is not None:
            self._ended(event.outcome)

    def _skipped(self, run_id: str, current: str, state: str) -> None:
        if state == DONE and current in (PENDING, ELSEWHERE):
            self.states[run_id] = DONE
            self.already_done.add(run_id)
        elif state == FAILED and current in (PENDING, ELSEWHERE):
            self.states[run_id] = FAILED
            self.skipped_failed.add(run_id)
        elif state == RUNNING and current == PENDING:  # another process holds it (maybe one of ours)
            self.states[run_id] = ELSEWHERE

    def _ended(self, outcome: Outcome) -> None:
        if outcome.status == CANCELLED:
            self.states[outcome.run_id] = PENDING
            return
        if outcome.status == LOST:  # taken over by another process, which finishes it
            self.states[outcome.run_id] = ELSEWHERE
            return
        self.states[outcome.run_id] = outcome.status
        self.skipped_failed.discard(outcome.run_id)
        self.outcomes.append(outcome)
        result = self.store.result(outcome.run_id) if outcome.status == DONE else None
        if result is not None:
            self.run_seconds.append(result.cost.wall_seconds)

    def count(self, state: str) -> int:
        return sum(value == state for value in self.states.values())

    def _progress(self, event: RunEvent) -> GridProgress:
        mean = statistics.fmean(self.run_seconds) if self.run_seconds else None
        running, pending = self.count(RUNNING), self.count(PENDING)
        return GridProgress(
            total=len(self.states), done=self.count(DONE), failed=self.count(FAILED), running=running,
            elsewhere=self.count(ELSEWHERE), pending=pending,
            eta_seconds=remaining_seconds(mean, pending + running, self.workers), run_id=event.run_id,
            event=event.event, state=event.state, worker=event.worker,
            seconds=event.outcome.seconds if event.outcome else None,
        )

    def summary(self, wall_seconds: float) -> GridSummary:
        return GridSummary(
            total=len(self.states), executed=len(self.outcomes), done=self.count(DONE),
            failed=sum(o.status == FAILED for o in self.outcomes), already_done=len(self.already_done),
            elsewhere=self.count(ELSEWHERE), skipped_failed=len(self.skipped_failed), wall_seconds=wall_seconds,
            outcomes=tuple(self.outcomes),
        )


def _done_seconds(store: Store, runs: list[Run]) -> list[float]:
    """Wall seconds of the runs already done (the ETA's measure before this grid finishes one)."""
    results = (store.result(run.run_id) for run in runs)
    return [result.cost.wall_seconds for result in results if result is not None]


class _Grid:
    """The grid as its executor sees it (`executors.GridWork`): claims the next run that needs doing
    (skipping done, failed and others' runs), takes outcomes back, relays grid processes' events. When
    its own runs are exhausted it goes back to the runs other processes held, until each is finished or
    taken over from a dead owner (the same host: its process is gone; another host: no heartbeat)."""

    def __init__(self, spec: GridSpec, store: Store, runs: list[Run], options: ExecOptions, *,
                 tracker: _Tracker, track: Track) -> None:
        self.spec, self.store, self.options, self.tracker, self.track = spec, store, options, tracker, track
        self._candidates: Iterator[Run] = iter(runs)
        self._elsewhere: dict[str, Run] = {}  # held by other processes when we looked
        self._claiming = threading.Lock()

    def next_job(self) -> Job | None:
        with self._claiming:
            for run in self._candidates:
                if (job := self._try_job(run)) is not None:
                    return self._started(job)
            job = self._revisit()
            return self._started(job) if job is not None else None

    def _started(self, job: Job) -> Job:
        self.tracker.record(RunEvent(job.run.run_id, "started"))
        return job

    def _revisit(self) -> Job | None:
        """Wait for the runs held elsewhere: None once each is done or failed; the job of one whose
        claim went stale (its owner died) as soon as it is taken over here."""
        while self._elsewhere:
            for run in list(self._elsewhere.values()):
                if self.store.state(run.run_id) == RUNNING:
                    continue
                del self._elsewhere[run.run_id]
                if (job := self._try_job(run)) is not None:
                    log.warning("took over run %s from a process that stopped holding it", run.run_id)
                    return job
            if self._elsewhere:
                time.sleep(self.store.heartbeat_seconds)
        return None

    def finish(self, job: Job, outcome: Outcome) -> None:
        self.store.release(job.claim)
        if outcome.status == LOST:
            with self._claiming:
                self._elsewhere[job.run.run_id] = job.run
        self.tracker.record(RunEvent(job.run.run_id, outcome.status, outcome=outcome))

    def relay(self, event: RunEvent | StepEvent) -> None:
        if isinstance(event, StepEvent):
            self.tracker.step(event)
        else:
            self.tracker.record(event)

    def _try_job(self, run: Run) -> Job | None:
        state = self.store.state(run.run_id)
        if self._wanted(run.run_id, state):
            claim = self.store.try_claim(run.run_id, owner="study run")
            if claim is None:
                state = RUNNING
            else:
                # Re-check under the claim: another worker may have finished or failed it meanwhile.
                state = self.store.recorded_state(run.run_id)
                if self._wanted(run.run_id, state):
                    return Job(run, claim)
                self.store.release(claim)
        if state == RUNNING:
            self._elsewhere[run.run_id] = run
        self.tracker.record(RunEvent(run.run_id, "skipped", state=state))
        return None

    def _wanted(self, run_id: str, state: str) -> bool:
        """Pending, or failed before this grid started and --retry-failed was given (a failure recorded
        since then is another worker's retry, and is not repeated)."""
        if state == PENDING:
            return True
        if state != FAILED or not self.spec.retry_failed:
            return False
        error = self.store.error(run_id)
        return error is not None and error.time < self.spec.since


# --- status ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    """One run's state and cost (NaN-free: None where the run has no result yet)."""

    run_id: str
    state: str
    wall_seconds: float | None = None
    device_hours: float | None = None
    audio_seconds_per_second: float | None = None
    peak_memory_mb: float | None = None
    cer: float | None = None
    error: str = ""
    owner: str = ""
    quarantined: tuple[str, ...] = ()  # records of this run renamed aside as corrupt


@dataclass(frozen=True)
class StudyStatus:
    """The study's counts, per-run cost, totals over done runs, and the projected remaining time
    (`remaining_seconds` for one worker; divide by the number of workers)."""

    counts: PlanCounts
    runs: tuple[RunStatus, ...]
    wall_seconds: float
    device_hours: float
    audio_seconds_per_second: float | None
    peak_memory_mb: float | None
    mean_run_seconds: float | None
    remaining_seconds: float | None


def study_status(study: Study, store: Store | Path | str | None = None) -> StudyStatus:
    """States and cost of every run of the study, with totals and the projected remaining time."""
    return _status(open_store(study, store), [run.run_id for run in expand_runs(study)])


def store_status(root: Path | str) -> StudyStatus:
    """`study_status` from a store alone: its runs are those its plan.json lists."""
    store = Store(Path(root))
    plan = store.read_plan()
    if plan is None:
        raise DataError(f"{root}: not a study store (no plan.json); pass the study file instead")
    return _status(store, [run.run_id for run in plan.runs])


def _status(store: Store, run_ids: list[str]) -> StudyStatus:
    statuses = tuple(run_status(store, run_id) for run_id in run_ids)
    done = [s for s in statuses if s.state == DONE and s.wall_seconds is not None]
    counts = _counts([s.state for s in statuses])
    mean = statistics.fmean(s.wall_seconds for s in done) if done else None
    return StudyStatus(
        counts=counts,
        runs=statuses,
        wall_seconds=sum(s.wall_seconds for s in done),
        device_hours=sum(s.device_hours or 0.0 for s in done),
        audio_seconds_per_second=_mean_or_none([s.audio_seconds_per_second for s in done]),
        peak_memory_mb=max((s.peak_memory_mb for s in done if s.peak_memory_mb is not None), default=None),
        mean_run_seconds=mean,
        remaining_seconds=remaining_seconds(mean, counts.pending + counts.running),
    )


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def run_status(store: Store, run_id: str) -> RunStatus:
    state = store.state(run_id)
    quarantined = tuple(path.name for path in store.quarantined(run_id))
    status = _state_status(store, run_id, state)
    return dataclasses.replace(status, quarantined=quarantined) if quarantined else status


def _state_status(store: Store, run_id: str, state: str) -> RunStatus:
    if state == DONE:
        result = store.result(run_id)
        cost = result.cost
        return RunStatus(
            run_id=run_id, state=state, wall_seconds=cost.wall_seconds, device_hours=cost.device_hours,
            audio_seconds_per_second=cost.audio_seconds_per_second, peak_memory_mb=cost.peak_memory_mb,
            cer=result.test_cer(),
        )
    if state == FAILED:
        failure = store.error(run_id)
        return RunStatus(run_id=run_id, state=state, error=failure.error if failure else "")
    if state == RUNNING:
        owner = store.claim_owner(run_id) or {}
        return RunStatus(run_id=run_id, state=state, owner=f"{owner.get('host', '?')}:{owner.get('pid', '?')}")
    return RunStatus(run_id=run_id, state=state)
