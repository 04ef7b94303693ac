"""The grid: a study's runs against its store -> plan (counts), run (through an executor, skipping
finished runs and resuming interrupted ones) and status (states, cost, projected remaining time)."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.errors import ConfigError, DataError
from crossling.executors import (
    DEFAULT_RUN_FUNCTION,
    EXECUTORS,
    ExecOptions,
    Job,
    Outcome,
    RayOptions,
    run_local,
    run_ray,
)
from crossling.progress import Track, no_progress
from crossling.store import DONE, FAILED, PENDING, RUNNING, Store
from crossling.study import Run, Study, default_store, expand_runs, identity_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanCounts:
    """How many of a study's runs are in each state."""

    total: int
    done: int
    failed: int
    running: int
    pending: int


@dataclass(frozen=True)
class GridProgress:
    """A progress event for a live display: counts over the runs this process was asked for, the
    run the event is about and what happened to it, and the estimated time to finish (None: unknown)."""

    total: int
    done: int
    failed: int
    running: int
    pending: int
    eta_seconds: float | None
    run_id: str = ""
    event: str = ""


Progress = Callable[[GridProgress], None]


@dataclass(frozen=True)
class GridSummary:
    """What one `run_study` call did: `executed` runs (done + failed now); `already_done` skipped;
    `elsewhere` held by another worker; `skipped_failed` failed before and not retried."""

    total: int
    executed: int
    done: int
    failed: int
    already_done: int
    elsewhere: int
    skipped_failed: int
    wall_seconds: float
    outcomes: tuple[Outcome, ...] = ()


def open_store(study: Study, store: Store | Path | str | None) -> Store:
    """A `Store` given one, a path, or None (the study's default store)."""
    if isinstance(store, Store):
        return store
    return Store(Path(store) if store is not None else default_store(study))


# --- plan ------------------------------------------------------------------------------------------


def plan_study(study: Study, store: Store | Path | str | None = None) -> PlanCounts:
    """Expand the study, record its plan in the store, and count its runs by state."""
    store = open_store(study, store)
    runs = expand_runs(study)
    store.write_plan(plan_record(study, runs))
    return count_states(store, runs)


def count_states(store: Store, runs: list[Run]) -> PlanCounts:
    return _counts([store.state(run.run_id) for run in runs])


def _counts(states: list[str]) -> PlanCounts:
    return PlanCounts(len(states), states.count(DONE), states.count(FAILED), states.count(RUNNING), states.count(PENDING))


def plan_record(study: Study, runs: list[Run]) -> dict[str, Any]:
    """The plan as JSON: enough to list every planned run from the store alone."""
    return {
        "study": study.name,
        "study_file": str(study.path) if study.path else "",
        "data": study.data.identity(),
        "sweep": [name for name, _ in study.sweep],
        "runs": [
            {"run_id": r.run_id, "checkpoint": r.checkpoint, "model": r.model, "language": r.language,
             "seed": r.seed, "settings": r.settings_dict, "config": dataclasses.asdict(r.config)}
            for r in runs
        ],
    }


def select_shard(runs: list[Run], shard: tuple[int, int]) -> list[Run]:
    """Runs i, i+n, i+2n, ... of the study's stable order (shard i of n, 0-based)."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count} is invalid: need 0 <= i < n (e.g. --shard 0/4 ... 3/4)")
    return runs[index::count]


# --- data ------------------------------------------------------------------------------------------


def prepare_data(study: Study, store: Store, track: Track = no_progress) -> Path:
    """The prepared root holding every study language, preparing what is missing (once, under a
    store claim, when several grid processes start together)."""
    data = study.data
    if data.kind == "prepared":
        root = data.resolve(data.options.path)
        _require_prepared(root, study.languages, f"[data] path = {data.options.path!r}")
        return root
    root = _prepared_root(study, store)
    missing = [lang for lang in study.languages if not paths.prepared_summary_path(root, lang).is_file()]
    if missing:
        _prepare_under_claim(study, store, root, missing, track)
    _require_prepared(root, study.languages, str(root))
    return root


def _prepared_root(study: Study, store: Store) -> Path:
    """[data] out, or a folder of the store named after the data identity (a changed option never
    reuses data prepared with the old one)."""
    data = study.data
    if data.options.out:
        return data.resolve(data.options.out)
    return paths.store_prepared_dir(store.root, data.kind, identity_hash(data.identity()))


def _prepare_under_claim(study: Study, store: Store, root: Path, missing: list[str], track: Track) -> None:
    claim_name = f"_prepare-{root.name}"
    while (claim := store.try_claim(claim_name, owner="prepare")) is None:
        log.info("another process is preparing %s; waiting", root)
        time.sleep(min(5.0, store.heartbeat_seconds))
    try:
        missing = [lang for lang in missing if not paths.prepared_summary_path(root, lang).is_file()]
        if missing:
            _prepare(study, root, missing, track)
    finally:
        store.release(claim)


def _prepare(study: Study, root: Path, languages: list[str], track: Track) -> None:
    from crossling.prepare import prepare_release

    options = study.data.options
    extra: dict[str, Any] = {}
    if study.data.kind in ("common-voice", "corpus"):
        source = study.data.resolve(options.release if study.data.kind == "common-voice" else options.path)
        extra = {"eval_seed": options.eval_seed, "max_hours_per_speaker": options.max_hours_per_speaker}
        if study.data.kind == "corpus":
            extra["corpus"] = options.corpus_options()
    else:
        from crossling.synth import synthesize_corpus

        source = paths.store_corpus_dir(root)
        synthesize_corpus(source, languages, options.hours, seed=options.seed, dev_fraction=options.dev_fraction,
                          test_fraction=options.test_fraction, speakers=options.speakers, noise=options.noise,
                          track=track)
    prepare_release(source, languages, root, train_hours=options.train_hours, seed=options.seed,
                    dev_max=options.dev_max, test_max=options.test_max, vocab_threshold=options.vocab_threshold,
                    track=track, **extra)


def _require_prepared(root: Path, languages: tuple[str, ...], where: str) -> None:
    missing = [lang for lang in languages if not paths.prepared_summary_path(root, lang).is_file()]
    if missing:
        raise DataError(
            f"{where}: language(s) {', '.join(missing)} not prepared in {root} (no prepared.json); "
            f"run `crossling prepare ... --languages {' '.join(missing)} --out {root}`"
        )


# --- run -------------------------------------------------------------------------------------------


class _Tracker:
    """Counts and ETA over the selected runs while the grid runs; emits `GridProgress` events."""

    def __init__(self, store: Store, runs: list[Run], workers: int, progress: Progress | None):
        self.store, self.workers, self.progress = store, max(1, workers), progress
        self.total = len(runs)
        self.done = self.failed = self.running = 0
        self.already_done = self.elsewhere = self.skipped_failed = 0
        self.outcomes: list[Outcome] = []
        self.prior_seconds = _mean_cost(store, runs)

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed - self.running - self.elsewhere - self.skipped_failed

    def eta(self) -> float | None:
        seconds = [o.seconds for o in self.outcomes if o.status == DONE] or self.prior_seconds
        if not seconds:
            return None
        return statistics.fmean(seconds) * (self.pending + self.running) / self.workers

    def emit(self, run_id: str, event: str) -> None:
        if self.progress is not None:
            self.progress(GridProgress(self.total, self.done, self.failed, self.running, self.pending,
                                       self.eta(), run_id, event))


def _mean_cost(store: Store, runs: list[Run]) -> list[float]:
    """Wall seconds of the selected runs already done (the ETA's prior before this session finishes one)."""
    seconds = []
    for run in runs:
        result = store.result(run.run_id)
        if result is not None and "cost" in result:
            seconds.append(float(result["cost"].get("wall_seconds", 0.0)))
    return seconds


def _next_job_factory(store: Store, runs: list[Run], retry: _Retry, tracker: _Tracker) -> Callable[[], Job | None]:
    """Walk the runs; claim the next one that needs doing (skipping done, failed and others' runs)."""
    candidates: Iterator[Run] = iter(runs)

    def next_job() -> Job | None:
        for run in candidates:
            if (job := _try_job(store, run, retry, tracker)) is not None:
                tracker.running += 1
                tracker.emit(run.run_id, "started")
                return job
        return None

    return next_job


def _try_job(store: Store, run: Run, retry: _Retry, tracker: _Tracker) -> Job | None:
    state = store.state(run.run_id)
    if state == PENDING or (state == FAILED and retry(run.run_id)):
        claim = store.try_claim(run.run_id, owner="study run")
        if claim is None:
            state = RUNNING
        else:
            # Re-check under the claim: another worker may have finished or failed it meanwhile.
            state = store.recorded_state(run.run_id)
            if state == PENDING or (state == FAILED and retry(run.run_id)):
                return Job(run, claim)
            store.release(claim)
    _count_skip(tracker, run.run_id, state)
    return None


_Retry = Callable[[str], bool]


def _retry_policy(store: Store, retry_failed: bool, since: float) -> _Retry:
    """With --retry-failed, retry failures recorded before this grid started (a failure recorded
    since then is another worker's retry, and is not repeated)."""

    def retry(run_id: str) -> bool:
        error = store.error(run_id) if retry_failed else None
        return error is not None and float(error.get("time", 0.0)) < since

    return retry


def _count_skip(tracker: _Tracker, run_id: str, state: str) -> None:
    if state == DONE:
        tracker.done += 1
        tracker.already_done += 1
    elif state == FAILED:
        tracker.skipped_failed += 1
    else:
        tracker.elsewhere += 1
    tracker.emit(run_id, f"skipped ({state})")


def _finish_factory(store: Store, tracker: _Tracker) -> Callable[[Job, Outcome], None]:
    def finish(job: Job, outcome: Outcome) -> None:
        store.release(job.claim)
        tracker.running -= 1
        tracker.outcomes.append(outcome)
        if outcome.status == DONE:
            tracker.done += 1
        else:
            tracker.failed += 1
        tracker.emit(job.run.run_id, outcome.status)

    return finish


def run_study(
    study: Study,
    store: Store | Path | str | None = None,
    executor: str = "local",
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    address: str | None = None,
    progress: Progress | None = None,
    run_function: str = DEFAULT_RUN_FUNCTION,
    device: str = "auto",
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    max_retries: int = 3,
    track: Track = no_progress,
) -> GridSummary:
    """Run the study's runs (shard i of n) that are not done, through `executor`; returns a summary.

    Safe to start many times, in parallel, on many machines sharing the store: claims make every
    run execute once; a killed grid resumes its interrupted runs from their checkpoints."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not valid; choose one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if executor == "local" and workers != 1:
        raise ConfigError("the local executor runs one run at a time; use --executor ray for --workers N, "
                          "or start N `crossling study run` processes on the same store")
    store = open_store(study, store)
    runs = expand_runs(study)
    store.write_plan(plan_record(study, runs))
    selected = select_shard(runs, shard)
    started, since = time.monotonic(), time.time()
    options = ExecOptions(store.root.resolve(), prepare_data(study, store, track).resolve(), run_function, device)
    tracker = _Tracker(store, selected, workers, progress)
    next_job = _next_job_factory(store, selected, _retry_policy(store, retry_failed, since), tracker)
    finish = _finish_factory(store, tracker)
    try:
        if executor == "local":
            run_local(next_job, finish, options)
        else:
            run_ray(next_job, finish, options, RayOptions(workers, address, cpus_per_run, gpus_per_run, max_retries))
    finally:
        store.close()
    return GridSummary(
        total=len(selected), executed=len(tracker.outcomes), done=sum(o.status == DONE for o in tracker.outcomes),
        failed=tracker.failed, already_done=tracker.already_done, elsewhere=tracker.elsewhere,
        skipped_failed=tracker.skipped_failed, wall_seconds=time.monotonic() - started,
        outcomes=tuple(tracker.outcomes),
    )


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


@dataclass(frozen=True)
class StudyStatus:
    """The study's counts, per-run cost, totals over done runs, and the projected remaining time
    (mean wall time of the done runs x the runs still to do, for one worker; divide by workers)."""

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
    store = open_store(study, store)
    runs = expand_runs(study)
    statuses = tuple(run_status(store, run.run_id) for run in runs)
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
        remaining_seconds=None if mean is None else mean * (counts.pending + counts.running + counts.failed),
    )


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def run_status(store: Store, run_id: str) -> RunStatus:
    state = store.state(run_id)
    if state == DONE:
        result = store.result(run_id) or {}
        cost = result.get("cost", {})
        return RunStatus(
            run_id, state, cost.get("wall_seconds"), cost.get("device_hours"), cost.get("audio_seconds_per_second"),
            cost.get("peak_memory_mb"), result.get("scores", {}).get("test", {}).get("cer"),
        )
    if state == FAILED:
        return RunStatus(run_id, state, error=(store.error(run_id) or {}).get("error", ""))
    if state == RUNNING:
        owner = store.claim_owner(run_id) or {}
        return RunStatus(run_id, state, owner=f"{owner.get('host', '?')}:{owner.get('pid', '?')}")
    return RunStatus(run_id, state)
