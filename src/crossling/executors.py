"""Executors: take claimed runs from the grid and execute them, in this process (`local`) or as
Ray tasks (`ray`); each execution records its attempt, its error or the run function's result."""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossling import paths
from crossling.errors import ConfigError
from crossling.progress import no_progress
from crossling.store import DONE, FAILED, Claim, Store
from crossling.study import Run

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
#: The function one run calls, as 'module:attribute' so a Ray worker can import it by name.
DEFAULT_RUN_FUNCTION = "crossling.finetune:run_finetune"


@dataclass(frozen=True)
class Job:
    """A run this process has claimed, ready to execute."""

    run: Run
    claim: Claim


@dataclass(frozen=True)
class Outcome:
    """How one execution ended: 'done' or 'failed' (with the error message)."""

    run_id: str
    status: str
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class ExecOptions:
    """What every execution needs besides its run."""

    store_root: Path
    prepared: Path
    run_function: str = DEFAULT_RUN_FUNCTION
    device: str = "auto"


def resolve_function(name: str) -> Callable[..., Any]:
    """'package.module:function' -> the function."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"run function {name!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot load run function {name!r}: {error}") from None


def execute_run(run: Run, token: str, options: ExecOptions) -> Outcome:
    """Execute one claimed run in this process: the run function resumes from the run directory's
    checkpoint if one exists and writes result.json last. Exceptions become error.json."""
    store = Store(options.store_root)
    run_dir = store.run_dir(run.run_id)
    attempt = sum(a["event"] == "start" for a in store.attempts(run.run_id)) + 1
    resumable = (paths.run_resume_path(run_dir), paths.run_legacy_resume_path(run_dir))
    store.log_attempt(run.run_id, "start", token=token, attempt=attempt, resumed=any(p.is_file() for p in resumable))
    started = time.monotonic()
    try:
        function = resolve_function(options.run_function)
        function(identity=run.identity, model=run.model, prepared=Path(options.prepared), out=run_dir,
                 device=options.device, track=no_progress)
        if not paths.run_result_path(run_dir).is_file():
            raise RuntimeError(f"{options.run_function} returned without writing {paths.run_result_path(run_dir)}")
    except Exception as error:  # a failing run is recorded and the grid carries on
        store.write_error(run.run_id, error, traceback.format_exc())
        seconds = time.monotonic() - started
        store.log_attempt(run.run_id, FAILED, token=token, attempt=attempt, seconds=seconds, error=str(error))
        log.error("run %s failed: %s", run.run_id, error)
        return Outcome(run.run_id, FAILED, seconds, f"{type(error).__name__}: {error}")
    store.clear_error(run.run_id)
    seconds = time.monotonic() - started
    store.log_attempt(run.run_id, DONE, token=token, attempt=attempt, seconds=seconds)
    return Outcome(run.run_id, DONE, seconds)


NextJob = Callable[[], Job | None]
Finish = Callable[[Job, Outcome], None]


def run_local(next_job: NextJob, finish: Finish, options: ExecOptions) -> None:
    """In-process and sequential: claim one run, execute it, repeat."""
    while (job := next_job()) is not None:
        finish(job, execute_run(job.run, job.claim.token, options))


@dataclass(frozen=True)
class RayOptions:
    """Ray scheduling: `workers` runs in flight at once, each requesting `cpus_per_run` CPUs and
    `gpus_per_run` GPUs; a task whose worker process dies is retried up to `max_retries` times."""

    workers: int = 1
    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 3


def run_ray(next_job: NextJob, finish: Finish, options: ExecOptions, ray_options: RayOptions) -> None:
    """Each run a Ray task. Claims stay with this (driver) process, so a task rescheduled after its
    worker died still runs under the same claim, and resumes from the run's checkpoint."""
    ray = _import_ray()
    started_here = _connect(ray, ray_options)
    try:
        _check_resources(ray.cluster_resources(), ray_options)
        task = ray.remote(
            num_cpus=ray_options.cpus_per_run, num_gpus=ray_options.gpus_per_run, max_retries=ray_options.max_retries
        )(execute_run)
        _drive(ray, task, next_job, finish, options, ray_options.workers)
    finally:
        if started_here:
            ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray executor needs Ray: pip install 'crossling[ray]'") from None
    return ray


def _connect(ray, ray_options: RayOptions) -> bool:
    """Join `address`, reuse a running connection, or start a local instance; True if started here."""
    if ray.is_initialized():
        return False
    if ray_options.address:
        ray.init(address=ray_options.address, log_to_driver=False)
        return False
    ray.init(
        num_cpus=max(1, round(ray_options.workers * ray_options.cpus_per_run)),
        include_dashboard=False,
        log_to_driver=False,
    )
    return True


def _check_resources(available: dict[str, float], ray_options: RayOptions) -> None:
    """A request no node can satisfy would wait forever: refuse it with what the cluster has."""
    for name, wanted in (("CPU", ray_options.cpus_per_run), ("GPU", ray_options.gpus_per_run)):
        if wanted > available.get(name, 0.0):
            raise ConfigError(
                f"each run requests {wanted:g} {name}(s) but the Ray cluster has {available.get(name, 0.0):g}; "
                f"lower --{name.lower()}s-per-run or add nodes"
            )


def _drive(ray, task, next_job: NextJob, finish: Finish, options: ExecOptions, workers: int) -> None:
    in_flight: dict[Any, Job] = {}
    exhausted = False
    while in_flight or not exhausted:
        while not exhausted and len(in_flight) < workers:
            job = next_job()
            if job is None:
                exhausted = True
            else:
                in_flight[task.remote(job.run, job.claim.token, options)] = job
        if not in_flight:
            break
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            job = in_flight.pop(ref)
            finish(job, _outcome(ray, ref, job, options))


def _outcome(ray, ref, job: Job, options: ExecOptions) -> Outcome:
    """The task's outcome; a task Ray gave up on (worker died more than max_retries times) is failed."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as error:
        Store(options.store_root).write_error(job.run.run_id, error, traceback.format_exc())
        return Outcome(job.run.run_id, FAILED, 0.0, f"{type(error).__name__}: {error}")
