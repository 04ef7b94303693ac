"""The results store: run states, exclusive claims with heartbeat, safe takeover of stale claims."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from grid_factory import environment, toy_record

from crossling import paths
from crossling.atomic import write_json_atomic
from crossling.config import TrainConfig
from crossling.errors import ConfigError, OutputError
from crossling.records import StudyPlan, run_identity
from crossling.store import Store

IDENTITY = run_identity(model="toy/a", language="aa", seed=0, recipe=TrainConfig(), data={"source": "test"})
R1 = f"toy_a-aa-s0-{IDENTITY.digest()}"


def test_states_follow_the_files(tmp_path):
    store = Store(tmp_path)
    assert store.state(R1) == "pending"
    claim = store.try_claim(R1)
    assert claim is not None and store.state(R1) == "running"
    store.write_error(R1, ValueError("bad value"), "Traceback ...\nValueError: bad value")
    assert store.state(R1) == "running"  # a live claim wins: the run is being retried
    store.release(claim)
    assert store.state(R1) == "failed"
    error = store.error(R1)
    assert error.error == "ValueError: bad value" and "Traceback" in error.traceback and error.pid == os.getpid()
    write_json_atomic(paths.run_result_path(store.run_dir(R1)), toy_record(IDENTITY, 0.5, steps=3).to_json())
    assert store.state(R1) == "done"
    store.close()


def test_a_claim_is_exclusive_until_released(tmp_path):
    mine, theirs = Store(tmp_path), Store(tmp_path)
    claim = mine.try_claim("r1")
    assert claim is not None
    assert theirs.try_claim("r1") is None and mine.try_claim("r1") is None
    assert theirs.claim_owner("r1")["pid"] == os.getpid()
    mine.release(claim)
    assert not claim.path.exists() and paths.store_claim_path(tmp_path, "r1", 1, released=True).exists()
    again = theirs.try_claim("r1")
    assert again is not None and again.token != claim.token and again.generation == 2
    assert [p.name for p in paths.store_claims_dir(tmp_path, "r1").iterdir()] == ["2.claim"]  # no debris
    mine.close()
    theirs.close()


def test_heartbeat_keeps_a_claim_alive_and_its_absence_makes_it_stale(tmp_path):
    mine = Store(tmp_path, heartbeat_seconds=0.1, stale_seconds=0.6)
    theirs = Store(tmp_path, heartbeat_seconds=0.1, stale_seconds=0.6)
    claim = mine.try_claim("r1")
    time.sleep(1.5)  # more than two stale periods: only the heartbeat keeps it alive
    assert theirs.claim_is_live("r1") and theirs.try_claim("r1") is None
    mine._stop.set()  # the heartbeat stops, as if the machine hung; the claim file stays
    time.sleep(1.0)
    assert claim.path.exists() and not theirs.claim_is_live("r1")
    assert theirs.state("r1") == "pending"
    taken = theirs.try_claim("r1")
    assert taken is not None
    assert not mine.refresh(claim)  # the old owner notices that it lost the claim
    mine.release(claim)  # and releasing does not delete the new owner's claim
    assert theirs.claim_is_live("r1")
    theirs.close()


def _foreign_claim(store: Store, run_id: str, age: float) -> None:
    path = paths.store_claim_path(store.root, run_id, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": "t-" + run_id, "host": "another-machine", "boot_id": "x", "pid": 1}))
    os.utime(path, (time.time() - age, time.time() - age))


def test_another_machines_claim_counts_until_it_goes_stale(tmp_path):
    store = Store(tmp_path, heartbeat_seconds=1, stale_seconds=30)
    _foreign_claim(store, "fresh", age=5)
    _foreign_claim(store, "stale", age=60)
    assert store.state("fresh") == "running" and store.try_claim("fresh") is None
    assert store.state("stale") == "pending"
    claim = store.try_claim("stale")
    assert claim is not None and store.claim_owner("stale")["token"] == claim.token
    assert claim.generation == 2 and [p.name for p in claim.path.parent.iterdir()] == ["2.claim"]  # no debris
    store.close()


def test_a_killed_process_on_this_machine_loses_its_claim_at_once(tmp_path):
    code = ("import os, signal, sys; from crossling.store import Store; "
            "Store(sys.argv[1]).try_claim('r1'); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=environment())
    store = Store(tmp_path)  # default 120 s staleness: only the dead pid can free it now
    assert paths.store_claim_path(tmp_path, "r1", 1).exists()
    assert store.state("r1") == "pending"
    assert store.try_claim("r1") is not None
    store.close()


def _race(root, run_id, barrier, results):
    store = Store(root, heartbeat_seconds=1, stale_seconds=30)
    barrier.wait()
    claim = store.try_claim(run_id)
    results.put((run_id, claim is not None))
    time.sleep(0.5)  # hold it while the others try
    store.close()


@pytest.mark.parametrize("takers", [6])
def test_racing_takers_of_a_stale_claim_never_both_win(tmp_path, takers):
    context = multiprocessing.get_context("fork")
    for round_number in range(8):
        run_id = f"r{round_number}"
        if round_number % 2:
            _foreign_claim(Store(tmp_path), run_id, age=60)  # odd rounds: a stale claim to take over
        barrier, results = context.Barrier(takers), context.Queue()
        workers = [context.Process(target=_race, args=(tmp_path, run_id, barrier, results)) for _ in range(takers)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        assert sum(won for _, won in outcomes) == 1, (run_id, outcomes)


def test_attempt_log_and_bad_timing(tmp_path):
    store = Store(tmp_path)
    store.log_attempt("r1", "start", token="abc", attempt=1)
    store.log_attempt("r1", "done", token="abc", attempt=1, seconds=2.0)
    events = store.attempts("r1")
    assert [e["event"] for e in events] == ["start", "done"] and events[0]["pid"] == os.getpid()
    plan = StudyPlan(study="s", study_file="", data={"source": "prepared", "path": "p"}, sweep=(), runs=())
    store.write_plan(plan)
    assert store.read_plan() == plan
    with pytest.raises(ConfigError, match="must exceed two heartbeats"):
        Store(tmp_path, heartbeat_seconds=10, stale_seconds=15)


def test_takeover_needs_no_inode_markers_and_leaves_one_file_a_run(tmp_path):
    """Each round a claimer dies between creating its claim file and writing it (an empty file, which the
    earlier code named by its inode number -- reused by ext4 at once, so such a claim could never be
    taken over again). Every such claim is taken over once stale, and nothing piles up in claims/."""
    store = Store(tmp_path, heartbeat_seconds=1, stale_seconds=30)
    folder = paths.store_claims_dir(tmp_path, "r1")
    for generation in range(1, 40, 2):
        crashed = paths.store_claim_path(tmp_path, "r1", generation)
        crashed.parent.mkdir(parents=True, exist_ok=True)
        crashed.touch()
        assert store.try_claim("r1") is None  # fresh: its claimer may still be writing it
        os.utime(crashed, (time.time() - 60, time.time() - 60))
        claim = store.try_claim("r1")
        assert claim is not None and claim.generation == generation + 1
        store.release(claim)
        assert [p.name for p in folder.iterdir()] == [f"{generation + 1}.released"]
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["r1"]
    store.close()


def test_a_claim_location_of_the_wrong_type_is_a_clear_error(tmp_path):
    store = Store(tmp_path)
    paths.store_claim_path(tmp_path, "r1", 1).mkdir(parents=True)  # a folder where a claim file belongs
    with pytest.raises(OutputError, match=r"1\.claim: expected a claim file, found a directory"):
        store.try_claim("r1")
    (tmp_path / "claims" / "r2").write_text("")  # a file where the run's claim folder belongs
    with pytest.raises(OutputError, match=r"claims/r2: cannot use this claim location"):
        store.try_claim("r2")
