"""Executors: the run function by name, the local executor's records, and the Ray executor against a
REAL local Ray instance (one per module, 2 CPUs), including a worker process killed mid-run."""

import os
import signal
import threading

import pytest
from grid_factory import (
    SRC,
    TESTS,
    TOY,
    make_prepared,
    make_real_grid,
    model_digest,
    starts,
    wait_for,
    write_study,
)

from crossling import paths
from crossling.errors import ConfigError
from crossling.executors import (
    ExecOptions,
    ProcessExecutor,
    RayExecutor,
    execute_run,
    resolve_function,
    usable_cores,
)
from crossling.grid import plan_study, run_study
from crossling.store import Store
from crossling.study import expand_runs, load_study


def test_run_function_is_resolved_by_name():
    assert resolve_function("crossling.study:load_study") is load_study
    with pytest.raises(ConfigError, match="must look like 'package.module:function'"):
        resolve_function("crossling.study.load_study")
    with pytest.raises(ConfigError, match="cannot load run function"):
        resolve_function("crossling.nothing:here")


def test_execute_run_records_attempts_and_errors(tmp_path):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "s.toml", ["toy/a", "toy/broken"], languages=("aa",)))
    good, bad = expand_runs(study)
    (tmp_path / "prepared" / "fail-toy_broken").touch()
    options = ExecOptions(tmp_path / "store", tmp_path / "prepared", TOY, "cpu")
    store = Store(tmp_path / "store")
    first = store.try_claim(good.run_id)
    assert execute_run(good, first, options).status == "done"
    second = store.try_claim(bad.run_id)
    outcome = execute_run(bad, second, options)
    assert outcome.status == "failed" and outcome.error == "RuntimeError: deliberate failure of toy/broken"
    assert [(e["event"], e["token"]) for e in store.attempts(bad.run_id)] == [("start", second.token),
                                                                               ("failed", second.token)]
    store.close()
    assert store.state(good.run_id) == "done" and store.state(bad.run_id) == "failed"
    silent = ExecOptions(tmp_path / "store", tmp_path / "prepared", "grid_factory:forgetful_finetune", "cpu")
    third = store.try_claim(bad.run_id)
    assert "without writing" in execute_run(bad, third, silent).error  # no result.json = failed
    store.close()


# --- local grid processes (--workers N) ---------------------------------------------------------------


def test_worker_processes_share_the_store_and_their_events_reach_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv("GRID_TOY_STEP_SECONDS", "0.02")  # the processes inherit it: runs overlap in time
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b", "toy/c"], seeds=(0, 1)))
    events = []
    summary = run_study(study, executor=ProcessExecutor(workers=2, threads=2), progress=events.append,
                        run_function="grid_factory:threads_finetune")
    assert (summary.total, summary.executed, summary.done, summary.failed) == (12, 12, 12, 0)
    store = Store(tmp_path / "toy.runs")
    pids = {starts(store.root, run.run_id)[0]["pid"] for run in expand_runs(study)}
    assert len(pids) == 2 and os.getpid() not in pids  # two grid processes did the work
    assert all(len(starts(store.root, run.run_id)) == 1 for run in expand_runs(study))  # each run once
    assert {(store.run_dir(run.run_id) / "threads.txt").read_text() for run in expand_runs(study)} == {"2"}
    ended = [e for e in events if e.event == "done"]
    assert sorted(e.run_id for e in ended) == sorted(run.run_id for run in expand_runs(study))
    assert {e.worker for e in ended} == {0, 1} and all(e.seconds > 0 for e in ended)
    assert sum(e.event == "started" for e in events) == 12
    for event in events:  # every event's counts cover the grid
        assert event.done + event.failed + event.running + event.elsewhere + event.pending == 12
    assert events[-1].done == 12 and events[-1].eta_seconds == 0.0
    assert not list((store.root / "claims").glob("*/*.claim"))


def test_worker_processes_each_run_whole_groups_of_seeds_so_features_are_computed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("GRID_TOY_STEP_SECONDS", "0.05")
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b", "toy/c"], seeds=(0, 1, 2)))
    run_study(study, executor=ProcessExecutor(workers=2, threads=1), run_function=TOY)
    store = Store(tmp_path / "toy.runs")
    started = sorted((starts(store.root, run.run_id)[0]["time"], starts(store.root, run.run_id)[0]["pid"],
                      (run.model, run.language)) for run in expand_runs(study))
    pids: dict[tuple, set] = {}
    for _, pid, group in started:
        pids.setdefault(group, set()).add(pid)
    first = {pid: group for _, pid, group in reversed(started)}  # each process's first run
    assert len(first) == 2 and len(set(first.values())) == 2  # the two started on different groups
    assert sum(len(owners) > 1 for owners in pids.values()) <= 1  # at most the group taken over at the end


def test_worker_processes_get_usable_cores_over_workers_threads_by_default():
    assert ProcessExecutor(workers=3).threads == max(1, usable_cores() // 3)
    assert ProcessExecutor(workers=10 * usable_cores()).threads == 1
    with pytest.raises(ConfigError, match="threads per worker must be >= 1"):
        ProcessExecutor(workers=1, threads=0)


def test_cancelling_worker_processes_releases_their_runs_which_resume_later(tmp_path, monkeypatch):
    monkeypatch.setenv("GRID_TOY_STEP_SECONDS", "0.1")
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b"], languages=("aa",)))
    executor = ProcessExecutor(workers=2, threads=1)
    grid, box = in_thread(run_study, study=study, executor=executor, run_function=TOY)
    store = Store(tmp_path / "toy.runs")
    assert wait_for(lambda: any(paths.run_resume_path(store.run_dir(r.run_id)).exists() for r in expand_runs(study)),
                    timeout=60)
    executor.cancel()
    grid.join(timeout=60)
    assert not grid.is_alive() and box["summary"].done < 2
    assert not list((store.root / "claims").glob("*/*.claim"))  # released on the way out
    assert {store.state(r.run_id) for r in expand_runs(study)} <= {"pending", "done"}
    monkeypatch.setenv("GRID_TOY_STEP_SECONDS", "0")
    again = run_study(study, run_function=TOY)
    assert again.done == 2 and any(store.result(r.run_id).resumed_from for r in expand_runs(study))


@pytest.fixture(scope="module")
def ray_instance():
    """One real local Ray instance for the module; its workers import crossling and the test helpers."""
    ray = pytest.importorskip("ray")
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "GRID_TOY_STEP_SECONDS")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS)])
    os.environ["GRID_TOY_STEP_SECONDS"] = "0.05"  # workers inherit this: toy runs take ~0.6 s
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    yield ray
    ray.shutdown()


def kill_worker_mid_run(store_root, run_id, grid: threading.Thread) -> int:
    """Wait until `run_id` has written a checkpoint, then SIGKILL the Ray worker executing it."""
    run_dir = Store(store_root).run_dir(run_id)
    assert wait_for(lambda: paths.run_resume_path(run_dir).exists() or not grid.is_alive(), timeout=180)
    assert not paths.run_result_path(run_dir).exists(), "the run finished before it could be killed"
    pid = starts(store_root, run_id)[0]["pid"]
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return pid


def in_thread(function, **kwargs) -> tuple[threading.Thread, dict]:
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("summary", function(**kwargs)))
    thread.start()
    return thread, box


@pytest.mark.slow
def test_ray_executor_runs_the_grid_in_ray_workers(ray_instance, tmp_path):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b", "toy/broken"], languages=("aa", "bb")))
    (tmp_path / "prepared" / "fail-toy_broken").touch()
    summary = run_study(study, executor=RayExecutor(workers=2), run_function=TOY)
    assert (summary.executed, summary.done, summary.failed) == (6, 4, 2)
    store = Store(tmp_path / "toy.runs")
    pids = {starts(store.root, run.run_id)[0]["pid"] for run in expand_runs(study)}
    assert os.getpid() not in pids  # executed in Ray worker processes
    assert "deliberate failure" in store.error(expand_runs(study)[-1].run_id).traceback
    assert not list((store.root / "claims").glob("*/*.claim"))


@pytest.mark.slow
def test_ray_with_one_worker_shows_the_current_runs_steps(ray_instance, tmp_path):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b"], languages=("aa",),
                                   recipe={"max_steps": 30, "checkpoint_every": 10}))
    updates = []
    summary = run_study(study, executor=RayExecutor(workers=1), run_function=TOY, progress=updates.append)
    assert summary.done == 2
    steps = [update.step for update in updates if update.step]
    assert steps.count("toy steps 30/30") == 2 and "toy steps 1/30" in steps  # each run, from its Ray task
    assert all(update.running == 1 for update in updates if update.step)


@pytest.mark.slow
def test_ray_reschedules_a_killed_worker_and_the_run_resumes(ray_instance, tmp_path):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b"], recipe={"max_steps": 40,
                                                                                      "checkpoint_every": 4}))
    victim = expand_runs(study)[0].run_id
    grid, box = in_thread(run_study, study=study, executor=RayExecutor(workers=2), run_function=TOY)
    killed = kill_worker_mid_run(tmp_path / "toy.runs", victim, grid)
    grid.join(timeout=180)
    assert box["summary"].done == 4 and box["summary"].failed == 0
    attempts = starts(tmp_path / "toy.runs", victim)
    assert [a["pid"] == killed for a in attempts] == [True, False] and attempts[1]["resumed"]
    result = Store(tmp_path / "toy.runs").result(victim)
    assert result.resumed_from and result.steps == 40
    reference = run_study(study, tmp_path / "reference", run_function=TOY)  # in-process, uninterrupted
    assert reference.done == 4
    assert result.scores == Store(tmp_path / "reference").result(victim).scores


@pytest.mark.slow
def test_ray_real_grid_with_a_killed_worker_matches_the_uninterrupted_grid(ray_instance, tmp_path):
    import torch

    study = load_study(make_real_grid(tmp_path))
    victim = expand_runs(study)[0].run_id
    grid, box = in_thread(run_study, study=study, store=tmp_path / "ray", executor=RayExecutor(workers=2))
    kill_worker_mid_run(tmp_path / "ray", victim, grid)
    grid.join(timeout=300)
    assert box["summary"].done == 4 and box["summary"].failed == 0
    assert [a["resumed"] for a in starts(tmp_path / "ray", victim)] == [False, True]
    assert "resumed from" in paths.run_log_path(Store(tmp_path / "ray").run_dir(victim)).read_text()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray gives each 1-CPU task one thread
    try:
        run_study(study, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    assert plan_study(study, tmp_path / "local").done == 4
    for run in expand_runs(study):
        ray_run, local_run = (Store(tmp_path / s).run_dir(run.run_id) for s in ("ray", "local"))
        assert Store(tmp_path / "ray").result(run.run_id).scores == Store(tmp_path / "local").result(run.run_id).scores
        assert model_digest(ray_run) == model_digest(local_run)


@pytest.mark.slow
def test_ray_refuses_a_request_no_node_can_satisfy(ray_instance, tmp_path):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a"], languages=("aa",)))
    with pytest.raises(ConfigError, match=r"requests 1 GPU\(s\) but the Ray cluster has 0"):
        run_study(study, executor=RayExecutor(gpus_per_run=1), run_function=TOY)
    assert plan_study(study).pending == 1 and not list((tmp_path / "toy.runs" / "claims").glob("*/*.claim"))


@pytest.mark.slow
def test_a_run_retried_on_a_node_that_mounts_the_data_elsewhere_resumes_to_the_same_result(tmp_path, monkeypatch):
    """A real run killed after its resume file (step 2 of 4), retried where the prepared folder is mounted
    at another path (CROSSLING_DATA_ROOT): it finds the data by its content fingerprint, resumes, and ends
    with the weights and scores of an uninterrupted run."""
    from grid_factory import model_digest
    from tinydata_factory import make_prepared as make_tiny_prepared
    from tinydata_factory import make_tiny_checkpoint

    from crossling import finetune
    from crossling.config import TrainConfig
    from crossling.grid import content_fingerprints
    from crossling.prepared import DATA_ROOT_ENV
    from crossling.records import RunRecord, run_identity
    from crossling.study import Run

    checkpoint = str(make_tiny_checkpoint(tmp_path / "ckpt"))
    recipe = TrainConfig(learning_rate=2e-3, max_steps=4, batch_seconds=8.0, checkpoint_every=2, eval_every=0)
    identity = run_identity(model="tiny", weights="local:tiny", language="xx", seed=0, recipe=recipe,
                            data={"source": "prepared", "path": "prepared"})
    run = Run(run_id="tiny-xx-0", checkpoint="tiny", model=checkpoint, settings=(), identity=identity)

    def execute(store_dir, prepared, fingerprints):
        store = Store(store_dir)
        options = ExecOptions(store_dir, prepared, device="cpu", fingerprints=fingerprints)
        outcome = execute_run(run, store.try_claim(run.run_id), options)
        store.close()
        return outcome, store.run_dir(run.run_id)

    reference = make_tiny_prepared(tmp_path / "reference" / "prepared", n_train=12, n_dev=2, n_test=2)
    fingerprints = content_fingerprints(reference, ("xx",))
    outcome, whole = execute(tmp_path / "store-a", reference, fingerprints)
    assert outcome.status == "done"
    driver = make_tiny_prepared(tmp_path / "driver" / "prepared", n_train=12, n_dev=2, n_test=2)
    assert content_fingerprints(driver, ("xx",)) == fingerprints  # the same content at another path
    fitting_step, calls = finetune.fitting_step, []

    def dies_in_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("node lost")
        return fitting_step(*args, **kwargs)

    monkeypatch.setattr(finetune, "fitting_step", dies_in_step_3)
    outcome, _ = execute(tmp_path / "store-b", driver, fingerprints)
    assert outcome.status == "failed"
    monkeypatch.setattr(finetune, "fitting_step", fitting_step)
    (tmp_path / "node2").mkdir()
    os.replace(driver, tmp_path / "node2" / "prepared")  # this node mounts the data elsewhere
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "node2"))
    outcome, retried = execute(tmp_path / "store-b", driver, fingerprints)
    assert outcome.status == "done"
    a, b = (RunRecord.read(paths.run_result_path(d)) for d in (whole, retried))
    assert b.resumed_from == (2,) and a.scores == b.scores and model_digest(whole) == model_digest(retried)
