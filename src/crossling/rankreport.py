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
from crossling.findings import NOT_SUPPORTED, SUPPORTED, UNTESTABLE, Finding
from crossling.rankcheck import (
    AGREEMENT_TEST,
    CHECKPOINT_UNIT,
    Agreement,
    agreement_findings,
    agreement_frame,
    agreements,
    compute_sentence,
    estimators_finding,
    measured_cer,
    percent,
    pooled,
    pooled_findings,
    span,
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


@dataclass(frozen=True, kw_only=True)
class RankSection:
    """Predicted vs measured for a report: tables (markup + frame), figures (caption, PNG), the findings
    (each from one test, for the report's findings table) and the section's sentences (the findings'
    and the measured compute)."""

    tables: dict
    figures: dict
    findings: tuple[Finding, ...]
    sentences: tuple[str, ...]


def rank_section(records: Mapping[str, RankRecord], table: pd.DataFrame, alpha: float = 0.05) -> RankSection | None:
    """The section comparing each language's rank record with its fine-tuned runs (None: no language of
    the records has a measured checkpoint). A language with fewer than 3 measured checkpoints is said to
    be untestable."""
    found = agreements(records, table)
    short = too_few(records, table, alpha)
    if not found and not short:
        return None
    scores = score_frame(records, table)
    tables = {"rank_scores": (_table("rank_scores", "Each checkpoint's rank score (minus the best, with the paired "
                                     "bootstrap sd) and measured CER", scores, 5), scores)}
    pools = [p for p in (pooled(found, records, table, name) for name in ESTIMATORS) if p is not None]
    tables.update(_agreement_tables(found, pools))
    figures = {"rank_vs_cer": ("Rank score (the record's estimator, minus the language's best) against mean test "
                               "CER; bars: paired bootstrap sd of the difference to the best and sd of CER over "
                               "seeds", scatter(records, table))}
    stated = short + findings(records, found, alpha, pools)
    compute = [compute_sentence(a) for a in found if a.estimator == records[a.language].estimator]
    return RankSection(tables=tables, figures=figures, findings=tuple(stated),
                       sentences=tuple([f.sentence() for f in stated] + compute))


def _table(name: str, caption: str, frame: pd.DataFrame, digits: int):
    from crossling.markup import Table

    return Table.from_frame(name, caption, frame, digits)


def _agreement_tables(found: Sequence[Agreement], pools: Sequence) -> dict:
    """rank_agreement (per language and estimator) and rank_pooled (per estimator), where there are any."""
    from crossling.markup import fmt_p

    tables = {}
    if found:
        frame = agreement_frame(found)
        tables["rank_agreement"] = (_table("rank_agreement", "Predicted (ranking before fine-tuning) vs measured "
                                           "(fine-tuned test CER), per language and estimator",
                                           _agreement_columns(frame), 2), frame)
    if pools:
        pool_frame = pd.DataFrame([{**asdict(p), "languages": " ".join(p.languages), "p": fmt_p(p.p),
                                    "p_floor": f"{p.p_floor:.2g}", "low": span(p.low, p.high)} for p in pools]
                                  ).drop(columns="high").rename(columns={"low": "95 % interval (languages re-drawn)"})
        tables["rank_pooled"] = (_table("rank_pooled", "Every language together: mean Spearman ρ and its permutation "
                                        "p (checkpoints permuted within languages)", pool_frame, 4), pool_frame)
    return tables


def too_few(records: Mapping[str, RankRecord], table: pd.DataFrame, alpha: float) -> list[Finding]:
    """A language whose record has 1 or 2 measured checkpoints: its agreement cannot be tested."""
    out = []
    for language, record in records.items():
        measured = measured_cer(table, language, [c.checkpoint for c in record.checkpoints])
        if 0 < len(measured) < 3:
            question = (f"the ranking by {record.estimator} before fine-tuning agrees with the fine-tuned order "
                        f"on {language}")
            out.append(Finding(key=f"rank/{record.estimator}/{language}", question=question, test=AGREEMENT_TEST,
                               unit=CHECKPOINT_UNIT, n=len(measured), alpha=alpha, verdict=UNTESTABLE,
                               subject=(language, record.estimator),
                               reason=f"{len(measured)} of the ranked checkpoints have usable runs on {language}; "
                                      f"a rank correlation needs at least 3"))
    return out


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


def goal_finding(agreement: Finding, a: Agreement) -> Finding:
    """The issue's goal on a language, ρ ≥ GOAL_SPEARMAN, decided by the agreement test and its interval:
    reached when the agreement is significant and the interval's lower end is at least the goal. The
    compute half is a measurement (`compute_sentence`), said with it."""
    question = f"the ranking by {a.estimator} reaches Spearman ρ ≥ {GOAL_SPEARMAN} on {a.language}"
    compute = (f"compute {percent(a.compute_once)} of fine-tuning each checkpoint once (goal ≤ "
               f"{100 * GOAL_COMPUTE:.0f} %; recorded wall times)")
    common = dict(key=f"rank/goal/{a.language}", question=question, test=f"{agreement.test}, and its interval",
                  unit=agreement.unit, n=a.n, alpha=agreement.alpha, subject=(a.language, a.estimator),
                  statistic_name=agreement.statistic_name, statistic=agreement.statistic, p=agreement.p,
                  p_adjusted=agreement.p_adjusted, adjustment=agreement.adjustment, effect=agreement.effect)
    if agreement.verdict == UNTESTABLE:
        return Finding(**common, verdict=UNTESTABLE, reason=f"its agreement test cannot reach alpha {agreement.alpha} with "
                                                            f"{a.n} checkpoints (point estimate ρ = {a.spearman:.2f}); {compute}")
    reached = agreement.verdict == SUPPORTED and a.spearman_low >= GOAL_SPEARMAN
    if reached:
        return Finding(**common, verdict=SUPPORTED, claim=f"{question} (interval's lower end {a.spearman_low:.2f}; {compute})")
    return Finding(**common, verdict=NOT_SUPPORTED, reason=f"agreement {agreement.verdict}, interval's lower end "
                                                           f"{a.spearman_low:.2f}; {compute}")


def findings(records: Mapping[str, RankRecord], found: Sequence[Agreement], alpha: float,
             pools: Sequence = ()) -> list[Finding]:
    """The record's estimator per language (agreement, Holm over the languages; the goal), every estimator
    pooled over the languages (Holm over the estimators), then whether the estimators differ."""
    own = [a for a in found if a.estimator == records[a.language].estimator]
    stated = agreement_findings(own, alpha, family="languages")
    out = [f for finding, a in zip(stated, own, strict=True) for f in (finding, goal_finding(finding, a))]
    out += pooled_findings(pools, alpha)
    compared = estimators_finding(found, alpha)
    return out + ([compared] if compared else [])
