"""What the report shows of a study's runs beyond its statistics: training curves (metrics.jsonl), error
analysis (hypotheses), CER beside WER and cost in human units -> figures as (caption, PNG) and tables as
(markup.Table, CSV frame), each left out when there is nothing to show. No torch."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from crossling import figures
from crossling.erroranalysis import ErrorAnalysis, study_error_analysis
from crossling.errors import DataError
from crossling.markup import (
    Cell,
    Table,
    duration_unit,
    fmt,
    fmt_duration,
    fmt_size,
    size_unit,
    wer_applies,
    wer_note,
)
from crossling.metrics import DEV, TRAIN, curve_summary, study_metrics

log = logging.getLogger(__name__)

Figures = dict[str, tuple[str, bytes]]
Tables = dict[str, tuple[Table, pd.DataFrame]]


# --- training curves -----------------------------------------------------------------------------------


def curve_figures(table: pd.DataFrame, store_root: Path) -> Figures:
    """Loss and dev-CER curves per checkpoint × language (median over seeds, band from the lowest to the
    highest seed), from the done runs' metrics.jsonl; {} when no run wrote metrics."""
    metrics = study_metrics(table, store_root)
    if metrics.empty:
        return {}
    out: Figures = {}
    loss = curve_summary(metrics, TRAIN, "loss")
    if not loss.empty:
        out["training_loss"] = ("Training loss (CTC, mean over windows of steps): median over seeds, band from "
                                "the lowest to the highest seed",
                                figures.curves(loss, "CTC loss", "Training loss", log_y=True))
    dev = curve_summary(metrics, DEV, "cer")
    if dev["step"].nunique() > 1:  # one point (the final evaluation only) is no curve
        out["dev_cer_curve"] = ("Dev CER during training (every eval_every steps, the last point is the run's "
                                "final evaluation): median over seeds, band from the lowest to the highest seed",
                                figures.curves(dev, "dev CER", "Dev CER during training"))
    return out


# --- error analysis --------------------------------------------------------------------------------------


def error_views(table: pd.DataFrame, store_root: Path, worst: int = 3) -> tuple[Figures, Tables, dict[str, pd.DataFrame]]:
    """(figures, page tables, CSV-only frames) of the error analysis of each language's best and worst
    checkpoint; all empty when the runs' hypotheses are not at hand (e.g. a report from a results file)."""
    try:
        analysis = study_error_analysis(table, store_root, worst=10)
    except DataError as error:
        log.warning("error analysis skipped: %s", error)
        return {}, {}, {}
    if analysis.worst.empty:
        return {}, {}, {}
    return _length_figure(analysis), _error_tables(analysis, worst), analysis.frames()


def _length_figure(analysis: ErrorAnalysis) -> Figures:
    frame = analysis.by_length.assign(line=lambda f: f["role"] + ": " + f["checkpoint"])
    return {"cer_by_length": ("Test CER by utterance length (reference characters, bins of about equal size per "
                              "language) for each language's best and worst checkpoint (lowest and highest mean test "
                              "CER over seeds; descriptive), pooled over seeds",
                              figures.length_curves(frame, "CER by utterance length", line="line"))}


def _error_tables(analysis: ErrorAnalysis, worst: int) -> Tables:
    shown = analysis.worst.groupby(["language", "role", "checkpoint"], sort=False).head(worst)
    utterances = shown.assign(cer=shown["cer"].map(lambda v: fmt(100 * v, 1)),
                              hypothesis=shown["hypothesis"].where(shown["hypothesis"] != "", "(blank output)"))[
        ["language", "role", "checkpoint", "seed", "reference", "hypothesis", "cer"]].rename(columns={"cer": "CER %"})
    edits = analysis.edits.groupby(["language", "role", "checkpoint", "operation"], sort=False).head(2)
    edits = edits.assign(edit=_edit_text(edits), share=edits["share"].map(lambda v: f"{100 * v:.1f}%"))[
        ["language", "role", "checkpoint", "operation", "edit", "count", "share"]]
    return {"worst_utterances": (Table.from_frame("worst_utterances", f"The {worst} test utterances with the "
                                                  "highest CER of each language's best and worst checkpoint (lowest "
                                                  "and highest mean test CER over seeds; descriptive), from the seed "
                                                  "whose CER is the cell's median; more in the CSV.",
                                                  utterances), analysis.worst),
            "character_edits": (Table.from_frame("character_edits", "The most frequent character edits of each "
                                                 "language's best and worst checkpoint, pooled over seeds (share: "
                                                 "of all its character edits; ␣ is a space).", edits),
                                analysis.edits)}


def _edit_text(edits: pd.DataFrame) -> pd.Series:
    arrows = {"substitution": lambda r: f"{r.reference} → {r.hypothesis}", "deletion": lambda r: f"{r.reference} → ∅",
              "insertion": lambda r: f"∅ → {r.hypothesis}"}
    return pd.Series([arrows[r.operation](r) for r in edits.itertuples()], index=edits.index, dtype=str)


# --- CER beside WER, cost in human units --------------------------------------------------------------------


def cer_wer_table(runs: pd.DataFrame) -> tuple[Table, pd.DataFrame]:
    """Per checkpoint (rows) and language (columns): 'CER / WER' in %, means over seeds; CER alone for
    languages written without spaces (the caption names them)."""
    means = runs.groupby(["checkpoint", "language"], as_index=False)[["cer", "wer"]].mean()
    means["wer"] = means["wer"].where(means["language"].astype(str).map(wer_applies))
    languages = sorted(means["language"].unique())
    cells = means.set_index(["checkpoint", "language"])
    rows = tuple((Cell(c), *(_rates(cells, c, lang) for lang in languages)) for c in sorted(means["checkpoint"].unique()))
    note = wer_note(languages)
    caption = "Test CER / WER (%), means over seeds." + (f" {note}" if note else "")
    return Table("cer_wer", caption, ("checkpoint", *languages), rows), means


def _rates(cells: pd.DataFrame, checkpoint: str, language: str) -> Cell:
    if (checkpoint, language) not in cells.index:
        return Cell("–")
    cer, wer = cells.loc[(checkpoint, language), ["cer", "wer"]]
    return Cell(fmt(100 * cer, 1) if pd.isna(wer) else f"{fmt(100 * cer, 1)} / {fmt(100 * wer, 1)}")


def cost_table(cost: pd.DataFrame) -> Table:
    """The cost frame (per checkpoint: runs, wall_hours, wall_hours_sd, device_hours_total, audio_s_per_s,
    peak_memory_mb) with times in one unit per column (s, min or h) and memory in MB or GB."""
    per_run = duration_unit(3600 * cost["wall_hours"])
    total = duration_unit(3600 * cost["device_hours_total"])
    memory = size_unit(cost["peak_memory_mb"])
    rows = tuple((Cell(str(name)), Cell(str(int(r.runs))),
                  Cell(fmt_duration(3600 * r.wall_hours, per_run)
                       + ("" if pd.isna(r.wall_hours_sd) else f" ± {fmt_duration(3600 * r.wall_hours_sd, per_run)}")),
                  Cell(fmt_duration(3600 * r.device_hours_total, total)), Cell(fmt(r.audio_s_per_s, 1)),
                  Cell(fmt_size(r.peak_memory_mb, memory))) for name, r in zip(cost.index, cost.itertuples(), strict=True))
    return Table("cost", "Cost per checkpoint: wall-clock time per run (mean ± sd), total device time, seconds of "
                 "audio trained per second, peak memory of any run.",
                 ("checkpoint", "runs", "time per run", "device time, total", "audio s / s", "peak memory"), rows)
