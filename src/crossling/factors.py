"""What explains a study's differences, beyond "which checkpoint is best": language family, pre-training
language (monolingual transfer within a subgroup), typological distance, speaker gender, recipe settings,
and a variance decomposition. Pure functions over the tidy results table (one row per run) -> tables.

Like `crossling.stats` (whose descriptive helpers and test records they share), they use usable runs only."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as st

from crossling.stats import KEYS, TestResult, cell_means, kruskal, swept_settings, usable_runs

# --- families and transfer -------------------------------------------------------------------------


def rank_biserial(u: float, n1: int, n2: int) -> float:
    """Rank-biserial correlation from group 1's Mann-Whitney U: 2U/(n1 n2) − 1 (> 0: group 1 higher)."""
    return 2 * u / (n1 * n2) - 1


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Two-sided Mann-Whitney U of a vs b with the rank-biserial effect size (> 0: a higher)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return TestResult("mannwhitneyu", math.nan, math.nan, math.nan, "rank_biserial", len(a) + len(b))
    u, p = st.mannwhitneyu(a, b, alternative="two-sided")
    return TestResult("mannwhitneyu", float(u), float(p), rank_biserial(float(u), len(a), len(b)),
                      "rank_biserial", len(a) + len(b))


def indo_european(language: str) -> str:
    """The default grouping: 'Indo-European' or 'other'."""
    from crossling.languages import find_language

    lang = find_language(language)
    return "Indo-European" if lang is not None and lang.indo_european else "other"


def group_comparison(table: pd.DataFrame, grouping: Callable[[str], str] | Mapping[str, str] = indo_european,
                     metric: str = "cer") -> pd.DataFrame:
    """Compare language groups (default Indo-European vs other) per checkpoint and overall.

    Samples are languages: per checkpoint its seed-mean cells, overall each language's mean over
    checkpoints (so no language counts more than once). Two groups → Mann-Whitney U + rank-biserial
    (first group in sorted order vs second); more → Kruskal-Wallis + ε²."""
    lookup = grouping.get if isinstance(grouping, Mapping) else grouping
    matrix = cell_means(table, metric)
    labels = pd.Series({lang: lookup(lang) for lang in matrix.index}, dtype=object)
    columns = [(name, matrix[name]) for name in matrix.columns] + [("(all checkpoints)", matrix.mean(axis=1))]
    rows = [_compare_groups(name, values.dropna(), labels) for name, values in columns]
    return pd.DataFrame(rows)


def _compare_groups(name: str, values: pd.Series, labels: pd.Series) -> dict:
    groups = labels.reindex(values.index)
    names = sorted(groups.dropna().unique())
    row = {"checkpoint": name, "groups": " vs ".join(names)}
    for g in names:
        row[f"median[{g}]"] = float(values[groups == g].median())
        row[f"n[{g}]"] = int((groups == g).sum())
    if len(names) == 2:
        result = mann_whitney(values[groups == names[0]], values[groups == names[1]])
    else:
        result = kruskal(values, groups)
    return {**row, "test": result.test, "statistic": result.statistic, "p": result.p,
            "effect": result.effect, "effect_name": result.effect_name}


def monolingual_languages(checkpoints: Sequence[str]) -> dict[str, str]:
    """checkpoint → its single pre-training language (as a Common Voice code: 'sv' → 'sv-SE'), for
    registered monolingual checkpoints."""
    from crossling.languages import find_language
    from crossling.registry import find_checkpoint

    out = {}
    for name in checkpoints:
        facts = find_checkpoint(name)
        if facts is not None and len(facts.pretrain_languages) == 1 and not facts.multilingual:
            lang = find_language(facts.pretrain_languages[0])
            out[name] = lang.code if lang is not None else facts.pretrain_languages[0]
    return out


def transfer_matrix(table: pd.DataFrame, pretrain: Mapping[str, str] | None = None,
                    metric: str = "cer") -> pd.DataFrame:
    """Pre-training language × target language: mean over monolingual checkpoints of the seed-mean
    metric. `pretrain` maps checkpoint → pre-training language (default: the registry's facts)."""
    matrix = cell_means(table, metric)
    pretrain = dict(pretrain) if pretrain is not None else monolingual_languages(list(matrix.columns))
    cells = matrix[[c for c in matrix.columns if c in pretrain]].T
    cells.index = [pretrain[c] for c in cells.index]
    return cells.groupby(level=0).mean().rename_axis(index="pretrain_language", columns="language")


def subgroup_transfer(table: pd.DataFrame, pretrain: Mapping[str, str] | None = None,
                      metric: str = "cer") -> tuple[pd.DataFrame, TestResult]:
    """Do monolingual checkpoints transfer better within their own subgroup (genus)?

    Each (monolingual checkpoint, target) cell is divided by the target's median over monolingual
    checkpoints (removing language difficulty) and labelled 'same language', 'same subgroup' or
    'other subgroup'; Mann-Whitney U compares same- vs other-subgroup cells (same language excluded)."""
    from crossling.languages import find_language

    matrix = cell_means(table, metric)
    pretrain = dict(pretrain) if pretrain is not None else monolingual_languages(list(matrix.columns))
    mono = matrix[[c for c in matrix.columns if c in pretrain]]
    relative = mono.div(mono.median(axis=1), axis=0)
    rows = []
    for target, row in relative.iterrows():
        for name, value in row.dropna().items():
            source, goal = find_language(pretrain[name]), find_language(target)
            same = source is not None and goal is not None and source.lineage == goal.lineage
            relation = "same language" if source is not None and source == goal else (
                "same subgroup" if same else "other subgroup")
            rows.append({"checkpoint": name, "pretrain_language": pretrain[name], "language": target,
                         "relative": float(value), "relation": relation})
    cells = pd.DataFrame(rows, columns=["checkpoint", "pretrain_language", "language", "relative", "relation"])
    same = cells.loc[cells["relation"] == "same subgroup", "relative"]
    other = cells.loc[cells["relation"] == "other subgroup", "relative"]
    return cells, mann_whitney(same, other)


# --- typology, demographics, settings, variance ----------------------------------------------------


def permutation_spearman(x: Sequence[float], y: Sequence[float], seed: int = 0, n_permutations: int = 4999,
                         strata: Sequence | None = None) -> TestResult:
    """Spearman ρ of x and y with a two-sided permutation p-value ((1 + #|ρ*| ≥ |ρ|) / (1 + B)).

    With `strata`, y is shuffled only within each stratum (e.g. within a target language), so the
    null keeps per-stratum structure such as language difficulty. Seeded: same input, same p."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    labels = np.zeros(len(x)) if strata is None else np.asarray(strata)[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return TestResult("spearman_permutation", math.nan, math.nan, math.nan, "rho", len(x))
    rx, ry = st.rankdata(x), st.rankdata(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    rng = np.random.default_rng(seed)
    blocks = [np.flatnonzero(labels == label) for label in pd.unique(labels)]
    shuffled = np.empty((n_permutations, len(ry)))
    for block in blocks:
        shuffled[:, block] = rng.permuted(np.broadcast_to(ry[block], (n_permutations, len(block))), axis=1)
    centred = shuffled - shuffled.mean(axis=1, keepdims=True)
    null = centred @ (rx - rx.mean()) / (np.linalg.norm(centred, axis=1) * np.linalg.norm(rx - rx.mean()))
    p = (1 + int(np.sum(np.abs(null) >= abs(rho) - 1e-12))) / (1 + n_permutations)
    return TestResult("spearman_permutation", rho, p, rho, "rho", len(x))


def typology_correlation(table: pd.DataFrame, distances: pd.DataFrame, metric: str = "cer", seed: int = 0,
                         n_permutations: int = 4999, relative: bool = False) -> pd.DataFrame:
    """Spearman ρ between seed-mean cells and each distance column of `distances` (columns checkpoint,
    language, <distance kinds…>), with scipy's p and a within-language permutation p (seeded).

    `relative` divides each cell by its language's median over checkpoints first, so ρ is not driven
    by some languages being harder than others."""
    matrix = cell_means(table, metric)
    if relative:
        matrix = matrix.div(matrix.median(axis=1), axis=0)
    cells = matrix.stack().rename("value").reset_index()
    merged = cells.merge(distances, on=["checkpoint", "language"], how="inner")
    rows = []
    for kind in [c for c in distances.columns if c not in ("checkpoint", "language")]:
        part = merged.dropna(subset=[kind])
        result = permutation_spearman(part[kind], part["value"], seed, n_permutations, part["language"])
        scipy_p = st.spearmanr(part[kind], part["value"]).pvalue if result.n >= 3 else math.nan
        rows.append({"distance": kind, "rho": result.statistic, "p_permutation": result.p,
                     "p_scipy": float(scipy_p), "n": result.n})
    return pd.DataFrame(rows, columns=["distance", "rho", "p_permutation", "p_scipy", "n"])


def gender_gap(table: pd.DataFrame) -> tuple[pd.DataFrame, TestResult]:
    """Per run female − male test CER, and a Wilcoxon signed-rank test over runs having both.

    Effect: matched-pairs rank-biserial (> 0: women have the higher CER). Runs missing either gender
    are left out of the test (their gap is NaN in the returned frame)."""
    usable = usable_runs(table, "cer")
    for column in ("cer_female", "cer_male"):
        if column not in usable:
            usable[column] = np.nan
    runs = usable[[c for c in ("run_id", *KEYS, "cer_female", "cer_male") if c in usable]].copy()
    runs["gap"] = runs["cer_female"].astype(float) - runs["cer_male"].astype(float)
    gaps = runs["gap"].dropna().to_numpy()
    nonzero = gaps[gaps != 0]
    if len(nonzero) < 1:
        return runs, TestResult("wilcoxon", math.nan, math.nan, math.nan, "rank_biserial", len(gaps))
    w, p = st.wilcoxon(gaps)
    ranks = st.rankdata(np.abs(nonzero))
    effect = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    return runs, TestResult("wilcoxon", float(w), float(p), effect, "rank_biserial", len(gaps))


def setting_sensitivity(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """For each swept `setting.*` column: Kendall's τ between the checkpoint rankings (by average rank
    over languages of seed-mean cells) obtained under each pair of its values."""
    usable = usable_runs(table, metric)
    rows = []
    for column in swept_settings(usable):
        rankings = {value: _checkpoint_ranking(part, metric) for value, part in usable.groupby(usable[column].astype(str))}
        for a, b in combinations(sorted(rankings), 2):
            common = sorted(set(rankings[a].index) & set(rankings[b].index))
            tau, p = st.kendalltau(rankings[a][common], rankings[b][common]) if len(common) >= 2 else (math.nan, math.nan)
            rows.append({"setting": column.removeprefix("setting."), "value_a": a, "value_b": b,
                         "tau": float(tau), "p": float(p), "n_checkpoints": len(common)})
    return pd.DataFrame(rows, columns=["setting", "value_a", "value_b", "tau", "p", "n_checkpoints"])


def _checkpoint_ranking(part: pd.DataFrame, metric: str) -> pd.Series:
    matrix = part.pivot_table(index="language", columns="checkpoint", values=metric, aggfunc="mean")
    return matrix.rank(axis=1).mean(axis=0)


def variance_decomposition(table: pd.DataFrame, metric: str = "cer",
                           factors: Sequence[str] = ("checkpoint", "language", "seed", "checkpoint:language")
                           ) -> pd.DataFrame:
    """Share of the metric's variance explained by each factor: sequential (type I) sums of squares
    from least-squares fits adding one term at a time in `factors` order; the rest is residual.

    In a balanced grid these are the classical ANOVA sums of squares (order-free); in an unbalanced
    one each term gets what it explains beyond the terms before it."""
    usable = usable_runs(table, metric)
    y = usable[metric].to_numpy(float)
    total = float(((y - y.mean()) ** 2).sum())
    design = np.ones((len(y), 1))
    previous = total
    rows = []
    for term in factors:
        design = np.hstack([design, _dummies(usable, term)])
        fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
        rss = float(((y - fitted) ** 2).sum())
        rows.append({"source": term, "sum_sq": max(previous - rss, 0.0)})
        previous = rss
    rows.append({"source": "residual", "sum_sq": previous})
    out = pd.DataFrame(rows)
    out["share"] = out["sum_sq"] / total if total > 0 else math.nan
    return out


def _dummies(frame: pd.DataFrame, term: str) -> np.ndarray:
    labels = frame[term.split(":")].astype(str).agg("\x1f".join, axis=1)
    return pd.get_dummies(labels).to_numpy(float)
