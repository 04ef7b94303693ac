"""A study's store -> the tidy results table (one row per planned run, NaN scores where not done)
-> CSV / Parquet / JSON. Imports no torch: the analysis half runs anywhere."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from crossling.atomic import STDOUT, atomic_path
from crossling.errors import ConfigError, DataError
from crossling.store import DONE, FAILED, Store
from crossling.study import Study, default_store, expand_runs, load_study

COLUMNS = (
    "run_id", "checkpoint", "language", "seed", "status", "cer", "wer", "char_edits", "chars", "word_edits",
    "words", "dev_cer", "dev_wer", "cer_female", "cer_male", "char_edits_female", "chars_female",
    "char_edits_male", "chars_male", "steps", "wall_seconds", "device_hours", "audio_seconds_per_second",
    "peak_memory_mb",
)
FORMATS = ("csv", "parquet", "json")
NAN = math.nan


def load_results_table(study_or_store: Study | Path | str, store: Path | str | None = None) -> pd.DataFrame:
    """The tidy table of a study (a `Study`, a study file) or of a store directory (read from its
    plan.json): one row per planned run; status 'done', 'failed' or 'pending' (running runs are
    pending: not finished); scores and cost NaN unless done; one `setting.<name>` column per sweep."""
    planned, sweep, store_root = _planned_runs(study_or_store, store)
    results = Store(store_root)
    rows = [_row(results, run, sweep) for run in planned]
    columns = [*COLUMNS, *(f"setting.{name}" for name in sweep)]
    return pd.DataFrame(rows, columns=columns)


def _planned_runs(source: Study | Path | str, store: Path | str | None) -> tuple[list[dict], list[str], Path]:
    if isinstance(source, Study) or Path(source).is_file():
        study = source if isinstance(source, Study) else load_study(Path(source))
        runs = [{"run_id": r.run_id, "checkpoint": r.checkpoint, "language": r.language, "seed": r.seed,
                 "settings": r.settings_dict} for r in expand_runs(study)]
        return runs, [name for name, _ in study.sweep], Path(store) if store else default_store(study)
    root = Path(store or source)
    plan = Store(root).read_plan()
    if plan is None:
        raise DataError(f"{root}: not a study store (no plan.json); pass the study file, or run "
                        "`crossling study plan STUDY --store DIR` first")
    return plan["runs"], plan.get("sweep", []), root


def _row(store: Store, run: dict[str, Any], sweep: list[str]) -> dict[str, Any]:
    result = store.result(run["run_id"])
    state = store.state(run["run_id"]) if result is None else DONE
    row = {"run_id": run["run_id"], "checkpoint": run["checkpoint"], "language": run["language"],
           "seed": run["seed"], "status": state if state in (DONE, FAILED) else "pending"}
    row.update(_scores(result) if result is not None else {})
    row.update({f"setting.{name}": run["settings"].get(name) for name in sweep})
    return row


def _scores(result: dict[str, Any]) -> dict[str, Any]:
    """Test-set counts and corpus-level rates, dev rates, by-gender counts, steps and cost."""
    scores = result.get("scores", {})
    test, dev = scores.get("test", {}), scores.get("dev", {})
    by_gender = test.get("by_gender", {})
    cost = result.get("cost", {})
    row = {key: test.get(key, NAN) for key in ("cer", "wer", "char_edits", "chars", "word_edits", "words")}
    row.update({"dev_cer": dev.get("cer", NAN), "dev_wer": dev.get("wer", NAN), "steps": result.get("steps", NAN)})
    for gender in ("female", "male"):
        scored = by_gender.get(gender, {})
        row.update({f"cer_{gender}": scored.get("cer", NAN), f"char_edits_{gender}": scored.get("char_edits", NAN),
                    f"chars_{gender}": scored.get("chars", NAN)})
    for key in ("wall_seconds", "device_hours", "audio_seconds_per_second", "peak_memory_mb"):
        row[key] = cost.get(key, NAN)
    return row


def export_results(table: pd.DataFrame, path: Path | str, format: str = "csv") -> Path | str:
    """Write the table as CSV, Parquet (needs pyarrow) or JSON (a list of row objects, NaN -> null) to
    `path`, or to standard output when `path` is '-' (see `crossling.atomic` for how targets are written)."""
    if format not in FORMATS:
        raise ConfigError(f"format {format!r} is not valid; choose one of {', '.join(FORMATS)}")
    if format == "parquet" and str(path) == STDOUT and sys.stdout.isatty():
        raise ConfigError("parquet is a binary format: redirect standard output to a file, or pass --out FILE")
    with atomic_path(path) as tmp:
        if format == "csv":
            table.to_csv(tmp, index=False)
        elif format == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_json(tmp, orient="records", indent=1, force_ascii=False)
    return path
