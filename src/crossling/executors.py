"""Executors: execute the runs of a grid behind one small interface (`execute` until nothing is left,
`cancel`) -- in this process (`LocalExecutor`), in N grid processes sharing the store
(`ProcessExecutor`), or as Ray tasks (`RayExecutor`). Each execution records its attempt, its error or
the run function's result; every start and end reaches the grid as an event."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crossling import devices, paths
from crossling.children import descendants, start_reaper
from crossling.errors import ConfigError, CrosslingError
from crossling.fence import ClaimLost, check_write, fenced, still_held
from crossling.progress import Track, no_progress
from crossling.store import DONE, FAILED, Claim, Store

if TYPE_CHECKING:
    from crossling.budget import RunOptions
    from crossling.grid import GridSpec
    from crossling.study import Run

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
#: The outcome of a run stopped by `cancel`: neither done nor failed (it resumes later).
CANCELLED = "cancelled"
#: The outcome of a run whose claim was taken over while it executed: it stopped at its next write,
#: leaving the run to the new owner.
LOST = "lost"
#: The function one run calls, as 'module:attribute' so a worker process can import it by name. It is
#: called with keywords: identity (`records.RunIdentity`), model (what to load), prepared (root), out (the
#: run directory), device and track, resumes from the run directory's resume file, writes result.json last.
DEFAULT_RUN_FUNCTION = "crossling.finetune:run_finetune"
#: Step events a Ray task may have queued before the driver reads them (it reads every 0.5 s).
STEP_QUEUE_SIZE = 1000


@dataclass(frozen=True)
class Job:
    """A run this process has claimed, ready to execute."""

    run: Run
    claim: Claim


@dataclass(frozen=True)
class Outcome:
    """How one execution ended: 'done' or 'failed' (with the error message; `device_lost`: a sticky CUDA
    error, after which this process can run nothing more on its GPU)."""

    run_id: str
    status: str
    seconds: float
    error: str = ""
    device_lost: bool = False


class DeviceLost(CrosslingError):
    """A run left this process's GPU in a sticky CUDA error state (an illegal memory access, a device-side
    assert): every later CUDA call in the process fails, so it must end; its runs resume in a new process."""


@dataclass(frozen=True)
class ExecOptions:
    """What every execution needs besides its run."""

    store_root: Path
    prepared: Path
    run_function: str = DEFAULT_RUN_FUNCTION
    device: str = "auto"
    run_options: RunOptions | None = None  # passed to the run function (as `options`) when set
    heartbeat_seconds: float = 10.0
    stale_seconds: float = 120.0
    #: language -> content fingerprint of its prepared data (`PreparedLanguage.fingerprint`), by which a
    #: run on another node finds the data where that node mounts it (`prepared.locate_prepared`)
    fingerprints: tuple[tuple[str, str], ...] = ()

    def store(self) -> Store:
        return Store(self.store_root, heartbeat_seconds=self.heartbeat_seconds, stale_seconds=self.stale_seconds)

    def prepared_for(self, language: str) -> Path:
        """The prepared root of `language` on this node (the driver's path, or the same content elsewhere)."""
        from crossling.prepared import locate_prepared

        fingerprint = dict(self.fingerprints).get(language)
        return Path(self.prepared) if fingerprint is None else locate_prepared(self.prepared, language, fingerprint)


@dataclass(frozen=True)
class RunEvent:
    """One run started, ended or was skipped in a grid process (`worker`): 'started', 'done', 'failed'
    or 'skipped' (then `state` is why: done, failed or running elsewhere)."""

    run_id: str
    event: str
    worker: int = 0
    state: str = ""
    outcome: Outcome | None = None


@dataclass(frozen=True)
class StepEvent:
    """A grid process's current run moved on: `done` of the `total` items of its step `description`
    (e.g. fine-tuning 120/280), so the main process can show the run's progress."""

    worker: int
    description: str
    done: int
    total: int


class GridWork(Protocol):
    """What an executor gets from the grid: claimed jobs, where their outcomes go, and (for grid
    processes) what a grid process needs and where its events go."""

    options: ExecOptions
    spec: GridSpec
    track: Track

    def next_job(self) -> Job | None: ...

    def finish(self, job: Job, outcome: Outcome) -> None: ...

    def relay(self, event: RunEvent | StepEvent) -> None: ...


class Executor(Protocol):
    """Executes a grid's runs: `execute` claims and runs them until none is left (or `cancel` is called:
    no new run starts; runs in flight are stopped and resume from their resume files later)."""

    workers: int  # runs at once

    def execute(self, work: GridWork) -> None: ...

    def cancel(self) -> None: ...


# --- one run -------------------------------------------------------------------------------------------


def resolve_function(name: str) -> Callable[..., Any]:
    """'package.module:function' -> the function."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"run function {name!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot load run function {name!r}: {error}") from None


def execute_run(run: Run, claim: Claim, options: ExecOptions, track: Track = no_progress) -> Outcome:
    """Execute one claimed run in this process: the run function resumes from the run directory's
    resume file if one exists and writes result.json last. Exceptions become error.json. Every write into
    the run directory is fenced by the claim: if another process took the run over, the run stops at its
    next write (outcome 'lost') and records nothing but that in the attempt log."""
    store = options.store()
    run_dir = store.run_dir(run.run_id)
    store.repair_attempts(run.run_id)
    attempt = sum(a["event"] == "start" for a in store.attempts(run.run_id)) + 1
    resumable = (paths.run_resume_path(run_dir), paths.run_legacy_resume_path(run_dir))
    tag = {"token": claim.token, "generation": claim.generation, "attempt": attempt}
    store.log_attempt(run.run_id, "start", **tag, resumed=any(p.is_file() for p in resumable))
    started = time.monotonic()
    what = f"run {run.run_id} (claim generation {claim.generation})"
    with fenced(run_dir, lambda: store.holds(claim), what):
        try:
            _call_run_function(run, run_dir, options, track)
            check_write(run_dir)  # the result counts only while the claim is ours
        except ClaimLost as lost:
            return _lost(store, run.run_id, lost, tag, time.monotonic() - started)
        except Exception as error:  # a failing run is recorded and the grid carries on
            if not still_held(run_dir):
                return _lost(store, run.run_id, error, tag, time.monotonic() - started)
            return _failed(store, run.run_id, error, tag, time.monotonic() - started)
        store.clear_error(run.run_id)
    seconds = time.monotonic() - started
    store.log_attempt(run.run_id, DONE, **tag, seconds=seconds)
    return Outcome(run.run_id, DONE, seconds)


def _call_run_function(run: Run, run_dir: Path, options: ExecOptions, track: Track) -> None:
    function = resolve_function(options.run_function)
    extra = {"options": options.run_options} if options.run_options is not None else {}
    function(identity=run.identity, model=run.model, prepared=options.prepared_for(run.language), out=run_dir,
             device=options.device, track=track, **extra)
    if not paths.run_result_path(run_dir).is_file():
        raise RuntimeError(f"{options.run_function} returned without writing {paths.run_result_path(run_dir)}")


def _failed(store: Store, run_id: str, error: Exception, tag: dict, seconds: float) -> Outcome:
    store.write_error(run_id, error, traceback.format_exc())
    store.log_attempt(run_id, FAILED, **tag, seconds=seconds, error=str(error))
    log.error("run %s failed: %s", run_id, error)
    return Outcome(run_id, FAILED, seconds, f"{type(error).__name__}: {error}",
                   device_lost=devices.is_sticky_cuda_error(error))


def _lost(store: Store, run_id: str, error: Exception, tag: dict, seconds: float) -> Outcome:
    store.log_attempt(run_id, LOST, **tag, seconds=seconds, error=str(error))
    log.error("run %s stopped: its claim (generation %d) was taken over by another process", run_id,
              tag["generation"])
    return Outcome(run_id, LOST, seconds, str(error))


# --- in this process -------------------------------------------------------------------------------------


class LocalExecutor:
    """In this process, one run at a time: claim one, execute it, repeat. The grid's `track` shows the
    run's own progress (its training steps)."""

    workers = 1

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def execute(self, work: GridWork) -> None:
        while not self._cancelled.is_set() and (job := work.next_job()) is not None:
            outcome = execute_run(job.run, job.claim, work.options, work.track)
            work.finish(job, outcome)
            if outcome.device_lost:
                raise DeviceLost(f"run {outcome.run_id} left the GPU unusable ({outcome.error}); this process stops: "
                                 f"start `crossling study run` again (with --workers N each grid process restarts "
                                 f"by itself)")

    def cancel(self) -> None:
        self._cancelled.set()


# --- N grid processes on one store -----------------------------------------------------------------------


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: taskset, cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ProcessExecutor:
    """`workers` grid processes on the same store, as `workers` `crossling study run` processes would be:
    each claims runs itself (so a dead process's runs are taken over, never run twice) and executes them
    with `threads` torch threads (default: the usable cores / workers, at least 1). Where GPUs are visible,
    each process owns one (CUDA_VISIBLE_DEVICES; `devices.assign_gpus` refuses more processes than GPUs);
    a process whose GPU a run left unusable (`DeviceLost`) is replaced by a fresh one. Their events reach
    this process's grid."""

    def __init__(self, workers: int, threads: int | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads per worker must be >= 1, got {threads}")
        self.workers = workers
        self.threads = threads if threads is not None else max(1, usable_cores() // workers)
        self._cancelled = threading.Event()
        self._processes: list[Any] = []
        self._start: Callable[[int], Any] = lambda index: None

    def execute(self, work: GridWork) -> None:
        from multiprocessing import get_context

        context = get_context("spawn")  # a fresh interpreter: torch's threads and OpenMP set before it loads
        events = context.Queue()
        pins = devices.assign_gpus(self.workers, work.spec.device, visible_gpus())

        def start(index: int):
            spec = dataclasses.replace(work.spec, lane=(index, self.workers))  # each its own groups of runs first
            process = context.Process(target=grid_process, args=(spec, self.threads, events, index, pins[index]),
                                      name=f"crossling-grid-{index}")
            process.start()
            return process

        self._start = start
        self._processes = [start(index) for index in range(self.workers)]
        try:
            errors = self._relay(events, work)
        except BaseException:
            self.cancel()
            raise
        finally:
            for process in self._processes:
                process.join()
        if errors:
            raise errors[0]

    def _relay(self, events, work: GridWork) -> list[BaseException]:
        """Pass the processes' events to the grid until every process has ended; returns their errors."""
        errors: list[BaseException] = []
        while True:
            try:
                message = events.get(timeout=0.2)
            except queue.Empty:
                if not any(process.is_alive() for process in self._processes):
                    break
                continue
            if isinstance(message, Restart):
                self._restart(message.index)
            elif isinstance(message, BaseException):
                errors.append(message)
            else:
                work.relay(message)
        crashed = [p for p in self._processes if p.exitcode not in (0, None)]
        if crashed and not errors and not self._cancelled.is_set():
            errors.append(RuntimeError(f"grid process {crashed[0].name} ended with exit code {crashed[0].exitcode}"))
        return errors

    def _restart(self, index: int) -> None:
        """Replace grid process `index` (it ended after `DeviceLost`) by a fresh one on the same GPU."""
        self._processes[index].join()
        if not self._cancelled.is_set():
            log.warning("grid process %d lost its GPU to a sticky CUDA error; starting a fresh one", index)
            self._processes[index] = self._start(index)

    def cancel(self) -> None:
        """Stop every grid process (each releases its claims; interrupted runs resume later)."""
        self._cancelled.set()
        for process in self._processes:
            if process.is_alive():
                process.terminate()


def visible_gpus() -> list[str]:
    """The GPUs this process can hand to grid processes (CUDA_VISIBLE_DEVICES entries)."""
    import torch

    return devices.visible_gpu_ids(os.environ, torch.cuda.device_count())


def grid_process(spec: GridSpec, threads: int, events, index: int, gpu: str | None = None) -> None:
    """One grid process of a `ProcessExecutor`: torch will start with `threads` threads (OMP_NUM_THREADS,
    read when torch loads, with the OpenMP setting) and see only GPU `gpu` (None: as the parent); every
    run event and a grid error go to `events`."""
    import crossling

    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        spec = dataclasses.replace(spec, device=devices.pinned_device(spec.device, gpu))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    crossling.short_openmp_spin()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from crossling.grid import run_grid

        run_grid(spec, LocalExecutor(), events=lambda event: events.put(_as_worker(event, index)),
                 track=_relayed_steps(events.put, index))
    except KeyboardInterrupt:
        return  # cancelled: the claims were released on the way out
    except DeviceLost:
        events.put(Restart(index))  # this process's CUDA context is unusable: a fresh process takes over
    except CrosslingError as error:
        events.put(error)
    except Exception as error:
        events.put(RuntimeError(f"grid process {index}: {type(error).__name__}: {error}\n{traceback.format_exc()}"))


def _relayed_steps(send: Callable[[StepEvent], None], index: int, every: float = 1.0) -> Track:
    """A `Track` sending a worker's step progress towards the main process (at most every `every` s)."""

    def track(items, total: int, description: str):
        last = 0.0
        for done, item in enumerate(items, 1):
            yield item
            if time.monotonic() - last >= every or done == total:
                send(StepEvent(index, description, done, total))
                last = time.monotonic()

    return track


@dataclass(frozen=True)
class Restart:
    """A grid process's last message: replace me (see `DeviceLost`)."""

    index: int


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _as_worker(event: RunEvent, index: int) -> RunEvent:
    return RunEvent(event.run_id, event.event, worker=index, state=event.state, outcome=event.outcome)


# --- Ray -------------------------------------------------------------------------------------------------


class RayExecutor:
    """Each run a Ray task: `workers` in flight at once, each requesting `cpus_per_run` CPUs and
    `gpus_per_run` GPUs (default: 1 when the cluster has GPUs, see `devices.ray_gpus_per_run`); a task whose worker process dies is retried up to `max_retries` times. Claims
    stay with this (driver) process, so a task rescheduled after its worker died still runs under the
    same claim, and resumes from the run's resume file. `address`: join that cluster (default: a Ray
    instance already connected, else a local one started here). With one worker, the task's step progress
    reaches the grid's display through a Ray queue."""

    def __init__(self, workers: int = 1, address: str | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float | None = None, max_retries: int = 3) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers, self.address, self.max_retries = workers, address, max_retries
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        self._cancelled = threading.Event()
        self._in_flight: dict[Any, Job] = {}

    def execute(self, work: GridWork) -> None:
        ray = _import_ray()
        before = set(_children())
        started_here = self._connect(ray)
        # Ray's agents outlive a killed driver (they ignore SIGTERM): a reaper ends what was started here
        reaper = start_reaper(sorted(set(_children()) - before)) if started_here else None
        try:
            resources = ray.cluster_resources()
            gpus = devices.ray_gpus_per_run(self.gpus_per_run, cluster_gpus=resources.get("GPU", 0.0),
                                            device=work.options.device)
            _check_resources(resources, cpus=self.cpus_per_run, gpus=gpus)
            task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=gpus, max_retries=self.max_retries)(ray_run)
            options = dataclasses.replace(work.options, device=devices.ray_device(work.options.device, gpus))
            steps = _step_queue() if self.workers == 1 else None  # several runs at once: no single current step
            try:
                self._drive(ray, task, work, options, steps)
            finally:
                if steps is not None:
                    steps.shutdown()
        finally:
            if started_here:
                ray.shutdown()
            if reaper is not None:
                reaper.stdin.close()  # the reaper ends whatever Ray left behind, then exits

    def cancel(self) -> None:
        """No new task is submitted; tasks in flight are cancelled (their runs resume later)."""
        self._cancelled.set()
        if self._in_flight:
            ray = _import_ray()
            for ref in list(self._in_flight):
                ray.cancel(ref, force=True)

    def _connect(self, ray) -> bool:
        """Join `address`, reuse a running connection, or start a local instance; True if started here."""
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
            return False
        ray.init(num_cpus=max(1, round(self.workers * self.cpus_per_run)), include_dashboard=False,
                 log_to_driver=False)
        return True

    def _drive(self, ray, task, work: GridWork, options: ExecOptions, steps) -> None:
        exhausted = False
        while self._in_flight or not exhausted:
            while not exhausted and not self._cancelled.is_set() and len(self._in_flight) < self.workers:
                job = work.next_job()
                if job is None:
                    exhausted = True
                else:
                    self._in_flight[task.remote(job.run, job.claim, options, steps)] = job
            exhausted = exhausted or self._cancelled.is_set()
            if not self._in_flight:
                break
            ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=None if steps is None else 0.5)
            if steps is not None:
                _relay_steps(steps, work)
            for ref in ready:
                job = self._in_flight.pop(ref)
                work.finish(job, _ray_outcome(ray, ref, job, work.options))





def ray_run(run: Run, claim: Claim, options: ExecOptions, steps=None) -> Outcome:
    """`execute_run` in a Ray worker; its step progress goes to the driver's `steps` queue (None: not
    shown). A worker whose GPU the run left unusable (a sticky CUDA error) ends itself, so that Ray
    retries the task in a fresh worker, where the run resumes from its resume file."""
    track = no_progress if steps is None else _relayed_steps(lambda event: _offer(steps, event), 0)
    outcome = execute_run(run, claim, options, track)
    if outcome.device_lost:
        log.error("run %s left this worker's GPU unusable; ending the worker so that Ray retries elsewhere", outcome.run_id)
        os._exit(70)
    return outcome


def _step_queue():
    """A Ray queue (a zero-CPU actor) carrying a task's `StepEvent`s to the driver."""
    from ray.util.queue import Queue

    return Queue(maxsize=STEP_QUEUE_SIZE, actor_options={"num_cpus": 0})


def _offer(steps, event: StepEvent) -> None:
    """Put a step event on the driver's queue; progress is never worth stopping a run for, so a full
    queue or a driver that went away drops it."""
    from ray.exceptions import RayError
    from ray.util.queue import Full

    try:
        steps.put_nowait(event)
    except (Full, RayError):
        log.debug("step progress of a Ray task dropped", exc_info=True)


def _relay_steps(steps, work: GridWork) -> None:
    """Pass the step events waiting in the queue to the grid."""
    waiting = steps.qsize()
    if waiting:
        for event in steps.get_nowait_batch(waiting):
            work.relay(event)


def _children() -> list[int]:
    """The pids of this process's children."""
    return [pid for pid in descendants([os.getpid()]) if pid != os.getpid()]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'crossling[ray]'") from None
    return ray


def _check_resources(available: dict[str, float], *, cpus: float, gpus: float) -> None:
    """A request no node can satisfy would wait forever: refuse it with what the cluster has."""
    for name, wanted in (("CPU", cpus), ("GPU", gpus)):
        if wanted > available.get(name, 0.0):
            raise ConfigError(
                f"each run requests {wanted:g} {name}(s) but the Ray cluster has {available.get(name, 0.0):g}; "
                f"lower --{name.lower()}s-per-run or add nodes"
            )


def _ray_outcome(ray, ref, job: Job, options: ExecOptions) -> Outcome:
    """The task's outcome; a task Ray gave up on (its worker died more than max_retries times) is failed,
    a cancelled one is neither done nor failed (it resumes later)."""
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return Outcome(job.run.run_id, CANCELLED, 0.0)
    except ray.exceptions.RayError as error:
        options.store().write_error(job.run.run_id, error, traceback.format_exc())
        return Outcome(job.run.run_id, FAILED, 0.0, f"{type(error).__name__}: {error}")
