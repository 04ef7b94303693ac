"""The tidy results table: one row per planned run (done, failed and pending), the contract's columns,
sweep settings, exports, and no torch import."""

import io
import json
import math
import os
import stat
import subprocess
import sys
import threading

import pandas as pd
import pytest
from grid_factory import TOY, environment, make_prepared, wait_for, write_study

from crossling.cli import main
from crossling.errors import ConfigError, DataError
from crossling.grid import run_study
from crossling.results import COLUMNS, export_results, load_results_table
from crossling.study import load_study


@pytest.fixture
def partial_store(tmp_path):
    """A swept toy study with 8 planned runs: shard 0/2 run (one of its checkpoints failing), rest pending."""
    make_prepared(tmp_path / "prepared", counts=(1, 1, 1))
    path = write_study(tmp_path / "toy.toml", ["toy/a", "toy/broken"], recipe={"max_steps": 4, "checkpoint_every": 2},
                       sweep={"learning_rate": [1e-3, 2e-3]})
    (tmp_path / "prepared" / "fail-toy_broken").touch()
    run_study(load_study(path), run_function=TOY, shard=(0, 2))
    return path


def test_one_row_per_planned_run_with_status_and_nan_scores(partial_store):
    table = load_results_table(partial_store)
    assert list(table.columns) == [*COLUMNS, "setting.learning_rate"]
    assert len(table) == 8 and table["run_id"].is_unique
    assert table["status"].value_counts().to_dict() == {"pending": 4, "done": 2, "failed": 2}
    done, open_ = table[table["status"] == "done"], table[table["status"] != "done"]
    assert done["cer"].notna().all() and open_["cer"].isna().all() and open_["wall_seconds"].isna().all()
    assert set(done["checkpoint"]) == {"toy/a"} and set(table[table["status"] == "failed"]["checkpoint"]) == {"toy/broken"}
    assert set(table["setting.learning_rate"]) == {1e-3, 2e-3}
    row = done.iloc[0]
    assert row["cer"] == pytest.approx(row["char_edits"] / row["chars"], abs=0.01)
    assert row["cer_female"] == row["cer"] and row["chars_male"] == 100 and row["steps"] == 4
    assert row["device_hours"] == pytest.approx(1.5 / 3600) and row["peak_memory_mb"] == 100.0


def test_a_store_alone_reads_back_through_its_plan(partial_store, tmp_path):
    from_study = load_results_table(partial_store)
    from_store = load_results_table(tmp_path / "toy.runs")
    pd.testing.assert_frame_equal(from_study, from_store)
    with pytest.raises(DataError, match="no plan.json"):
        load_results_table(tmp_path / "prepared")


@pytest.mark.parametrize("format", ["csv", "parquet", "json"])
def test_exports_round_trip(partial_store, tmp_path, format):
    table = load_results_table(partial_store)
    path = export_results(table, tmp_path / f"results.{format}", format)
    if format == "csv":
        back = pd.read_csv(path)
    elif format == "parquet":
        back = pd.read_parquet(path)
    else:
        rows = json.loads(path.read_text())
        assert rows[0]["run_id"] == table["run_id"][0] and any(row["cer"] is None for row in rows)  # NaN -> null
        back = pd.DataFrame(rows)
    assert list(back.columns) == list(table.columns) and len(back) == 8
    done = back[back["status"] == "done"]
    assert done["cer"].tolist() == pytest.approx(table[table["status"] == "done"]["cer"].tolist())
    with pytest.raises(ConfigError, match="choose one of csv, parquet, json"):
        export_results(table, tmp_path / "x", "xlsx")


def test_results_cli_prints_and_writes(partial_store, tmp_path, capsys, monkeypatch):
    assert main(["results", str(partial_store), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8 and {row["status"] for row in rows} == {"done", "failed", "pending"}
    assert main(["results", str(tmp_path / "toy.runs"), "--format", "parquet", "--out", str(tmp_path / "r.pq")]) == 0
    assert len(pd.read_parquet(tmp_path / "r.pq")) == 8
    assert math.isnan(pd.read_parquet(tmp_path / "r.pq")["cer"].iloc[-1])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["results", str(partial_store), "--format", "parquet"]) == 2  # binary on a terminal
    assert "redirect standard output to a file, or pass --out FILE" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    assert main(["results", str(partial_store), "--out", str(tmp_path / "folder")]) == 2
    assert "folder: is a directory; expected a file name" in capsys.readouterr().err


def test_results_json_is_the_json_format_and_refuses_another(partial_store, capsys):
    assert main(["results", str(partial_store), "--json"]) == 0
    as_flag = capsys.readouterr().out
    assert main(["results", str(partial_store), "--format", "json"]) == 0
    assert as_flag == capsys.readouterr().out and len(json.loads(as_flag)) == 8
    assert main(["results", str(partial_store), "--json", "--format", "csv"]) == 2
    assert "cannot be combined with --format csv" in json.loads(capsys.readouterr().out)["error"]
    assert main(["results", str(partial_store)]) == 0
    assert capsys.readouterr().out.startswith("run_id,")  # csv stays the default


def _results_cli(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "crossling", "results", *args], env=environment(),
                            stderr=subprocess.PIPE, **popen)


def test_dash_and_a_link_to_standard_output_print_the_table_and_the_link_stays(partial_store, tmp_path):
    """`--out -` and `--out /dev/stdout` (here: our own link to /proc/self/fd/1, the same as /dev/stdout,
    so that no test ever points at the machine's device files) print the table into the pipe."""
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    for out in ("-", str(link)):
        child = _results_cli(str(partial_store), "--format", "csv", "--out", out, stdout=subprocess.PIPE)
        printed, errors = child.communicate(timeout=120)
        assert child.returncode == 0, errors
        assert printed.decode().splitlines()[0].startswith("run_id,checkpoint,language,seed,status")
        assert len(printed.decode().splitlines()) == 9 and b"Traceback" not in errors
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    child = _results_cli(str(partial_store), "--format", "parquet", "--out", "-", stdout=subprocess.PIPE)
    parquet, _ = child.communicate(timeout=120)
    assert child.returncode == 0 and len(pd.read_parquet(io.BytesIO(parquet))) == 8


def test_a_fifo_receives_the_table_and_stays_a_fifo(partial_store, tmp_path):
    fifo = tmp_path / "table.fifo"
    os.mkfifo(fifo)
    received = []  # the reader blocks until a writer opens the FIFO, then reads to its end
    threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True).start()
    child = _results_cli(str(partial_store), "--out", str(fifo), stdout=subprocess.DEVNULL)
    assert child.wait(timeout=120) == 0
    assert wait_for(lambda: received, timeout=10), "nothing reached the FIFO's reader"
    assert received[0].startswith("run_id,") and len(received[0].splitlines()) == 9
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_reader_that_stops_early_ends_the_command_quietly(partial_store):
    child = _results_cli(str(partial_store), "--format", "json", "--out", "-", stdout=subprocess.PIPE)
    child.stdout.close()  # like `| head -0`: nobody reads what follows
    errors = child.stderr.read()
    assert child.wait(timeout=120) == 141 and b"Traceback" not in errors and b"BrokenPipe" not in errors
