"""The study report: tidy results table (+ the study's store and prepared data, when at hand) in →
report.html (self-contained, figures embedded), report.md, figures/*.png and tables/*.{csv,tex}: headline
findings, methods, statistics, training curves, error analysis, cost. All text from the data is escaped;
output is deterministic."""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crossling import design, factors, paths, rankreport, stats
from crossling import findings as findings_
from crossling.atomic import atomic_path, write_text_atomic
from crossling.errors import ConfigError, CrosslingError, DataError
from crossling.markup import Cell, Table, duration_unit, fmt, fmt_p, html_escape, markdown_escape
from crossling.methods import StudyFiles

log = logging.getLogger(__name__)


# --- the analyses --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """Every statistic the report shows, computed once from the table (None / empty when not applicable),
    and the findings stated from them."""

    runs: pd.DataFrame
    missing: pd.DataFrame
    empty_cells: pd.DataFrame
    swept: tuple[str, ...]
    summary: pd.DataFrame
    omnibus: pd.DataFrame
    posthoc_matrices: dict[str, pd.DataFrame]
    posthoc: pd.DataFrame
    groups: pd.DataFrame
    wins: pd.DataFrame
    friedman: stats.Friedman | None
    friedman_note: str
    families: pd.DataFrame
    transfer: pd.DataFrame
    subgroup_cells: pd.DataFrame
    subgroup_blocks: pd.DataFrame
    subgroup_test: stats.TestResult
    distances: pd.DataFrame
    typology: pd.DataFrame
    gender_runs: pd.DataFrame
    gender_cells: pd.DataFrame
    gender_test: stats.TestResult
    sensitivity: pd.DataFrame
    variance: pd.DataFrame
    cost: pd.DataFrame
    baseline: str | None
    alpha: float
    p_adjust: str
    seed: int = 0
    findings: tuple[findings_.Finding, ...] = ()


def analyse(table: pd.DataFrame, alpha: float = 0.05, p_adjust: str = "holm", seed: int = 0) -> Analysis:
    """Run every analysis on the usable runs (missing ones listed, not propagated), then state the findings."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha (the significance level) must be between 0 and 1, e.g. 0.05; got {alpha}")
    usable, missing = stats.split_missing(table)
    if usable.empty:
        raise DataError(f"no usable run in the results table ({len(table)} rows, none with status 'done' and a CER)")
    runs = stats.primary_slice(usable)
    friedman, note = _friedman(runs, alpha, p_adjust)
    posthoc = stats.conover_by_language(runs, p_adjust=p_adjust)
    groups = stats.language_groups(runs, alpha=alpha, p_adjust=p_adjust, posthoc=posthoc)
    subgroup_cells, subgroup_test = factors.subgroup_transfer(runs)
    distances = _distances(runs)
    gender_runs, gender_test = factors.gender_gap(runs)
    analysis = Analysis(
        runs=runs, missing=missing, empty_cells=_empty_cells(table, runs), swept=tuple(stats.swept_settings(usable)),
        summary=stats.cell_summary(runs), omnibus=stats.kruskal_by_language(runs), posthoc_matrices=posthoc,
        posthoc=stats.posthoc_long(posthoc), groups=groups, wins=stats.wins(groups), friedman=friedman,
        friedman_note=note, families=factors.group_comparison(runs), transfer=factors.transfer_matrix(runs),
        subgroup_cells=subgroup_cells, subgroup_blocks=factors.subgroup_blocks(subgroup_cells),
        subgroup_test=subgroup_test, distances=distances, typology=_typology(runs, distances, seed),
        gender_runs=gender_runs, gender_cells=factors.gender_cells(gender_runs), gender_test=gender_test,
        sensitivity=factors.setting_sensitivity(usable, seed=seed), variance=factors.variance_decomposition(runs),
        cost=_cost(runs), baseline=design.baseline_alias(sorted(runs["checkpoint"].unique())), alpha=alpha,
        p_adjust=p_adjust, seed=seed)
    return dataclasses.replace(analysis, findings=tuple(state_findings(analysis)))


_KINDS = ("genetic", "geographic", "syntactic", "phonological", "inventory")


def _friedman(runs: pd.DataFrame, alpha: float, p_adjust: str) -> tuple[stats.Friedman | None, str]:
    try:
        return stats.friedman(runs, alpha=alpha, p_adjust=p_adjust), ""
    except DataError as error:
        return None, str(error)


def _distances(runs: pd.DataFrame) -> pd.DataFrame:
    from crossling import typology

    try:
        return typology.checkpoint_distance_table(runs["checkpoint"].unique(), runs["language"].unique(), _KINDS)
    except CrosslingError as error:  # lang2vec missing: the report goes on without typology
        log.warning("typology section skipped: %s", error)
        return pd.DataFrame()


def _typology(runs: pd.DataFrame, distances: pd.DataFrame, seed: int) -> pd.DataFrame:
    if distances.empty or not distances[list(_KINDS)].notna().any().any():
        return pd.DataFrame()
    correlations = factors.typology_correlation(runs, distances[["checkpoint", "language", *_KINDS]], seed=seed,
                                                relative=True)
    return correlations.dropna(subset=["rho"]).reset_index(drop=True)


def _relative_cells(a: Analysis) -> pd.DataFrame:
    """Seed-mean CER / the language's median over checkpoints, per cell, with the cell's distances."""
    means = stats.cell_means(a.runs)
    cells = means.div(means.median(axis=1), axis=0).stack().rename("value").dropna().reset_index()
    return cells.merge(a.distances, on=["checkpoint", "language"]) if not a.distances.empty else cells


def _empty_cells(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint × language cells of the grid (as the table names them) with no usable run at all."""
    grid = pd.MultiIndex.from_product([sorted(table["checkpoint"].astype(str).unique()),
                                       sorted(table["language"].astype(str).unique())])
    present = set(zip(runs["checkpoint"].astype(str), runs["language"].astype(str), strict=True))
    return pd.DataFrame([c for c in grid if c not in present], columns=["checkpoint", "language"])


def _cost(runs: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: runs, mean and sd wall hours, total device hours, throughput, peak memory."""
    frame = runs.assign(**{c: pd.to_numeric(runs[c], errors="coerce") if c in runs else np.nan
                           for c in ("wall_seconds", "device_hours", "audio_seconds_per_second", "peak_memory_mb")})
    frame["wall_hours"] = frame["wall_seconds"] / 3600
    grouped = frame.groupby("checkpoint")
    return pd.DataFrame({"runs": grouped.size(), "wall_hours": grouped["wall_hours"].mean(),
                         "wall_hours_sd": grouped["wall_hours"].std(), "device_hours_total": grouped["device_hours"].sum(min_count=1),
                         "audio_s_per_s": grouped["audio_seconds_per_second"].mean(),
                         "peak_memory_mb": grouped["peak_memory_mb"].max()}).sort_index()


# --- findings ------------------------------------------------------------------------------------------


def state_findings(a: Analysis) -> list[findings_.Finding]:
    """Every finding of the analysis, each from one test at its unit of analysis (see `crossling.findings`)."""
    out = [*findings_.kruskal_findings(a.runs, a.alpha, a.seed),
           *findings_.best_findings(a.runs, a.groups, a.omnibus, alpha=a.alpha, p_adjust=a.p_adjust, seed=a.seed)]
    if a.baseline is not None:
        out += findings_.baseline_findings(a.runs, a.posthoc_matrices, a.omnibus, baseline=a.baseline, alpha=a.alpha,
                                           p_adjust=a.p_adjust, seed=a.seed)
    out.append(findings_.friedman_finding(a.friedman, a.friedman_note, a.alpha, a.seed))
    optional = [findings_.ranking_finding(a.friedman, a.alpha, a.seed),
                findings_.family_finding(a.families, stats.cell_means(a.runs), a.alpha, a.seed),
                findings_.subgroup_finding(a.subgroup_blocks, a.subgroup_test, a.alpha, a.seed)
                if not a.subgroup_cells.empty else None,
                findings_.gender_finding(a.gender_cells, a.gender_test, a.alpha, a.seed)]
    out += [f for f in optional if f is not None]
    if not a.typology.empty:
        out += findings_.typology_findings(a.typology, _relative_cells(a), a.alpha, a.seed)
    return out + findings_.sensitivity_findings(a.sensitivity, a.alpha)


def summary_sentences(a: Analysis) -> list[str]:
    """The report's summary: what was analysed, then the headline findings' sentences (plain text)."""
    out = [f"{len(a.runs)} runs analysed: {a.runs['checkpoint'].nunique()} checkpoints × "
           f"{a.runs['language'].nunique()} languages; "
           + (f"{len(a.missing)} runs missing (excluded, listed below)." if len(a.missing) else "no run missing.")]
    if a.swept:
        out.append(f"Swept settings ({', '.join(a.swept)}): main analyses use each setting's most frequent value.")
    heads = findings_.headline(a.findings)
    out += [f.sentence() for f in heads if f.key.startswith("baseline/")]
    out += [s for s in (findings_.kruskal_sentence(a.findings), findings_.wins_sentence(a.wins, a.alpha, a.p_adjust, runs=a.runs)) if s]
    out += [f.sentence() for f in heads if not f.key.startswith("baseline/")]
    return out


#: Sentences the summary opens with; the rest of what the tests answered follows under MORE.
HEADLINE_SENTENCES = 5
MORE = "More findings:"
UNANSWERABLE = "Questions this design cannot answer:"


def _summary_parts(a: Analysis) -> tuple[list[str], list[str], list[str]]:
    """The summary's sentences in three lists: the headline (the first `HEADLINE_SENTENCES` that a test
    answered), the rest of those, and what the design cannot answer."""
    sentences = summary_sentences(a)
    cannot = [s for s in sentences if s.startswith("Cannot be tested here")]
    answered = [s for s in sentences if s not in cannot]
    return answered[:HEADLINE_SENTENCES], answered[HEADLINE_SENTENCES:], cannot


def _summary_html(a: Analysis) -> list[str]:
    """The headline as a list; more findings and the unanswerable questions folded (<details>) below it."""
    def items(sentences: list[str]) -> str:
        return "<ul>\n" + "\n".join(f"<li>{html_escape(s)}</li>" for s in sentences) + "\n</ul>"

    headline, more, cannot = _summary_parts(a)
    parts = ['<div class="headline">' + items(headline) + "</div>"]
    parts += [f"<details><summary>{html_escape(label)} {len(group)}</summary>\n{items(group)}</details>"
              for label, group in ((MORE, more), (UNANSWERABLE, cannot)) if group]
    how = "\n".join(f"<p>{html_escape(p)}</p>" for p in how_to_read(a))
    return [*parts, f'<div class="howto"><h3>How to read this report</h3>\n{how}</div>']


def _summary_markdown(a: Analysis) -> list[str]:
    headline, more, cannot = _summary_parts(a)
    parts = ["\n".join(f"- {markdown_escape(s)}" for s in headline)]
    parts += [f"{markdown_escape(label)}\n\n" + "\n".join(f"- {markdown_escape(s)}" for s in group)
              for label, group in ((MORE, more), (UNANSWERABLE, cannot)) if group]
    return [*parts, "### How to read this report\n\n" + "\n\n".join(markdown_escape(p) for p in how_to_read(a))]


def how_to_read(a: Analysis) -> list[str]:
    """A few plain sentences on what the numbers and words of the report mean."""
    return [
        "CER is the character error rate and WER the word error rate on a language's test set: the share of "
        "characters (words) a model gets wrong, lower is better; 0.10 = 10 %. Each checkpoint is fine-tuned once "
        "per seed; tables show the mean ± sd over seeds.",
        f"Every statement above comes from one statistical test at alpha {a.alpha}: it names the test, its p (Holm-"
        "adjusted where several questions are tested together), an effect size with a 95 % bootstrap interval, "
        "and n at the test's unit (runs on one test set, languages, or checkpoint × language cells). 'No "
        "evidence' means the test did not reject; it is not evidence of no difference. 'Cannot be tested here' "
        "means the design (too few languages, seeds or cells) cannot reach alpha, whatever the data.",
        "In the CER table, bold marks the checkpoint with the lowest mean CER on a language and those not "
        "significantly above it; checkpoints sharing a letter are not significantly different on that language. Figures are "
        "descriptive: where a figure suggests a difference, the finding states whether a test supports it.",
        "Methods lists the data, recipe, seeds, software and hardware; the training curves and error analysis "
        "(where the runs' files were at hand) show how the runs learned and where they fail.",
    ]


def findings_frame(a: Analysis) -> pd.DataFrame:
    """Every finding as a row (the findings table and findings.csv)."""
    rows = []
    for f in a.findings:
        effect = f.effect or findings_.Effect("", math.nan)
        rows.append({"key": f.key, "question": f.question, "verdict": f.verdict, "test": f.test, "unit": f.unit, "n": f.n,
                     "statistic": f.statistic, "p": f.p, "p_adjusted": f.p_adjusted, "adjustment": f.adjustment,
                     "effect": effect.name, "effect_value": effect.value, "ci_low": effect.low, "ci_high": effect.high,
                     "sentence": f.sentence()})
    return pd.DataFrame(rows, columns=["key", "question", "verdict", "test", "unit", "n", "statistic", "p", "p_adjusted",
                                       "adjustment", "effect", "effect_value", "ci_low", "ci_high", "sentence"])


def _finding(a: Analysis, key: str) -> findings_.Finding | None:
    return next((f for f in a.findings if f.key == key), None)


def _untestable(a: Analysis, key: str) -> bool:
    finding = _finding(a, key)
    return finding is not None and finding.verdict == findings_.UNTESTABLE


# --- tables ------------------------------------------------------------------------------------------


def checkpoint_order(a: Analysis) -> list[str]:
    """Checkpoints by Friedman average rank (best first), else by mean CER over their cells."""
    if a.friedman is not None:
        ranked = list(a.friedman.average_ranks.index)
        return ranked + sorted(set(a.summary["checkpoint"]) - set(ranked))
    return list(a.summary.groupby("checkpoint")["mean"].mean().sort_values(kind="stable").index)


def cer_table(a: Analysis) -> tuple[Table, pd.DataFrame]:
    """The paper-style table: CER % mean ± sd over seeds per checkpoint × language, (tied) best in bold,
    significance letters (same letter: not significantly different within that language)."""
    languages = sorted(a.summary["language"].unique())
    merged = a.summary.merge(a.groups[["checkpoint", "language", "letters", "best", "mean_rank"]],
                             on=["checkpoint", "language"], how="left")
    cells = merged.set_index(["checkpoint", "language"])
    ranks = a.friedman.average_ranks if a.friedman is not None else pd.Series(dtype=float)
    rows = []
    for checkpoint in checkpoint_order(a):
        row = [Cell(checkpoint)]
        for language in languages:
            if (checkpoint, language) not in cells.index:
                row.append(Cell("–"))
                continue
            cell = cells.loc[(checkpoint, language)]
            text = f"{100 * cell['mean']:.1f}" + (f" ± {100 * cell['sd']:.1f}" if math.isfinite(cell["sd"]) else "")
            row.append(Cell(text, bool(cell["best"]), str(cell["letters"])))
        row.append(Cell(fmt(ranks.get(checkpoint, math.nan), 2)))
        rows.append(tuple(row))
    caption = (f"Test CER (%) mean ± sd over seeds. Bold: the lowest mean and every checkpoint not significantly "
               f"above it (Conover-Iman over runs, {a.p_adjust} correction within each language, alpha {a.alpha}, only where "
               f"Kruskal-Wallis is significant); letters: significance groups per language (same letter: no "
               f"evidence of a difference); last column: average rank over languages (Friedman).")
    untestable = a.groups.loc[a.groups["untestable"] != "", ["language", "untestable"]].drop_duplicates()
    caption += "".join(f" No letters on {r.language}: {r.untestable}." for r in untestable.itertuples())
    frame = merged.sort_values(["language", "mean", "checkpoint"])[
        ["checkpoint", "language", "mean", "sd", "n", "min", "max", "mean_rank", "letters", "best"]]
    return Table("cer_table", caption, ("checkpoint", *languages, "avg rank"), tuple(rows)), frame


def _wins_table(a: Analysis) -> Table:
    frame = a.wins[["rank", "checkpoint", "wins", "sole_wins", "languages", "best_on"]]
    return Table.from_frame("wins", "Languages on which each checkpoint is best or tied best (not significantly "
                            "above the lowest mean); equal counts share a rank. languages: those where Conover-Iman "
                            "could compare the checkpoints.", frame)


def _kruskal_table(a: Analysis) -> Table:
    frame = a.omnibus.assign(p=a.omnibus["p"].map(fmt_p))
    return Table.from_frame("kruskal", "Per language: Kruskal-Wallis test across checkpoints (unit: runs, i.e. "
                            "seeds, on the language's one test set), effect size epsilon squared.", frame)


def _verdict_note(a: Analysis, key: str) -> str:
    finding = _finding(a, key)
    return f" {finding.sentence()}" if finding is not None else ""


def _families_table(a: Analysis) -> Table:
    frame = a.families.assign(p=a.families["p"].map(fmt_p), p_holm=a.families["p_holm"].map(fmt_p))
    return Table.from_frame("families", "Indo-European vs other target languages, per checkpoint (unit: languages' "
                            "seed-mean CER; p_holm adjusts the per-checkpoint rows together) and overall (each "
                            "language's mean over checkpoints); Mann-Whitney U, rank-biserial effect (negative: "
                            "Indo-European lower CER)." + _verdict_note(a, "families"), frame)


def _subgroup_table(a: Analysis) -> Table:
    return Table.from_frame("subgroup", "Same-subgroup transfer, one row per target language (the unit): mean CER "
                            "relative to the target's median over monolingual checkpoints, for checkpoints "
                            "pre-trained on a language of the target's subgroup and of another subgroup; Wilcoxon "
                            "signed-rank test of the differences." + _verdict_note(a, "subgroup"), a.subgroup_blocks)


def _typology_table(a: Analysis) -> Table:
    frame = a.typology.assign(p_permutation=a.typology["p_permutation"].map(fmt_p),
                              p_holm=a.typology["p_holm"].map(fmt_p), p_scipy=a.typology["p_scipy"].map(fmt_p))
    return Table.from_frame("typology", "Spearman correlation of relative CER (cell / language median) with the "
                            "URIEL distance from the checkpoint's closest pre-training language to the target "
                            "(unit: checkpoint × language cells); p from a seeded permutation test within languages, "
                            f"Holm-adjusted over the {len(a.typology)} distances (p_holm); p_scipy ignores the "
                            "languages and is shown for reference only.", frame)


def _gender_table(a: Analysis) -> Table:
    cells = a.gender_cells
    frame = cells.groupby("checkpoint").agg(cells=("gap", "size"), median_gap=("gap", "median"),
                                            female_higher=("gap", lambda g: int((g > 0).sum()))).reset_index()
    return Table.from_frame("gender", "Female − male test CER per checkpoint: gaps are paired within each run, "
                            "averaged over the seeds of a checkpoint × language cell (the unit of the test)."
                            + _verdict_note(a, "gender"), frame)


def _findings_table(a: Analysis) -> Table:
    frame = findings_frame(a)[["key", "verdict", "test", "unit", "n", "p", "p_adjusted", "effect_value", "ci_low",
                               "ci_high"]]
    frame = frame.assign(p=frame["p"].map(fmt_p), p_adjusted=frame["p_adjusted"].map(fmt_p))
    return Table.from_frame("findings", f"Every finding: its test at its unit of analysis, p (and the adjusted p of "
                            f"a family), the effect size with a 95 % bootstrap CI over that unit, and the verdict at "
                            f"alpha {a.alpha}. The sentences are in findings.csv.", frame)


#: Each test: the question it answers and its unit of analysis (the report's methods).
METHODS = (
    ("Kruskal-Wallis per language", "do checkpoints differ on this language?", "runs (seeds) of one checkpoint on "
     "the language's one test set: the claim is about this test set, not the language at large"),
    ("Conover-Iman per language", "which checkpoints differ on this language (letters, bold, baseline pairs)?",
     "runs (seeds); p corrected over the language's pairs; only after a significant Kruskal-Wallis"),
    ("Intersection-union over pairs", "does every pre-trained checkpoint beat the baseline on every language?",
     "checkpoint pairs: supported only if every pair is significant with a lower CER (no further correction)"),
    ("Friedman; Nemenyi", "do checkpoints differ across languages; which rank apart (critical-difference diagram)?",
     "languages as blocks, each checkpoint's seed-mean CER: seeds never count as independent samples"),
    ("Mann-Whitney U", "do Indo-European and other targets differ?", "languages (mean CER over checkpoints)"),
    ("Wilcoxon signed-rank (subgroup)", "do monolingual checkpoints transfer differently within their subgroup?",
     "target languages as blocks: same- minus other-subgroup relative CER"),
    ("Spearman with within-language permutations", "does CER follow typological distance?",
     "checkpoint × language cells, shuffled within languages; Holm over the five distances; CI resamples languages"),
    ("Wilcoxon signed-rank (gender)", "do female and male test speakers get different CER?",
     "checkpoint × language cells of seed-mean gaps, each gap paired within a run; cells of one language share its "
     "test speakers"),
    ("Kendall's tau", "do rankings agree across values of a swept setting?", "checkpoints; Holm per setting"),
    ("Effect sizes", "how large?", "95 % bootstrap CIs over the unit of each test (1999 resamples, seeded; BCa, "
     "percentile where BCa is undefined, whole languages for cluster CIs); an interval that excludes its "
     "estimate, as resampling a few tied runs can give, is not reported"),
)


def _methods_table(a: Analysis) -> Table:
    frame = pd.DataFrame(METHODS, columns=["test", "question", "unit of analysis"])
    return Table.from_frame("methods", f"Methods: every test at alpha {a.alpha}; a question whose design cannot "
                            f"reach alpha is reported as 'cannot be tested here', with why.", frame)


def tables(a: Analysis) -> dict[str, tuple[Table, pd.DataFrame]]:
    """name → (rendered table, raw frame for the CSV), in report order; empty analyses left out. Every
    name is one of `TABLE_NAMES`."""
    from crossling import runviews

    paper, frame = cer_table(a)
    out = {"findings": (_findings_table(a), findings_frame(a)), "methods": (_methods_table(a), pd.DataFrame(METHODS)),
           "cer_table": (paper, frame), "cer_wer": runviews.cer_wer_table(a.runs), "wins": (_wins_table(a), a.wins),
           "kruskal": (_kruskal_table(a), a.omnibus)}
    if a.friedman is not None:
        ranks = a.friedman.average_ranks.rename("average_rank").rename_axis("checkpoint").reset_index()
        out["friedman_ranks"] = (Table.from_frame("friedman_ranks", "Average rank over languages (1 = best; the unit: "
                                                  "languages).", ranks), ranks)
    if not _untestable(a, "families"):  # the summary says why; a table of n/a would say nothing more
        out["families"] = (_families_table(a), a.families)
    if not a.transfer.empty:
        transfer = (100 * a.transfer).round(1).reset_index()
        out["transfer"] = (Table.from_frame("transfer", "Monolingual transfer: mean CER (%) by pre-training "
                                            "language (rows) and target language (columns).", transfer, 1),
                           a.transfer.reset_index())
    if not a.subgroup_blocks.empty:
        out["subgroup"] = (_subgroup_table(a), a.subgroup_blocks)
    if not a.typology.empty:
        out["typology"] = (_typology_table(a), a.typology)
    if not a.gender_cells.empty:
        out["gender"] = (_gender_table(a), a.gender_runs)
    if not a.sensitivity.empty:
        out["sensitivity"] = (Table.from_frame("sensitivity", "Kendall's tau between checkpoint rankings under "
                                               "two values of a swept setting (unit: checkpoints; p_holm per "
                                               "setting).", a.sensitivity), a.sensitivity)
    out["variance"] = (Table.from_frame("variance", "Share of CER variance by source (sequential sums of "
                                        "squares, terms in this order; descriptive, no test).", a.variance, 4), a.variance)
    out["cost"] = (runviews.cost_table(a.cost), a.cost.reset_index())
    if len(a.missing):
        missing = a.missing.assign(seed=a.missing["seed"].astype(str))
        out["missing"] = (Table.from_frame("missing", "Runs excluded from every analysis.", missing), a.missing)
    return {name: pair for name, pair in out.items() if not pair[0].empty}


TABLE_NAMES = ("setup", "data", "findings", "methods", "cer_table", "cer_wer", "wins", "kruskal", "friedman_ranks",
               "families", "transfer", "subgroup", "typology", "gender", "sensitivity", "variance",
               "worst_utterances", "character_edits", "cost", "missing", *rankreport.TABLE_NAMES)
FIGURE_NAMES = ("critical_difference", "heatmap", "boxplots", "transfer", "families", "typology", "gender",
                "variance", "training_loss", "dev_cer_curve", "cer_by_length", "cost", *rankreport.FIGURE_NAMES)


# --- figures and findings ----------------------------------------------------------------------------


def make_figures(a: Analysis) -> dict[str, tuple[str, bytes]]:
    """name → (caption, PNG bytes), in report order; every name is one of `FIGURE_NAMES`."""
    from crossling import figures

    order = checkpoint_order(a)
    out = {}
    if a.friedman is not None:
        out["critical_difference"] = (_cd_caption(a), figures.critical_difference(
            a.friedman.average_ranks, a.friedman.cd, f"Nemenyi CD at alpha {a.alpha}", alpha=a.alpha,
            blocks=a.friedman.matrix.shape[0]))
    matrix = stats.cell_means(a.runs).T.reindex(order)
    out["heatmap"] = ("Mean test CER (%) per checkpoint and language (descriptive; the tests are in the tables)",
                      figures.heatmap(100 * matrix, "Test CER % (mean over seeds)", "CER %", "{:.1f}"))
    out["boxplots"] = ("Test CER of every seed, per language", figures.language_boxplots(a.runs, order))
    if len(a.transfer) > 1:  # relative to the median of one pre-training language, every cell is 0 %
        relative = a.transfer.div(a.transfer.median(axis=0), axis=1)  # remove target difficulty
        out["transfer"] = ("Monolingual transfer matrix: CER relative to the target's median over "
                           "pre-training languages (blue: lower CER than usual for that target, red: higher; "
                           "colours saturate at ±25 %; descriptive — the subgroup test is in the table above)",
                           figures.relative_heatmap(relative, "Pre-training language → target"))
    if not _untestable(a, "families"):
        labels = pd.Series({lang: factors.indo_european(lang) for lang in matrix.columns})
        out["families"] = ("Seed-mean CER of Indo-European and other targets per checkpoint",
                           figures.group_boxes(matrix.T[order], labels, "Target language family"))
    if not a.typology.empty:
        frame = _relative_cells(a).rename(columns={"value": "relative CER"})
        kinds = list(a.typology["distance"])
        tested = [_finding(a, f"typology/{kind}") for kind in kinds]
        p_values = [f.p_adjusted if f is not None and f.verdict != findings_.UNTESTABLE else math.nan for f in tested]
        out["typology"] = ("Relative CER against URIEL distance of the closest pre-training language, one point per "
                           "checkpoint × language cell; red: Theil-Sen fit, drawn only where the correlation can be "
                           "tested (its Holm-adjusted permutation p over the distances is in the panel's title)",
                           figures.correlation_panels(frame, kinds, "relative CER", rho=list(a.typology["rho"]),
                                                      p_values=p_values, p_label="Holm p",
                                                      y_label="CER / language median"))
    if not a.gender_cells.empty:
        out["gender"] = ("CER of female vs male speakers, one point per run (the test uses checkpoint × language "
                         "cells)", figures.gender_scatter(a.gender_runs, "Per-run CER by gender"))
    out["variance"] = ("Variance decomposition", figures.variance_bars(a.variance, "Where CER variance comes from"))
    if a.cost["wall_hours"].notna().any():
        unit, scale = duration_unit(3600 * a.cost["wall_hours"])
        cost = a.cost.reindex(order)
        cost = cost.assign(time=3600 * cost["wall_hours"] / scale, time_sd=3600 * cost["wall_hours_sd"] / scale)
        out["cost"] = (f"Wall-clock time per run ({unit})", figures.cost_bars(
            cost, "time", "Cost per run", f"wall-clock {unit} per run (mean ± sd)"))
    return out


def _cd_caption(a: Analysis) -> str:
    """What the diagram can support: languages are its unit, unlike the per-language letters of the CER
    table (runs on one test set), so with few languages it separates less, and the caption says how much."""
    n, k = a.friedman.matrix.shape
    ranking = _finding(a, "ranking")
    from crossling.figures import cd_explanation

    return ("Critical-difference diagram. " + cd_explanation(a.friedman.cd, a.alpha, n) + " Its unit is the "
            "language (seed-mean CER), while the letters of the CER table compare runs on each language's one test "
            "set, so the two can disagree: " + findings_.cd_note(a.friedman.cd, n, k) + "."
            + (f" {ranking.sentence()}" if ranking else ""))


# --- documents -----------------------------------------------------------------------------------------

_SECTIONS = (
    ("summary", "Summary", (), ()),
    ("methods", "Methods", ("setup", "data", "methods"), ()),
    ("findings", "Every finding", ("findings",), ()),
    ("results", "Results per checkpoint and language", ("cer_table", "cer_wer", "wins"), ("heatmap", "boxplots")),
    ("ranking", "Ranking across languages", ("friedman_ranks", "kruskal"), ("critical_difference",)),
    ("families", "Language families", ("families",), ("families",)),
    ("transfer", "Monolingual transfer", ("transfer", "subgroup"), ("transfer",)),
    ("typology", "Typology", ("typology",), ("typology",)),
    ("gender", "Speaker gender", ("gender",), ("gender",)),
    ("settings", "Hyper-parameter sensitivity", ("sensitivity",), ()),
    ("variance", "Variance decomposition", ("variance",), ("variance",)),
    ("curves", "Training curves", (), ("training_loss", "dev_cer_curve")),
    ("errors", "Error analysis", ("worst_utterances", "character_edits"), ("cer_by_length",)),
    ("predicted", "Predicted vs measured: checkpoints ranked before fine-tuning",
     ("rank_agreement", "rank_pooled", "rank_scores"), ("rank_vs_cer",)),
    ("cost", "Cost", ("cost",), ("cost",)),
    ("missing", "Missing runs", ("missing",), ()),
)

_CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.2em 0 1em;font-size:12px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child{text-align:left}.caption{text-align:left;font-style:italic;font-size:13px;margin:1.2em 0 .2em;max-width:60em}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-style:italic;font-size:12px}
nav a{margin-right:1em}.scroll{overflow-x:auto}.howto{font-size:14px;max-width:60em}
#table-setup td,#table-methods td,#table-findings td:nth-child(-n+4),#table-worst_utterances td,#table-character_edits td{white-space:normal;text-align:left}
#table-setup th,#table-methods th,#table-findings th:nth-child(-n+4),#table-worst_utterances th,#table-character_edits th{text-align:left}
.headline li{font-size:17px;margin:.3em 0}details{margin:.5em 0 .5em 1.2em}summary{cursor:pointer;font-weight:600}
#table-worst_utterances td:nth-child(5),#table-worst_utterances td:nth-child(6){min-width:16em;max-width:32em;overflow-wrap:anywhere}
#table-setup td:last-child,#table-methods td{max-width:48em}#table-worst_utterances td:last-child{text-align:right}"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _sections(a: Analysis, rendered: dict, figs: dict):
    """(id, title, tables, figures) of every section that has content, plus the summary. A table or figure
    name no builder can produce is an error (a renamed table must not silently drop its section)."""
    for key, title, table_names, figure_names in _SECTIONS:
        unknown = [n for n in table_names if n not in TABLE_NAMES] + [n for n in figure_names if n not in FIGURE_NAMES]
        if unknown:
            raise LookupError(f"report section {key!r} names unknown table/figure {', '.join(unknown)}; known tables: "
                              f"{', '.join(TABLE_NAMES)}; figures: {', '.join(FIGURE_NAMES)}")
        chosen = [rendered[n][0] for n in table_names if n in rendered]
        pictures = [(n, *figs[n]) for n in figure_names if n in figs]
        if key == "summary" or chosen or pictures:
            yield key, title, chosen, pictures


#: Tables longer than this are folded (<details>) on the page, so a reader scrolls past them in one step.
FOLD_ROWS = 40


def _table_html(table: Table) -> str:
    html = table.html(caption_outside=True)
    if len(table.rows) <= FOLD_ROWS:
        return html
    caption, body = html.split("\n", 1)  # the caption paragraph stays visible
    return f"{caption}\n<details><summary>Show all {len(table.rows)} rows</summary>\n{body}\n</details>"


def render_html(title: str, a: Analysis, rendered: dict, figs: dict, notes: dict | None = None) -> str:
    """The page; `notes` adds sentences at the top of sections other than the summary ({section: [text]})."""
    parts = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
             f"<title>{html_escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<h1>{html_escape(title)}</h1>"]
    sections = list(_sections(a, rendered, figs))
    parts.append("<nav>" + "".join(f'<a href="#{k}">{html_escape(t)}</a>' for k, t, _, _ in sections) + "</nav>")
    for key, heading, chosen, pictures in sections:
        parts.append(f'<section id="{key}">\n<h2>{html_escape(heading)}</h2>')
        if key == "summary":
            parts.extend(_summary_html(a))
        elif (notes or {}).get(key):
            parts.append("<ul>\n" + "\n".join(f"<li>{html_escape(s)}</li>" for s in notes[key]) + "\n</ul>")
        parts.extend(_table_html(t) for t in chosen)
        for name, caption, png in pictures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure id="figure-{name}"><img src="data:image/png;base64,{data}" alt="{html_escape(caption)}">'
                         f"<figcaption>{html_escape(caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def render_markdown(title: str, a: Analysis, rendered: dict, figs: dict, notes: dict | None = None) -> str:
    parts = [f"# {markdown_escape(title)}"]
    for key, heading, chosen, pictures in _sections(a, rendered, figs):
        parts.append(f"## {markdown_escape(heading)}")
        if key == "summary":
            parts.extend(_summary_markdown(a))
        elif (notes or {}).get(key):
            parts.append("\n".join(f"- {markdown_escape(s)}" for s in notes[key]))
        parts.extend(t.markdown() for t in chosen)
        parts.extend(f"![{markdown_escape(caption)}](figures/{name}.png)" for name, caption, _ in pictures)
    return "\n\n".join(parts) + "\n"


def write_report(table: pd.DataFrame, out_dir: Path, title: str = "crossling study report", alpha: float = 0.05,
                 p_adjust: str = "holm", seed: int = 0, rank_records: dict | None = None,
                 files: StudyFiles | None = None) -> dict[str, Path]:
    """Analyse `table` and write report.html, report.md, figures/*.png and tables/*.{csv,tex} under
    `out_dir` (report.html last). Returns {relative name: path} of every file written. With the
    study's rank records ({language: RankRecord}) the report also sets them against the runs; with the
    study's `files`, it adds the methods' data and setup, training curves and error analysis."""
    return write_analysis(analyse(table, alpha=alpha, p_adjust=p_adjust, seed=seed), out_dir, title,
                          rank_records=rank_records, files=files)


def write_analysis(a: Analysis, out_dir: Path, title: str = "crossling study report",
                   rank_records: dict | None = None, *, files: StudyFiles | None = None) -> dict[str, Path]:
    """Write the report of an `Analysis` (see `write_report`)."""
    out_dir = Path(out_dir)
    a, rendered, figs, notes, details = _contents(a, rank_records, files)
    written: dict[str, Path] = {}

    def record(path: Path) -> None:
        written[path.relative_to(out_dir).as_posix()] = path
        log.debug("wrote %s", path)

    for name, (_, png) in figs.items():
        record(_write_bytes(paths.report_figure_path(out_dir, name), png))
    for name, (rendered_table, frame) in rendered.items():
        record(_write_text(paths.report_table_path(out_dir, name, "csv"), _csv(frame)))
        record(_write_text(paths.report_table_path(out_dir, name, "tex"), rendered_table.latex()))
    for name, frame in details.items():
        record(_write_text(paths.report_table_path(out_dir, name, "csv"), _csv(frame)))
    record(_write_text(paths.report_page_path(out_dir, "md"), render_markdown(title, a, rendered, figs, notes)))
    record(_write_text(paths.report_page_path(out_dir, "html"), render_html(title, a, rendered, figs, notes)))
    log.info("report written to %s (%d files)", out_dir, len(written))
    return written


def _contents(a: Analysis, rank_records: dict | None,
              files: StudyFiles | None = None) -> tuple[Analysis, dict, dict, dict, dict[str, pd.DataFrame]]:
    """What the report shows: the analysis (with the rank section's findings), its rendered tables, figures,
    section notes and CSV-only frames; with the study's `files`, also the methods, curves and error analysis."""
    predicted = rankreport.rank_section(rank_records, a.runs, a.alpha) if rank_records else None
    if predicted:  # its findings join the findings table; its sentences open its section
        a = dataclasses.replace(a, findings=(*a.findings, *predicted.findings))
    rendered, figs, details = tables(a), make_figures(a), csv_only(a)
    notes = {"predicted": list(predicted.sentences)} if predicted else {}
    rendered.update(predicted.tables if predicted else {})
    figs.update(predicted.figures if predicted else {})
    if files is not None:
        run_tables, run_figures, run_details = run_views(a, files)
        rendered, figs, details = {**run_tables, **rendered}, {**figs, **run_figures}, {**details, **run_details}
    return a, rendered, figs, notes, details


def run_views(a: Analysis, files: StudyFiles) -> tuple[dict, dict, dict[str, pd.DataFrame]]:
    """(tables, figures, CSV-only frames) from the study's own files: the methods' setup and data, training
    curves from the runs' metrics.jsonl, error analysis from their hypotheses; each left out when its files
    are not there."""
    from crossling import methods, runviews

    rendered = methods.methods_tables(a.runs, files)
    figs = runviews.curve_figures(a.runs, files.store)
    error_figures, error_tables, error_frames = runviews.error_views(a.runs, files.store)
    return {**rendered, **error_tables}, {**figs, **error_figures}, error_frames


def csv_only(a: Analysis) -> dict[str, pd.DataFrame]:
    """Detail tables too large for the page: every post-hoc p-value, distances, transfer cells."""
    out = {"posthoc_conover": a.posthoc, "subgroup_cells": a.subgroup_cells, "distances": a.distances,
           "gender_cells": a.gender_cells}
    if a.friedman is not None:
        out["friedman_nemenyi"] = a.friedman.nemenyi.rename_axis("checkpoint").reset_index()
        out["friedman_conover"] = a.friedman.conover.rename_axis("checkpoint").reset_index()
    return out


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def _write_text(path: Path, text: str) -> Path:
    write_text_atomic(path, text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# --- sources -------------------------------------------------------------------------------------------


def report_from(source: str | Path, out_dir: Path, store: Path | None = None, title: str | None = None,
                alpha: float = 0.05, p_adjust: str = "holm") -> dict[str, Path]:
    """`write_report` on the table of `source` (see `crossling.results.load_table`), the rank records of its
    store, if any, and the study's own files (store, prepared data) where they can be found; the title
    defaults to its name."""
    from crossling.methods import study_files
    from crossling.results import load_table

    table = load_table(source, store)
    return write_report(table, out_dir, title=_title(source, title), alpha=alpha, p_adjust=p_adjust,
                        rank_records=rankreport.source_records(source, store, table), files=study_files(source, store))


def report_page_from(source: str | Path, store: Path | None = None, title: str | None = None,
                     alpha: float = 0.05, p_adjust: str = "holm") -> str:
    """The report of `source` as one self-contained HTML page (figures embedded as data URIs): what
    `report_from` writes as report.html, without writing anything."""
    from crossling.methods import study_files
    from crossling.results import load_table

    table = load_table(source, store)
    analysis = analyse(table, alpha=alpha, p_adjust=p_adjust)
    a, rendered, figs, notes, _ = _contents(analysis, rankreport.source_records(source, store, table),
                                            study_files(source, store))
    return render_html(_title(source, title), a, rendered, figs, notes)


def _title(source: str | Path, title: str | None) -> str:
    return title or f"crossling report: {Path(str(source)).stem}"
