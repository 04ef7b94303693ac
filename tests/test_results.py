"""The tidy results table: one row per planned run (done, failed and pending), the contract's columns,
sweep settings, exports, and no torch import."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from grid_factory import TOY, environment, make_prepared, write_study

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


def test_results_cli_prints_and_writes(partial_store, tmp_path, capsys):
    assert main(["results", str(partial_store), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8 and {row["status"] for row in rows} == {"done", "failed", "pending"}
    assert main(["results", str(tmp_path / "toy.runs"), "--format", "parquet", "--out", str(tmp_path / "r.pq")]) == 0
    assert len(pd.read_parquet(tmp_path / "r.pq")) == 8
    assert main(["results", str(partial_store), "--format", "parquet"]) == 2  # binary needs --out
    assert "pass --out" in capsys.readouterr().err
    assert math.isnan(pd.read_parquet(tmp_path / "r.pq")["cer"].iloc[-1])


def test_results_and_the_grid_import_no_torch():
    code = ("import sys, crossling.results, crossling.grid, crossling.store, crossling.study, crossling.executors; "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], env=environment()).returncode == 0
