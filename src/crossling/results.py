"""A study's store -> the tidy results table (one row per planned run, NaN scores where not done)
-> CSV / Parquet / JSON. Imports no torch: the analysis half runs anywhere."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from crossling.atomic import STDOUT, atomic_path
from crossling.errors import ConfigError, DataError
from crossling.records import PlannedRun, RunRecord
from crossling.store import DONE, FAILED, Store
from crossling.study import Study, default_store, load_study, study_plan

COLUMNS = (
    "run_id", "checkpoint", "language", "seed", "status", "cer", "wer", "char_edits", "chars", "word_edits",
    "words", "dev_cer", "dev_wer", "cer_female", "cer_male", "char_edits_female", "chars_female",
    "char_edits_male", "chars_male", "steps", "wall_seconds", "device_hours", "audio_seconds_per_second",
    "peak_memory_mb",
)
FORMATS = ("csv", "parquet", "json")
#: The status of a run not done whose record was corrupt (renamed aside; the run runs again).
QUARANTINED = "quarantined"
NAN = math.nan

log = logging.getLogger(__name__)


def load_results_table(study_or_store: Study | Path | str, store: Path | str | None = None) -> pd.DataFrame:
    """The tidy table of a study (a `Study`, a study file) or of a store directory (read from its
    plan.json): one row per planned run; status 'done', 'failed' or 'pending' (running runs are
    pending: not finished); scores and cost NaN unless done; one `setting.<name>` column per sweep."""
    planned, sweep, store_root = _planned_runs(study_or_store, store)
    results = Store(store_root)
    rows = [_row(results, run, sweep) for run in planned]
    columns = [*COLUMNS, *(f"setting.{name}" for name in sweep)]
    return pd.DataFrame(rows, columns=columns)


def _planned_runs(source: Study | Path | str, store: Path | str | None) -> tuple[list[PlannedRun], list[str], Path]:
    if isinstance(source, Study) or Path(source).is_file():
        study = source if isinstance(source, Study) else load_study(Path(source))
        plan = study_plan(study)
        return list(plan.runs), list(plan.sweep), Path(store) if store else default_store(study)
    root = Path(store or source)
    plan = Store(root).read_plan()
    if plan is None:
        raise DataError(f"{root}: not a study store (no plan.json, written by `crossling study run`); "
                        "pass the study file instead")
    return list(plan.runs), list(plan.sweep), root


def _row(store: Store, run: PlannedRun, sweep: list[str]) -> dict[str, Any]:
    result = store.result(run.run_id)
    state = store.state(run.run_id) if result is None else DONE
    if state not in (DONE, FAILED):  # running runs are not finished; a corrupt record was renamed aside
        state = QUARANTINED if store.quarantined(run.run_id) else "pending"
    row = {"run_id": run.run_id, "checkpoint": run.checkpoint, "language": run.language,
           "seed": run.seed, "status": state}
    row.update(_scores(result) if result is not None else {})
    row.update({f"setting.{name}": run.settings.get(name) for name in sweep})
    return row


def _scores(result: RunRecord) -> dict[str, Any]:
    """Test-set counts and corpus-level rates, dev rates, by-gender counts, steps and cost."""
    test, dev = result.scores.get("test"), result.scores.get("dev")
    row = {key: _value(test, key) for key in ("cer", "wer", "char_edits", "chars", "word_edits", "words")}
    row.update({"dev_cer": _value(dev, "cer"), "dev_wer": _value(dev, "wer"), "steps": result.steps})
    for gender in ("female", "male"):
        scored = test.by_gender.get(gender) if test is not None else None
        row.update({f"cer_{gender}": _value(scored, "cer"), f"char_edits_{gender}": _value(scored, "char_edits"),
                    f"chars_{gender}": _value(scored, "chars")})
    cost = result.cost
    row.update({"wall_seconds": cost.wall_seconds, "device_hours": cost.device_hours,
                "audio_seconds_per_second": cost.audio_seconds_per_second, "peak_memory_mb": cost.peak_memory_mb})
    return row


def _value(scores, key: str) -> Any:
    """A score, NaN where the split or group is missing or has no rate."""
    value = getattr(scores, key) if scores is not None else None
    return NAN if value is None else value


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


# --- reading a results table back (the report and recommend take any of these) ---------------------------

TABLE_SUFFIXES = (".csv", ".json", ".parquet", ".pq")


def load_table(source: str | Path, store: Path | None = None) -> pd.DataFrame:
    """The tidy results table from a results file (.csv / .json / .parquet, as `crossling results`
    writes it), a study store directory, or a study (file or shipped example name) and its store."""
    path = Path(source).expanduser()
    if path.suffix.lower() in TABLE_SUFFIXES:
        if not path.is_file():
            raise DataError(f"{path}: results file not found")
        table = _read_table_file(path)
    else:
        from crossling.study import find_study

        table = load_results_table(path if path.is_dir() else find_study(str(source)), store)
    log.debug("results table of %s: %d rows", source, len(table))
    return table


def _read_table_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":  # only empty fields are missing: a checkpoint may be called 'NA'
            table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        elif suffix == ".json":
            table = pd.read_json(path, orient="records", dtype=False)
        else:
            table = pd.read_parquet(path)
    except (ValueError, OSError, ImportError) as error:
        raise DataError(f"{path}: cannot read the results table ({error})") from error
    from crossling.stats import split_missing

    split_missing(table)  # checks the columns, naming the missing ones
    for column in ("checkpoint", "language", "status", "run_id"):
        if column in table:
            table[column] = table[column].astype(str)
    return table
