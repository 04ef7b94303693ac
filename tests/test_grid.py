"""The grid: plan / run / status over a store, resume after kill -9, concurrent grid processes,
failing runs and --retry-failed, shards, progress events; the mechanics with a quick run function,
then the real fine-tuning path."""

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from grid_factory import (
    REAL_RECIPE,
    TOY,
    cli,
    make_prepared,
    make_real_grid,
    model_digest,
    start_driver,
    starts,
    wait_for,
    write_study,
)

from crossling import paths
from crossling.atomic import read_json
from crossling.cli import main
from crossling.errors import ConfigError, DataError
from crossling.executors import ProcessExecutor, RayExecutor
from crossling.grid import PlanCounts, lane_order, plan_study, run_study, study_status
from crossling.store import Store
from crossling.study import expand_runs, load_study, study_plan

TOY_MODELS = ["toy/alpha", "toy/beta"]


@pytest.fixture
def toy_study(tmp_path):
    make_prepared(tmp_path / "prepared", counts=(2, 1, 1))
    return load_study(write_study(tmp_path / "toy.toml", TOY_MODELS))


def cers(store_root, study) -> dict[str, float]:
    store = Store(store_root)
    return {run.run_id: store.result(run.run_id).test_cer() for run in expand_runs(study)}


def test_plan_run_status(toy_study, tmp_path):
    store = tmp_path / "toy.runs"
    assert plan_study(toy_study) == (counts := plan_study(toy_study, store))
    assert (counts.total, counts.pending, counts.done) == (4, 4, 0)
    assert not store.exists()  # planning is read-only: the first run creates the store and its plan
    events = []
    summary = run_study(toy_study, run_function=TOY, progress=events.append)
    assert json.loads(paths.store_plan_path(store).read_text())["runs"][0]["checkpoint"] == "toy/alpha"
    assert Store(store).read_plan() == study_plan(toy_study)  # the typed plan round-trips
    assert (summary.total, summary.executed, summary.done, summary.failed) == (4, 4, 4, 0)
    assert [e.event for e in events].count("done") == 4 and events[-1].done == 4 and events[-1].pending == 0
    assert events[0].event == "started" and events[0].running == 1
    status = study_status(toy_study, store)
    assert (status.counts.done, status.counts.pending) == (4, 0)
    assert status.wall_seconds == pytest.approx(6.0) and status.device_hours == pytest.approx(4 * 1.5 / 3600)
    assert status.audio_seconds_per_second == 20.0 and status.peak_memory_mb == 100.0
    assert status.remaining_seconds == 0.0 and all(r.cer is not None for r in status.runs)
    again = run_study(toy_study, run_function=TOY)
    assert (again.executed, again.already_done) == (0, 4)  # identical runs are never repeated
    for run in expand_runs(toy_study):
        assert len(starts(store, run.run_id)) == 1


def test_changed_recipe_is_new_runs_and_remaining_time_is_projected(toy_study, tmp_path):
    store = tmp_path / "toy.runs"
    run_study(toy_study, run_function=TOY, shard=(0, 2))
    status = study_status(toy_study, store)
    assert (status.counts.done, status.counts.pending) == (2, 2)
    assert status.remaining_seconds == pytest.approx(2 * 1.5)
    changed = load_study(write_study(tmp_path / "toy.toml", TOY_MODELS, recipe={"max_steps": 13, "checkpoint_every": 2}))
    assert plan_study(changed, store).pending == 4


def test_shards_split_the_grid(toy_study, tmp_path):
    store = tmp_path / "toy.runs"
    first = run_study(toy_study, run_function=TOY, shard=(0, 3))
    second = run_study(toy_study, run_function=TOY, shard=(1, 3))
    third = run_study(toy_study, run_function=TOY, shard=(2, 3))
    assert (first.executed, second.executed, third.executed) == (2, 1, 1)
    assert plan_study(toy_study, store).done == 4
    with pytest.raises(ConfigError, match="0 <= i < n"):
        run_study(toy_study, run_function=TOY, shard=(3, 3))


def test_lanes_keep_every_seed_of_a_checkpoint_on_a_language_in_one_grid_process(tmp_path):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b", "toy/c"], seeds=(0, 1, 2)))
    runs = expand_runs(study)
    group = {run.run_id: (run.model, run.language) for run in runs}
    orders = [lane_order(runs, (index, 2)) for index in range(2)]
    for order in orders:  # every run, once
        assert sorted(run.run_id for run in order) == sorted(group)
    own = [{group[run.run_id] for run in order[: len(runs) // 2]} for order in orders]
    assert len(own[0]) == len(own[1]) == 3 and not own[0] & own[1]  # 6 groups dealt 3 + 3, none split
    assert [run.seed for run in orders[0][:3]] == [0, 1, 2] and len({group[r.run_id] for r in orders[0][:3]}) == 1
    # then the other lane's groups from its last one back (whole groups, not the run it starts next)
    assert [group[r.run_id] for r in orders[0][9::3]] == [group[r.run_id] for r in orders[1][:9:3]][::-1]
    assert lane_order(runs, (0, 1)) == runs  # one process: the study's order


def test_a_failing_run_is_recorded_the_grid_carries_on_and_retry_reruns_it(toy_study, tmp_path):
    store = tmp_path / "toy.runs"
    marker = tmp_path / "prepared" / "fail-toy_alpha"
    marker.touch()
    summary = run_study(toy_study, run_function=TOY)
    assert (summary.executed, summary.done, summary.failed) == (4, 2, 2)
    status = study_status(toy_study, store)
    assert (status.counts.failed, status.counts.done) == (2, 2)
    failed = [r for r in status.runs if r.state == "failed"]
    assert all("RuntimeError: deliberate failure of toy/alpha" in r.error for r in failed)
    error = Store(store).error(failed[0].run_id)
    assert "Traceback" in error.traceback and "toy_finetune" in error.traceback
    assert run_study(toy_study, run_function=TOY).skipped_failed == 2  # not retried unless asked
    marker.unlink()
    retried = run_study(toy_study, run_function=TOY, retry_failed=True)
    assert (retried.executed, retried.done_now, retried.already_done, retried.done) == (2, 2, 2, 4)
    assert plan_study(toy_study, store).done == 4 and Store(store).error(failed[0].run_id) is None


def test_kill_9_mid_run_then_resume_gives_the_same_results(toy_study, tmp_path):
    reference = tmp_path / "uninterrupted"
    run_study(toy_study, reference, run_function=TOY)
    store = tmp_path / "toy.runs"
    grid = start_driver(toy_study.path, store, GRID_TOY_STEP_SECONDS="0.1")
    second = expand_runs(toy_study)[1].run_id
    assert wait_for(lambda: paths.run_resume_path(Store(store).run_dir(second)).exists(), timeout=60)
    os.kill(grid.pid, signal.SIGKILL)
    grid.wait()
    assert plan_study(toy_study, store).done == 1  # one finished, one interrupted mid-run
    resumed = start_driver(toy_study.path, store)
    assert resumed.wait(timeout=60) == 0, resumed.stderr.read()
    assert resumed.stdout.read().split() == ["3", "3", "0"]
    assert cers(store, toy_study) == cers(reference, toy_study)
    result = Store(store).result(second)
    assert result.resumed_from and result.resumed_from[0] >= 2  # continued from its resume file
    assert [s["resumed"] for s in starts(store, second)] == [False, True]


def test_concurrent_grid_processes_run_each_run_exactly_once(tmp_path):
    make_prepared(tmp_path / "prepared", counts=(2, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b", "toy/c"], seeds=(0, 1)))
    store = tmp_path / "toy.runs"
    go = tmp_path / "go"
    grids = [start_driver(study.path, store, GRID_TOY_STEP_SECONDS="0.03", GRID_GO_FILE=str(go)) for _ in range(3)]
    assert wait_for(lambda: len(list(tmp_path.glob("go.*"))) == 3, timeout=60)
    go.touch()
    outputs = [grid.communicate(timeout=120) for grid in grids]
    assert [grid.returncode for grid in grids] == [0, 0, 0], outputs
    executed = [int(out.split()[0]) for out, _ in outputs]
    assert sum(executed) == 12 and min(executed) > 0, executed
    for run in expand_runs(study):
        attempts = starts(store, run.run_id)
        assert len(attempts) == 1, (run.run_id, attempts)
    assert {s["pid"] for run in expand_runs(study) for s in starts(store, run.run_id)} == {g.pid for g in grids}
    assert plan_study(study, store).done == 12
    assert not list((store / "claims").glob("*/*.claim"))  # every claim released


def test_missing_prepared_language_is_an_error_naming_it(tmp_path):
    make_prepared(tmp_path / "prepared", languages=("aa",), counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", TOY_MODELS, languages=("aa", "zz")))
    with pytest.raises(DataError, match=r"zz not prepared.*crossling prepare"):
        run_study(study, run_function=TOY)
    # No workers would submit nothing and report an empty, successful grid.
    for executor in (ProcessExecutor, RayExecutor):
        with pytest.raises(ConfigError, match="workers must be >= 1, got 0"):
            executor(workers=0)


def test_results_of_the_store_read_back(toy_study, tmp_path):
    run_study(toy_study, run_function=TOY)
    run = expand_runs(toy_study)[0]
    result = read_json(paths.run_result_path(Store(tmp_path / "toy.runs").run_dir(run.run_id)))
    assert result["run"]["model"] == "toy/alpha" and result["run"]["language"] == "aa"
    assert Store(tmp_path / "toy.runs").result(run.run_id).identity == run.identity


# --- the real path: crossling.finetune on tiny random checkpoints, through the CLI ---------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A 2 checkpoints x 2 languages grid of real runs, run once uninterrupted (the reference)."""
    import torch

    root = tmp_path_factory.mktemp("real")
    study = make_real_grid(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the one-thread grid processes below, so results can be compared
    try:
        assert main(["study", "run", str(study), "--store", str(root / "reference")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, study


def real_results(store: Path, study) -> dict[str, tuple]:
    results = Store(store)
    return {run.run_id: (results.result(run.run_id).scores, model_digest(results.run_dir(run.run_id)))
            for run in expand_runs(load_study(study))}


@pytest.mark.slow
def test_real_grid_plan_run_status_and_results(real, capsys):
    root, study = real
    store = str(root / "reference")
    capsys.readouterr()
    assert main(["study", "plan", str(study), "--store", store]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert plan[0] == "4 runs: 4 done, 0 failed, 0 running, 0 pending"
    cost = next(line for line in plan if line.startswith("cost:"))
    assert "params" in cost and "cannot" not in cost  # sized from the local folders' config.json
    assert main(["study", "status", str(study), "--store", store, "--runs"]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 4 done" in out and "device hours" in out and "projected remaining 0 s" in out
    assert out.count("  done ") == 4
    assert main(["results", str(study), "--store", store, "--format", "csv", "--out", str(root / "r.csv")]) == 0
    table = pd.read_csv(root / "r.csv")
    assert len(table) == 4 and set(table["status"]) == {"done"} and table["cer"].between(0, 1).all()
    assert set(table["checkpoint"]) == {"ckpt-a", "ckpt-b"} and (table["steps"] == 40).all()
    assert (table["chars"] > 0).all() and (table["peak_memory_mb"] > 0).all()
    result = Store(store).result(table["run_id"][0])
    assert result.identity.recipe.max_steps == 40 and result.cost.threads == 1


@pytest.mark.slow
def test_real_grid_killed_with_sigkill_resumes_to_the_same_results(real):
    root, study = real
    store = root / "killed"
    runs = expand_runs(load_study(study))
    grid = cli("study", "run", str(study), "--store", str(store))
    second = Store(store).run_dir(runs[1].run_id)
    assert wait_for(lambda: paths.run_resume_path(second).exists() or grid.poll() is not None, timeout=120)
    os.kill(grid.pid, signal.SIGKILL)
    grid.wait()
    assert not paths.run_result_path(second).exists(), "the run finished before it could be killed"
    assert plan_study(load_study(study), store) == PlanCounts(4, 1, 0, 0, 3)  # the dead grid's claim is not 'running'
    resumed = cli("study", "run", str(study), "--store", str(store))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "3 run(s) executed" in out and "1 already done" in out
    assert real_results(store, study) == real_results(root / "reference", study)
    assert "resumed from" in paths.run_log_path(second).read_text()
    assert [s["resumed"] for s in starts(store, runs[1].run_id)] == [False, True]


@pytest.mark.slow
def test_real_grid_in_worker_processes_matches_the_one_thread_reference(real, capsys):
    """`study run --workers 2`: two grid processes on one store, each claiming runs itself, one thread
    each: every run executed exactly once, bit-identical to one thread in one process."""
    root, study = real
    store = root / "workers"
    capsys.readouterr()
    assert main(["study", "run", str(study), "--store", str(store), "--workers", "2", "--threads", "1"]) == 0
    assert "4 run(s) executed" in capsys.readouterr().out
    assert real_results(store, study) == real_results(root / "reference", study)
    runs = expand_runs(load_study(study))
    assert all(len(starts(store, run.run_id)) == 1 for run in runs)  # each run executed exactly once
    assert len({starts(store, run.run_id)[0]["pid"] for run in runs}) == 2
    assert all(Store(store).result(run.run_id).cost.threads == 1 for run in runs)


@pytest.mark.slow
def test_real_failing_run_is_recorded_and_retried(real, capsys):
    import torch
    from tinydata_factory import make_tiny_checkpoint

    root, _ = real
    broken = root / "ckpt-broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    study = write_study(root / "failing.toml", ["ckpt-broken", "ckpt-a"], languages=("xx",), recipe=REAL_RECIPE)
    store = str(root / "failing")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["study", "run", str(study), "--store", store]) == 1  # a run failed; the grid carried on
        assert "2 run(s) executed" in capsys.readouterr().out
        assert main(["study", "status", str(study), "--store", store]) == 0
        out = capsys.readouterr().out
        assert "2 runs: 1 done, 1 failed" in out and "ModelError" in out and "ckpt-broken" in out
        error = Store(store).error(expand_runs(load_study(study))[0].run_id)
        assert "Traceback" in error.traceback and error.error.startswith("ModelError: ")
        make_tiny_checkpoint(broken, "wav2vec2")  # fix the checkpoint (same path: same run id)
        (broken / "config.json").write_text((root / "ckpt-a" / "config.json").read_text())
        assert main(["study", "run", str(study), "--store", store]) == 0
        assert "0 run(s) executed" in capsys.readouterr().out  # failed runs wait for --retry-failed
        assert main(["study", "run", str(study), "--store", store, "--retry-failed"]) == 0
        assert "1 run(s) executed" in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    assert plan_study(load_study(study), store).done == 2


# --- data sources the grid prepares itself ---------------------------------------------------------


def _study_with_data(tmp_path, data: str):
    path = tmp_path / "data.toml"
    path.write_text(f'checkpoints = ["toy/a"]\nlanguages = ["pt", "de"]\nseeds = [0]\n[data]\n{data}\n'
                    "[recipe]\nmax_steps = 4\ncheckpoint_every = 2\n")
    return load_study(path)


def test_a_common_voice_release_is_prepared_once_under_the_store(tmp_path):
    from cvfactory import standard_splits, write_release

    write_release(tmp_path / "cv", {lang: standard_splits(lang, train=8, dev=2, test=2) for lang in ("pt", "de")})
    study = _study_with_data(tmp_path, 'source = "common-voice"\nrelease = "cv"\ntrain_hours = 0.002\n'
                                       'dev_max = 1\neval_seed = 3\n')
    assert run_study(study, run_function=TOY).done == 2
    prepared = list((tmp_path / "data.runs" / "data").glob("common-voice-*"))
    assert len(prepared) == 1
    summary = paths.prepared_summary_path(prepared[0], "pt")
    assert read_json(summary)["train_hours"] == pytest.approx(0.002, abs=0.0006)
    assert (read_json(summary)["dev_utterances"], read_json(summary)["eval_seed"]) == (1, 3)  # passed through
    stamp = summary.stat().st_mtime_ns
    assert run_study(study, run_function=TOY).already_done == 2 and summary.stat().st_mtime_ns == stamp
    other = _study_with_data(tmp_path, 'source = "common-voice"\nrelease = "cv"\ntrain_hours = 0.001\n'
                                       'dev_max = 1\neval_seed = 3\n')
    assert run_study(other, run_function=TOY).executed == 2  # other data: other runs, other prepared dir
    assert len(list((tmp_path / "data.runs" / "data").glob("common-voice-*"))) == 2


@pytest.mark.parametrize("corpus_format", ["manifest", "hf", "lhotse"])
def test_a_corpus_of_any_format_is_prepared_for_the_study(tmp_path, corpus_format):
    from corpus_factory import entries, write_hf_dataset, write_lhotse, write_manifest_folder

    write = {"manifest": write_manifest_folder, "hf": write_hf_dataset, "lhotse": write_lhotse}[corpus_format]
    for language in ("pt", "de"):
        write(tmp_path / "corpus", language, entries(language, speakers=6))
    study = _study_with_data(tmp_path, f'source = "corpus"\npath = "corpus"\nformat = "{corpus_format}"\n'
                                       "train_hours = 0.002\n")
    assert run_study(study, run_function=TOY).done == 2
    (prepared,) = (tmp_path / "data.runs" / "data").glob("corpus-*")
    for language in ("pt", "de"):
        summary = read_json(paths.prepared_summary_path(prepared, language))
        assert summary["format"] == corpus_format and summary["train_hours"] == pytest.approx(0.002, abs=0.0006)
    with pytest.raises(ConfigError, match=r"\[data\].*format \(--format\) 'kaldi' is not a corpus format"):
        _study_with_data(tmp_path, 'source = "corpus"\npath = "corpus"\nformat = "kaldi"\n')


@pytest.mark.slow
def test_a_synthetic_source_is_synthesised_and_prepared(tmp_path):
    study = _study_with_data(tmp_path, 'source = "synthetic"\nhours = 0.01\ntrain_hours = 0.008\n'
                                       "speakers = [4, 2, 2]\n")
    assert run_study(study, run_function=TOY).done == 2
    (prepared,) = [p for p in (tmp_path / "data.runs" / "data").glob("synthetic-*") if not p.name.endswith("-corpus")]
    for language in ("pt", "de"):
        assert read_json(paths.prepared_summary_path(prepared, language))["train_hours"] == pytest.approx(0.008, abs=0.002)


# --- a moved project resumes (its run identities hold no absolute paths) ---------------------------

CRASH_RECIPE = {"learning_rate": 2e-3, "max_steps": 2, "batch_seconds": 8.0, "checkpoint_every": 100}


def _interrupted_project(root: Path, monkeypatch) -> tuple[Path, str]:
    """A study (relative prepared path, a local checkpoint beside it) whose only run crashed during
    evaluation, after its resume file was written; returns the study file and the run id."""
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    import crossling.finetune

    make_tiny_language(root / "prepared", "xx", n_train=6, n_dev=2, n_test=2)
    make_tiny_checkpoint(root / "ckpt-a", "wav2vec2")
    study = write_study(root / "moved.toml", ["ckpt-a"], languages=("xx",), recipe=CRASH_RECIPE)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash during evaluation")

    with monkeypatch.context() as patch:
        patch.setattr(crossling.finetune, "evaluate_model", crash)
        assert run_study(load_study(study)).failed == 1
    (run,) = expand_runs(load_study(study))
    assert paths.run_resume_path(Store(root / "moved.runs").run_dir(run.run_id)).is_file()
    return study, run.run_id


def _resume_after_move(old_root: Path, new_root: Path, run_id: str) -> Path:
    new_root.parent.mkdir(parents=True, exist_ok=True)
    os.rename(old_root, new_root)
    study = load_study(new_root / "moved.toml")
    assert [run.run_id for run in expand_runs(study)] == [run_id]  # the run id does not depend on the place
    summary = run_study(study, retry_failed=True)
    assert (summary.done, summary.failed) == (1, 0), summary.outcomes
    run_dir = Store(new_root / "moved.runs").run_dir(run_id)
    assert "resumed from" in paths.run_log_path(run_dir).read_text()
    assert not paths.run_resume_path(run_dir).exists() and not paths.run_legacy_resume_path(run_dir).exists()
    return run_dir


@pytest.mark.slow
def test_an_interrupted_run_resumes_after_the_project_is_moved_also_from_an_earlier_version(tmp_path, monkeypatch):
    """The same interruption twice: as this version leaves it, and as the earlier code did (a resume file
    named checkpoint.pt, format 1, absolute paths in its identity); each project is then moved."""
    import shutil

    import torch

    from crossling.records import legacy_identity

    _, run_id = _interrupted_project(tmp_path / "project", monkeypatch)
    old = tmp_path / "old-project"
    shutil.copytree(tmp_path / "project", old)
    (run,) = expand_runs(load_study(old / "moved.toml"))
    run_dir = Store(old / "moved.runs").run_dir(run_id)
    checkpoint = torch.load(paths.run_resume_path(run_dir), weights_only=True)
    checkpoint["state"].pop("resumed_from")
    identity = legacy_identity(prepared=old / "prepared", language="xx", model=run.model, seed=0, recipe=run.config)
    torch.save({**checkpoint, "format": 1, "identity": identity}, paths.run_legacy_resume_path(run_dir))
    paths.run_resume_path(run_dir).unlink()
    moved = _resume_after_move(tmp_path / "project", tmp_path / "moved" / "project", run_id)
    assert Store(moved.parent.parent).result(run_id).resumed_from == (2,)
    moved_old = _resume_after_move(old, tmp_path / "elsewhere", run_id)
    assert "checkpoint.pt" in paths.run_log_path(moved_old).read_text()
    assert Store(moved_old.parent.parent).result(run_id).scores == Store(moved.parent.parent).result(run_id).scores


def test_a_finished_run_of_an_earlier_version_stays_done(toy_study, tmp_path):
    """result.json files written before the records had a schema (tests/data/legacy-result.json)."""
    store = Store(tmp_path / "toy.runs")
    first = expand_runs(toy_study)[0].run_id
    legacy = (Path(__file__).parent / "data" / "legacy-result.json").read_text()
    paths.run_result_path(store.run_dir(first)).parent.mkdir(parents=True)
    paths.run_result_path(store.run_dir(first)).write_text(legacy)
    assert plan_study(toy_study).done == 1
    summary = run_study(toy_study, run_function=TOY)
    assert (summary.already_done, summary.executed) == (1, 3)
    assert paths.run_result_path(store.run_dir(first)).read_text() == legacy  # untouched
    status = study_status(toy_study, store.root)
    assert status.counts.done == 4 and status.runs[0].cer == store.result(first).test_cer()


def test_executor_flags_of_another_executor_are_errors(toy_study, capsys):
    path = str(toy_study.path)
    assert main(["study", "run", path, "--address", "auto"]) == 2
    assert "--address apply to --executor ray only" in capsys.readouterr().err
    assert main(["study", "run", path, "--executor", "ray", "--threads", "2"]) == 2
    assert "--threads applies to the local executor" in capsys.readouterr().err
    assert main(["study", "run", path, "--workers", "0"]) == 2
    assert "workers must be >= 1, got 0" in capsys.readouterr().err
    assert plan_study(toy_study).pending == 4  # nothing ran
