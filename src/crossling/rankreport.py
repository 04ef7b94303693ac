"""The report's "predicted vs measured" section: a study's rank records (found in its store) and results
table -> tables (markup + CSV frame), a figure (PNG) and sentences, from `crossling.rankcheck`'s tests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crossling import paths
from crossling.rankcheck import (
    Agreement,
    Pooled,
    agreement_frame,
    agreements,
    compute_sentence,
    estimator_summary,
    measured_cer,
    percent,
    pooled,
    pooled_sentence,
    span,
    verdict,
)
from crossling.rankrecord import ESTIMATORS, RankRecord, ranking, read_record

#: What `rank_section` may contribute to a report.
TABLE_NAMES = ("rank_agreement", "rank_pooled", "rank_scores")
FIGURE_NAMES = ("rank_vs_cer",)
#: The issue's goal on the demo study: Spearman >= 0.8 per language at <= 5 % of the fine-tuning compute.
GOAL_SPEARMAN, GOAL_COMPUTE = 0.8, 0.05


# --- where the records are ---------------------------------------------------------------------------


def source_records(source: str | Path, store: Path | None, table: pd.DataFrame) -> dict[str, RankRecord]:
    """The rank records of a report's source when it is a store or a study (none for a results file)."""
    path = Path(str(source)).expanduser()
    if path.is_dir():
        root = path
    elif store is not None:
        root = Path(store)
    elif path.suffix.lower() in (".csv", ".json", ".parquet", ".pq"):
        return {}
    else:
        from crossling.study import default_store, find_study

        root = default_store(find_study(str(source)))
    return store_records(root, sorted(table["language"].astype(str).unique()))


def store_records(store: Path, languages: Sequence[str]) -> dict[str, RankRecord]:
    """The rank records a study's store holds for `languages` (those it has)."""
    return {lang: read_record(paths.store_rank_path(store, lang)) for lang in languages
            if paths.store_rank_path(store, lang).is_file()}


# --- the section -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankSection:
    """Predicted vs measured for a report: tables (markup + frame), figures (caption, PNG) and sentences."""

    tables: dict
    figures: dict
    findings: tuple[str, ...]


def rank_section(records: Mapping[str, RankRecord], table: pd.DataFrame, alpha: float = 0.05) -> RankSection | None:
    """The section comparing each language's rank record with its fine-tuned runs (None: nothing to compare)."""
    from crossling.markup import Table, fmt_p

    found = agreements(records, table)
    if not found:
        return None
    frame = agreement_frame(found)
    shown = _agreement_columns(frame)
    scores = score_frame(records, table)
    tables = {
        "rank_agreement": (Table.from_frame("rank_agreement", "Predicted (ranking before fine-tuning) vs measured "
                                            "(fine-tuned test CER), per language and estimator", shown, 2), frame),
        "rank_scores": (Table.from_frame("rank_scores", "Each checkpoint's rank score (minus the best, with the "
                                         "paired bootstrap sd) and measured CER", scores, 5), scores)}
    pools = [p for p in (pooled(found, records, table, name) for name in ESTIMATORS) if p is not None]
    if pools:
        pool_frame = pd.DataFrame([{**asdict(p), "languages": " ".join(p.languages), "p": fmt_p(p.p),
                                    "p_floor": f"{p.p_floor:.2g}"} for p in pools])
        tables["rank_pooled"] = (Table.from_frame("rank_pooled", "Every language together: mean Spearman ρ and "
                                                  "its permutation p (checkpoints permuted within languages)",
                                                  pool_frame, 4), pool_frame)
    figures = {"rank_vs_cer": ("Rank score (the record's estimator, minus the language's best) against mean test "
                               "CER; bars: paired bootstrap sd of the difference to the best and sd of CER over "
                               "seeds", scatter(records, table))}
    return RankSection(tables, figures, tuple(findings(records, found, alpha, pools)))


def _agreement_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "language": frame["language"], "estimator": frame["estimator"], "n": frame["n"],
        "Spearman ρ": frame["spearman"], "ρ 95 % interval": [span(a, b) for a, b in zip(frame["spearman_low"], frame["spearman_high"], strict=True)],
        "p (ρ)": frame["spearman_p"], "Kendall τ": frame["kendall"],
        "τ 95 % interval": [span(a, b) for a, b in zip(frame["kendall_low"], frame["kendall_high"], strict=True)],
        "p (τ)": frame["kendall_p"], "seed-to-seed ρ": frame["seed_spearman"], "rank s": frame["rank_seconds"],
        "% of fine-tuning once": 100 * frame["compute_once"], "% of all runs": 100 * frame["compute_all"]})


def score_frame(records: Mapping[str, RankRecord], table: pd.DataFrame) -> pd.DataFrame:
    """Per language and checkpoint: predicted rank and score (record's estimator) and measured CER."""
    rows = []
    for language, record in records.items():
        cer = measured_cer(table, language, [c.checkpoint for c in record.checkpoints])
        for place in ranking(record):
            values = cer.get(place.checkpoint, np.array([]))
            rows.append({"language": language, "checkpoint": place.checkpoint, "predicted rank": place.rank,
                         "score": place.score, "score - best": place.gap, "paired sd": place.gap_sd,
                         "estimator": record.estimator,
                         "mean CER": values.mean() if len(values) else math.nan,
                         "CER sd": values.std(ddof=1) if len(values) > 1 else math.nan, "runs": len(values)})
    frame = pd.DataFrame(rows)
    measured_rank = frame.groupby("language", sort=False)["mean CER"].rank(method="min").astype("Int64")
    return frame.assign(**{"measured rank": measured_rank})


def scatter(records: Mapping[str, RankRecord], table: pd.DataFrame) -> bytes:
    """One panel per language: rank score (x) against mean test CER (y), checkpoints labelled."""
    import matplotlib.pyplot as plt

    from crossling.figures import label, to_png

    frame = score_frame(records, table)
    languages = list(dict.fromkeys(frame["language"]))
    with plt.rc_context({"font.family": "DejaVu Sans", "font.size": 8, "svg.hashsalt": "crossling"}):
        fig, axes = plt.subplots(1, len(languages), figsize=(3.2 * len(languages), 3.0), squeeze=False)
        for ax, language in zip(axes[0], languages, strict=True):
            part = frame[frame["language"] == language]
            ax.errorbar(part["score - best"], part["mean CER"], xerr=part["paired sd"], yerr=part["CER sd"].fillna(0),
                        fmt="o", ms=4, capsize=2)
            for name, x, y in zip(part["checkpoint"], part["score - best"], part["mean CER"], strict=True):
                ax.annotate(label(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.xaxis.set_major_locator(plt.MaxNLocator(4))  # small differences: long tick labels
            ax.set_title(label(language))
            ax.set_xlabel(label(f"{part['estimator'].iloc[0]} score minus the best"))
            ax.set_ylabel("mean test CER")
        return to_png(fig)


def goal_sentence(a: Agreement) -> str:
    """The issue's goal, each half said as what it is: a point estimate, and a ratio of recorded times."""
    agreement_part = "reached" if a.spearman >= GOAL_SPEARMAN else "not reached"
    compute_part = "within" if a.compute_once <= GOAL_COMPUTE else "above"
    return (f"Goal on {a.language} (Spearman ≥ {GOAL_SPEARMAN} at ≤ {100 * GOAL_COMPUTE:.0f} % of fine-tuning each "
            f"checkpoint once): ρ ≥ {GOAL_SPEARMAN} {agreement_part} by the point estimate (ρ = {a.spearman:.2f}); "
            f"compute {compute_part} {100 * GOAL_COMPUTE:.0f} % by recorded wall times ({percent(a.compute_once)}; "
            f"times of other sessions, not a benchmark).")


def findings(records: Mapping[str, RankRecord], found: Sequence[Agreement], alpha: float,
             pools: Sequence[Pooled] = ()) -> list[str]:
    """The record's estimator per language (verdict, compute, the goal), every estimator pooled over the
    languages, then the estimators compared."""
    lines = []
    for a in found:
        if a.estimator != records[a.language].estimator:
            continue
        lines += [verdict(a, alpha), compute_sentence(a), goal_sentence(a)]
    return lines + [pooled_sentence(p, alpha) for p in pools] + [estimator_summary(found)]
