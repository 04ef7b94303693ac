"""The offline demo study: synthetic corpus -> prepare -> fine-tune mini-zoo checkpoints and their random-init
twin on synthetic target languages x seeds -> statistics, findings -> report and demo.json.

Study files: crossling/studies/demo.toml (full) and demo-quick.toml (tests, CI). Outputs under `out`."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossling import paths
from crossling.atomic import write_json_atomic
from crossling.errors import DataError
from crossling.progress import Track, no_progress
from crossling.study import Study, example_study_path, load_study

if TYPE_CHECKING:
    from crossling.grid import GridSummary, Progress

log = logging.getLogger(__name__)

FULL, QUICK = "demo", "demo-quick"


def demo_study(quick: bool = False) -> Study:
    """The shipped demo study ('demo-quick' when `quick`)."""
    return load_study(example_study_path(QUICK if quick else FULL))


def run_demo(out: Path = Path("crossling-demo"), quick: bool = False, workers: int = 2,
             track: Track = no_progress, progress: Progress | None = None) -> dict:
    """Run the demo study end to end under `out` (store/, report/, demo.json); returns the summary
    written to demo.json. Re-running resumes: finished runs are kept, interrupted ones resume."""
    from crossling.grid import open_store
    from crossling.sources import prepare_source

    started = time.monotonic()
    out = Path(out)
    study = demo_study(quick)
    store_dir = paths.demo_store_dir(out)
    prepared = prepare_source(study.data, study.languages, open_store(study, store_dir), track)
    data_seconds = time.monotonic() - started
    log.info("demo data prepared in %s (%.0f s)", prepared, data_seconds)
    _run_grid(study, store_dir, workers, progress)
    table, analysis, report = _analyse(study, store_dir, paths.demo_report_dir(out))
    summary = summarize(table, study, analysis, report=report, wall_seconds=time.monotonic() - started, workers=workers)
    summary["data_seconds"] = round(data_seconds, 1)
    write_json_atomic(paths.demo_summary_path(out), summary)
    return summary


def _run_grid(study: Study, store_dir: Path, workers: int, progress: Progress | None = None) -> GridSummary:
    """`workers` grid processes on one store (claims give every run to exactly one of them), one torch
    thread each: two 1-thread processes outrun one 2-thread process on small models, and the demo's
    numbers stay those of one thread whatever the machine."""
    from crossling.executors import ProcessExecutor
    from crossling.grid import run_study

    return run_study(study, store_dir, executor=ProcessExecutor(workers=max(1, workers), threads=1), device="cpu",
                     progress=progress)


def _analyse(study: Study, store_dir: Path, report_dir: Path):
    """The results table, its analysis (statistics and findings) and the written report's page."""
    from crossling.methods import StudyFiles, prepared_root
    from crossling.rank import rank_study
    from crossling.report import analyse, write_analysis
    from crossling.results import load_results_table

    table = load_results_table(study, store_dir)
    if not (table["status"] == "done").any():
        raise DataError(f"no demo run finished; see the error.json files under {store_dir / 'runs'}")
    analysis = analyse(table)
    files = StudyFiles(store_dir, prepared_root(study, store_dir))
    write_analysis(analysis, report_dir, title=f"crossling {study.name}: mini-zoo x synthetic languages",
                   rank_records=rank_study(study, store_dir), files=files)  # ranking: frozen features only
    return table, analysis, paths.report_page_path(report_dir, "html")


# --- the summary ---------------------------------------------------------------------------------

#: A pair finding's verdict as the demo states it per language (never a direction without significance).
BEATS, NO_EVIDENCE, WORSE, UNTESTED = "lower CER", "no evidence of a difference", "higher CER", "cannot be tested"
NO_DIRECTION = "differ, no direction (mean ranks and mean CERs disagree)"


def summarize(table, study: Study, analysis, *, report: Path, wall_seconds: float, workers: int) -> dict[str, Any]:
    """demo.json: mean test CER and significance letters per checkpoint and language (descriptive), the
    headline sentences and every finding of the report's analysis (the claims), and each pre-trained
    checkpoint's verdict against the random-init baseline per language."""
    from crossling.report import summary_sentences

    done = table[table["status"] == "done"]
    mean = done.groupby(["checkpoint", "language"])["cer"].mean()
    cer = {c: {lang: _round(mean.get((c, lang))) for lang in study.languages} for c in study.checkpoints}
    letters = analysis.groups.set_index(["checkpoint", "language"])["letters"]
    return {
        "study": study.name, "report": str(report), "wall_seconds": round(wall_seconds, 1), "workers": workers,
        "runs": len(table), "done": int((table["status"] == "done").sum()),
        "failed": int((table["status"] == "failed").sum()),
        "languages": list(study.languages), "checkpoints": list(study.checkpoints), "seeds": list(study.seeds),
        "mean_test_cer": cer,
        "letters": {c: {lang: str(letters.get((c, lang), "")) for lang in study.languages} for c in study.checkpoints},
        "baseline": analysis.baseline, "versus_baseline": _versus_baseline(analysis.findings, analysis.baseline),
        "headline": summary_sentences(analysis)[1:],
        "findings": [f.to_json() for f in analysis.findings],
        "recipe": {k: v for k, v in study.recipe_values},
    }


def _versus_baseline(findings, baseline: str | None) -> dict[str, dict[str, str]]:
    """language → pre-trained checkpoint → its verdict against the baseline (Conover-Iman, as the letters)."""
    from crossling.findings import SUPPORTED, UNTESTABLE

    out: dict[str, dict[str, str]] = {}
    for f in findings:
        if not f.key.startswith("pair/") or baseline is None or f.subject[2] != baseline:
            continue
        verdict = UNTESTED if f.verdict == UNTESTABLE else NO_EVIDENCE if f.verdict != SUPPORTED else (
            BEATS if f.sign < 0 else WORSE if f.sign > 0 else NO_DIRECTION)
        language, checkpoint, _ = f.subject
        out.setdefault(language, {})[checkpoint] = verdict
    return out


def _round(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)
