"""Fault injection on the grid (issue 17): owners paused past their heartbeat, killed owners, corrupt
records, debris-free takeover. Each test reproduces one break of the earlier code."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from grid_factory import TOY, environment, make_prepared, start_driver, wait_for, write_study

from crossling import paths
from crossling.cli import main
from crossling.grid import plan_study, run_study
from crossling.results import load_results_table
from crossling.stats import split_missing
from crossling.store import Store
from crossling.study import expand_runs, load_study


def _events(store_root, run_id) -> list[dict]:
    path = paths.store_attempts_path(store_root, run_id)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _holder(store_root, run_id) -> int | None:
    owner = Store(store_root).claim_owner(run_id)
    return owner["pid"] if owner else None


def _resumable(store_root, run_id) -> bool:
    """The run has written a resume file (its name in any version)."""
    run_dir = Store(store_root).run_dir(run_id)
    return any((run_dir / name).is_file() for name in ("resume.pt", "checkpoint.pt"))


@pytest.fixture
def slow_study(tmp_path):
    """Four toy runs of 12 steps, a resume file every 2 steps."""
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    return load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b"]))


def _kill(process) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_a_worker_takes_over_the_run_of_a_worker_killed_after_it_skipped_that_run(slow_study, tmp_path):
    store = tmp_path / "toy.runs"
    first, *others = [run.run_id for run in expand_runs(slow_study)]
    a = start_driver(slow_study.path, store, GRID_TOY_STEP_SECONDS="0.15")
    b = None
    try:
        assert wait_for(lambda: _holder(store, first) == a.pid, timeout=60)
        b = start_driver(slow_study.path, store, GRID_TOY_STEP_SECONDS="0.15")
        assert wait_for(lambda: any(_holder(store, r) == b.pid for r in others), timeout=60)  # B is past run 1
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        out, err = b.communicate(timeout=120)
    finally:
        _kill(a)
        if b is not None:
            _kill(b)
    assert b.returncode == 0, err
    assert plan_study(slow_study, store).done == 4  # nothing abandoned while a worker lives
    assert [e["pid"] for e in _events(store, first) if e["event"] == "done"] == [b.pid]


@pytest.mark.slow
def test_an_owner_paused_past_its_heartbeat_stops_at_its_next_write_and_never_writes_a_result(slow_study, tmp_path):
    store = tmp_path / "toy.runs"
    first = expand_runs(slow_study)[0].run_id
    a = start_driver(slow_study.path, store, GRID_TOY_STEP_SECONDS="0.15")
    b = None
    try:
        assert wait_for(lambda: _resumable(store, first), timeout=60)
        os.kill(a.pid, signal.SIGSTOP)  # a Slurm suspend, a VM freeze
        b = start_driver(slow_study.path, store, GRID_TOY_STEP_SECONDS="0.15")
        assert wait_for(lambda: any(e["event"] == "start" and e["pid"] == b.pid for e in _events(store, first)),
                        timeout=60)  # B took the run over once A's heartbeat went stale
        os.kill(a.pid, signal.SIGCONT)
        outputs = [p.communicate(timeout=120) for p in (a, b)]
    finally:
        for process in (a, b):
            if process is not None:
                os.kill(process.pid, signal.SIGCONT) if process.poll() is None else None
                _kill(process)
    assert (a.returncode, b.returncode) == (0, 0), outputs
    events = _events(store, first)
    by_a = [e["event"] for e in events if e["pid"] == a.pid]
    assert "done" not in by_a and "lost" in by_a, events  # A stopped at its next write
    assert [e["pid"] for e in events if e["event"] == "done"] == [b.pid]
    starts = {e["pid"]: e.get("generation") for e in events if e["event"] == "start"}
    assert starts[b.pid] > starts[a.pid]  # B's claim is a later generation
    assert plan_study(slow_study, store).done == 4


def test_a_corrupt_result_or_torn_attempt_log_is_quarantined_reported_and_rerun(tmp_path, capsys):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b"]))
    store = Store(tmp_path / "toy.runs")
    run_study(study, store.root, run_function=TOY)
    truncated, torn, *_ = [run.run_id for run in expand_runs(study)]
    result = paths.run_result_path(store.run_dir(truncated))
    result.write_text(result.read_text()[:40])  # a disk that lost the end of the file
    paths.run_result_path(store.run_dir(torn)).unlink()  # an interrupted run ...
    with open(paths.store_attempts_path(store.root, torn), "a") as log:
        log.write('{"event": "start", "ti')  # ... whose last attempt line was torn by a crash

    assert main(["study", "status", str(study.path), "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "2 done, 0 failed, 0 running, 2 pending" in out and f"corrupt  {truncated}: renamed aside result.json" in out
    assert [p.name.split(".corrupt-")[0] for p in store.quarantined(truncated)] == ["result.json"]
    table = load_results_table(study, store.root)
    usable, missing = split_missing(table)
    assert list(missing["run_id"]) == [truncated, torn] and missing["reason"].iloc[0] == "status quarantined"

    summary = run_study(study, store.root, run_function=TOY)  # the grid carries on
    assert (summary.executed, summary.done, summary.failed) == (2, 4, 0)
    assert [p.name.split(".corrupt-")[0] for p in store.quarantined(torn)] == ["attempts.jsonl"]
    events = [e["event"] for e in store.attempts(torn)]
    assert events == ["start", "done", "start", "done"]  # the good lines kept, the torn one set aside
    assert paths.store_attempts_path(store.root, torn).read_text().endswith("\n")


def test_a_result_copied_from_another_run_is_not_this_runs(tmp_path):
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b"], languages=("aa",)))
    store = Store(tmp_path / "toy.runs")
    first, second = [run.run_id for run in expand_runs(study)]
    run_study(study, store.root, run_function=TOY, shard=(0, 2))
    copy = paths.run_result_path(store.run_dir(second))
    copy.parent.mkdir(parents=True)
    shutil.copy(paths.run_result_path(store.run_dir(first)), copy)
    assert store.state(second) == "pending" and store.quarantined(second)
    assert run_study(study, store.root, run_function=TOY).executed == 1
    assert store.result(second).identity == expand_runs(study)[1].identity


# --- checkpoints that would run code -------------------------------------------------------------------


class _Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path, marker):
    import torch

    torch.save({"model": {}, "x": _Payload(marker)}, path)


@pytest.mark.slow
def test_finetune_refuses_a_crafted_resume_file_naming_it(tmp_path, capsys):
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    prepared = make_tiny_language(tmp_path / "prepared", "xx", n_train=4, n_dev=2, n_test=2)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    out, marker = tmp_path / "run", tmp_path / "code-ran"
    out.mkdir()
    crafted = out / "checkpoint.pt"  # the name earlier versions gave the resume file (still read)
    _crafted(crafted, marker)
    argv = ["finetune", "--data", str(prepared), "--language", "xx", "--model", str(checkpoint), "--out", str(out),
            "--steps", "2", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{crafted}: refused to load" in err and "Traceback" not in err
    assert not marker.exists() and crafted.exists()  # nothing ran, nothing deleted


@pytest.mark.slow
def test_finetune_and_evaluate_refuse_crafted_model_weights_naming_the_file(tmp_path, capsys):
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    prepared = make_tiny_language(tmp_path / "prepared", "xx", n_train=4, n_dev=2, n_test=2)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    for weights in checkpoint.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "code-ran"
    _crafted(checkpoint / "pytorch_model.bin", marker)
    finetune = ["finetune", "--data", str(prepared), "--language", "xx", "--model", str(checkpoint),
                "--out", str(tmp_path / "run"), "--steps", "2", "--device", "cpu"]
    evaluate = ["evaluate", str(checkpoint), "--data", str(prepared), "--language", "xx", "--device", "cpu"]
    for argv in (finetune, evaluate):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{checkpoint / 'pytorch_model.bin'}: refused to load" in err and "Traceback" not in err, err
    assert not marker.exists()


# --- OS errors and wrong file types: clear errors, exit 2 ------------------------------------------------


@pytest.mark.slow
def test_a_read_only_out_is_a_clear_error_for_every_command_that_writes(tmp_path, capsys):
    from cvfactory import standard_splits, write_release
    from faults import tmpfs
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    release = write_release(tmp_path / "cv", {"pt": standard_splits("pt", train=4, dev=2, test=2)})
    make_prepared(tmp_path / "prepared", counts=(8, 1, 1))  # a batch of 8 clips to pre-train on
    study = write_study(tmp_path / "toy.toml", ["toy/a"], languages=("aa",))
    run_study(load_study(study), tmp_path / "toy.runs", run_function=TOY)
    tiny = make_tiny_language(tmp_path / "tiny", "xx", n_train=4, n_dev=2, n_test=2)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        commands = {
            "prepare": ["prepare", str(release), "--languages", "pt", "--out", str(ro / "p"), "--workers", "1"],
            "finetune": ["finetune", "--data", str(tiny), "--language", "xx", "--model", str(checkpoint),
                         "--out", str(ro / "run"), "--steps", "2", "--device", "cpu"],
            "pretrain": ["pretrain", "--data", str(tmp_path / "prepared"), "--languages", "aa", "--config", "micro",
                         "--out", str(ro / "pt"), "--steps", "2", "--threads", "1"],
            "results": ["results", str(study), "--store", str(tmp_path / "toy.runs"), "--out", str(ro / "r.csv")],
            "report": ["report", str(study), "--store", str(tmp_path / "toy.runs"), "--out", str(ro / "rep")],
            "synth": ["synth", "--languages", "es", "--hours", "0.001", "--out", str(ro / "corpus"), "--workers", "1"],
            "study run": ["study", "run", str(study), "--store", str(ro / "store")],
        }
        for name, argv in commands.items():
            assert main(argv) == 2, name
            err = capsys.readouterr().err
            assert str(ro) in err and ("read-only" in err.lower()), (name, err)
        assert main(["study", "plan", str(study), "--store", str(ro / "store")]) == 0  # planning writes nothing


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_and_the_run_resumes_once_there_is_space(tmp_path, capsys):
    from faults import tmpfs
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    tiny = make_tiny_language(tmp_path / "tiny", "xx", n_train=4, n_dev=2, n_test=2)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    with tmpfs(tmp_path / "small", size="400k") as small:
        argv = ["finetune", "--data", str(tiny), "--language", "xx", "--model", str(checkpoint),
                "--out", str(small / "run"), "--steps", "2", "--device", "cpu"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no space left on the device" in err and str(small / "run") in err, err
        assert not [p for p in (small / "run").iterdir() if p.name.endswith(".tmp")]  # no half-written file left
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)  # space is freed
        assert main(argv) == 0 and paths.run_result_path(small / "run").is_file()


@pytest.mark.slow
def test_wrong_file_types_and_bad_seeds_are_clear_errors_before_any_work(tmp_path, capsys):
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    tiny = make_tiny_language(tmp_path / "tiny", "xx", n_train=2, n_dev=1, n_test=1)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    out = tmp_path / "run"
    out.mkdir()
    (out / "model").write_text("my notes")  # a file where the fine-tuned model folder goes
    argv = ["finetune", "--data", str(tiny), "--language", "xx", "--model", str(checkpoint),
            "--out", str(out), "--steps", "2", "--device", "cpu"]
    assert main(argv) == 2
    assert f"{out / 'model'}: expected the folder crossling saves the fine-tuned model in" in capsys.readouterr().err
    assert (out / "model").read_text() == "my notes"
    assert main([*argv[:-4], "--seed", "-1"]) == 2  # a usage error: exit status 2 (returned, as every error)
    assert "a seed must be an integer from 0 to 4294967295" in capsys.readouterr().err
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = write_study(tmp_path / "neg.toml", ["toy/a"], seeds=(-1,))
    assert main(["study", "plan", str(study)]) == 2
    assert f"{study}: seeds: a seed must be an integer" in capsys.readouterr().err


# --- child processes end with crossling -------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_synthesis_workers_end_when_crossling_is_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-m", "crossling", "synth", "--languages", "es", "tr", "--hours", "0.5",
                               "--out", str(tmp_path / "corpus"), "--workers", "2"], env=environment(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = []
    try:
        assert wait_for(lambda: len(_children(parent.pid)) >= 2, timeout=120)
        time.sleep(2)  # the workers are rendering
        children = _children(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not any(_alive(c) for c in children), timeout=15), \
            [c for c in children if _alive(c)]
    finally:
        _kill(parent)
        for child in children:  # the earlier code's orphans: ours to end
            if _alive(child):
                os.kill(child, signal.SIGKILL)


# --- only what the run made is removed; run directories are shared-store friendly; one finetune per --out ---

HOLD_LOCK = """
import sys, time
from pathlib import Path
from crossling.rundir import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_finetune_removes_only_its_own_temporaries_and_saves_the_model_with_the_umasks_permissions(tmp_path):
    from tinydata_factory import make_prepared as make_tiny_language
    from tinydata_factory import make_tiny_checkpoint

    tiny = make_tiny_language(tmp_path / "tiny", "xx", n_train=4, n_dev=2, n_test=2)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    out = tmp_path / "thesis"
    (out / ".model.backup").mkdir(parents=True)
    (out / ".model.backup" / "weights.bin").write_text("mine")
    (out / ".thesis.tex.tmp").write_text("my draft")
    (out / ".result.json.crossling-abcd1234.tmp").write_text("{")  # what a killed run of ours leaves
    previous = os.umask(0o022)
    try:
        argv = ["finetune", "--data", str(tiny), "--language", "xx", "--model", str(checkpoint), "--out", str(out),
                "--steps", "2", "--device", "cpu"]
        assert main(argv) == 0
    finally:
        os.umask(previous)
    assert (out / ".model.backup" / "weights.bin").read_text() == "mine"
    assert (out / ".thesis.tex.tmp").read_text() == "my draft"
    assert not (out / ".result.json.crossling-abcd1234.tmp").exists()
    assert (paths.run_model_dir(out).stat().st_mode & 0o777) == 0o755  # readable by others on a shared store


@pytest.mark.slow
def test_a_second_finetune_on_the_same_out_is_refused_while_the_first_runs(tmp_path, capsys):
    from tinydata_factory import make_prepared as make_tiny_language

    tiny = make_tiny_language(tmp_path / "tiny", "xx", n_train=2, n_dev=1, n_test=1)
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], env=environment(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["finetune", "--data", str(tiny), "--language", "xx", "--model", "ckpt", "--out", str(out)]
        assert main(argv) == 2
        assert f"{out}: another crossling finetune (pid {holder.pid}) is working in this folder" in \
            capsys.readouterr().err
    finally:
        _kill(holder)


RAY_DRIVER = """
import sys
from crossling.executors import RayExecutor
from crossling.grid import run_study
from crossling.study import load_study
run_study(load_study(sys.argv[1]), sys.argv[2], executor=RayExecutor(workers=1), run_function=sys.argv[3])
"""


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        children = _children(queue.pop())
        found.extend(children)
        queue.extend(children)
    return found


@pytest.mark.slow
def test_killing_a_ray_driver_leaves_none_of_the_processes_of_the_ray_instance_it_started(slow_study, tmp_path):
    pytest.importorskip("ray")
    store = tmp_path / "toy.runs"
    first = expand_runs(slow_study)[0].run_id
    driver = subprocess.Popen([sys.executable, "-c", RAY_DRIVER, str(slow_study.path), str(store), TOY],
                              env=environment(GRID_TOY_STEP_SECONDS="0.5"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    tree = []
    try:
        assert wait_for(lambda: _resumable(store, first), timeout=180)  # a Ray worker is mid-run
        tree = _descendants(driver.pid)
        assert len(tree) >= 3
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: not any(_alive(p) for p in tree), timeout=60), \
            [Path(f"/proc/{p}/cmdline").read_text().replace("\\0", " ")[:60] for p in tree if _alive(p)]
    finally:
        _kill(driver)
        for pid in tree:  # the earlier code's orphans: ours to end
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_run_whose_claim_is_taken_over_stops_at_its_next_write(tmp_path, monkeypatch):
    """The fence in one process: the owner's heartbeat stops (as in a freeze), another store takes the claim
    over, and the execution ends 'lost' at its next resume-file write without a result."""
    from crossling.executors import ExecOptions, execute_run

    monkeypatch.setenv("GRID_TOY_STEP_SECONDS", "0.1")
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a"], languages=("aa",)))
    run = expand_runs(study)[0]
    owner, taker = (Store(tmp_path / "store", heartbeat_seconds=0.1, stale_seconds=1.0) for _ in range(2))
    claim = owner.try_claim(run.run_id)
    options = ExecOptions(owner.root, tmp_path / "prepared", TOY, "cpu", heartbeat_seconds=0.1, stale_seconds=1.0)
    box = {}
    worker = threading.Thread(target=lambda: box.update(outcome=execute_run(run, claim, options)))
    worker.start()
    owner._stop.set()  # the heartbeat stops; the run goes on
    assert wait_for(lambda: taker.try_claim(run.run_id) is not None, timeout=10)
    worker.join(timeout=30)
    assert box["outcome"].status == "lost"
    assert not paths.run_result_path(owner.run_dir(run.run_id)).exists()
    assert [(e["event"], e["generation"]) for e in owner.attempts(run.run_id)] == [("start", 1), ("lost", 1)]
    assert taker.state(run.run_id) == "running" and taker.claim_owner(run.run_id)["generation"] == 2
    taker.close()
