"""The results store: run states, exclusive claims with heartbeat, safe takeover of stale claims."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
from grid_factory import environment

from crossling import paths
from crossling.atomic import write_json_atomic
from crossling.errors import ConfigError
from crossling.records import StudyPlan
from crossling.store import Store


def test_states_follow_the_files(tmp_path):
    store = Store(tmp_path)
    assert store.state("r1") == "pending"
    claim = store.try_claim("r1")
    assert claim is not None and store.state("r1") == "running"
    store.write_error("r1", ValueError("bad value"), "Traceback ...\nValueError: bad value")
    assert store.state("r1") == "running"  # a live claim wins: the run is being retried
    store.release(claim)
    assert store.state("r1") == "failed"
    error = store.error("r1")
    assert error.error == "ValueError: bad value" and "Traceback" in error.traceback and error.pid == os.getpid()
    write_json_atomic(paths.run_result_path(store.run_dir("r1")), {"status": "done"})
    assert store.state("r1") == "done"
    store.close()


def test_a_claim_is_exclusive_until_released(tmp_path):
    mine, theirs = Store(tmp_path), Store(tmp_path)
    claim = mine.try_claim("r1")
    assert claim is not None
    assert theirs.try_claim("r1") is None and mine.try_claim("r1") is None
    assert theirs.claim_owner("r1")["pid"] == os.getpid()
    mine.release(claim)
    assert not paths.store_claim_path(tmp_path, "r1").exists()
    again = theirs.try_claim("r1")
    assert again is not None and again.token != claim.token
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
    path = store.claim_path(run_id)
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
    assert list(claim.path.parent.glob("stale.claim.t-stale.takeover"))  # the takeover is on record
    store.close()


def test_a_killed_process_on_this_machine_loses_its_claim_at_once(tmp_path):
    code = ("import os, signal, sys; from crossling.store import Store; "
            "Store(sys.argv[1]).try_claim('r1'); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=environment())
    store = Store(tmp_path)  # default 120 s staleness: only the dead pid can free it now
    assert paths.store_claim_path(tmp_path, "r1").exists()
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
