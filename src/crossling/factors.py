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
from statsmodels.stats.multitest import multipletests

from crossling.stats import (
    KEYS,
    TestResult,
    cell_means,
    existing_objects_skipped_by_gc,
    kruskal,
    swept_settings,
    usable_runs,
)

# --- families and transfer -------------------------------------------------------------------------


def rank_biserial(u: float, n1: int, n2: int) -> float:
    """Rank-biserial correlation from group 1's Mann-Whitney U: 2U/(n1 n2) − 1 (> 0: group 1 higher)."""
    return 2 * u / (n1 * n2) - 1


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Two-sided Mann-Whitney U of a vs b with the rank-biserial effect size (> 0: a higher)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return TestResult(test="mannwhitneyu", effect_name="rank_biserial", n=len(a) + len(b))
    u, p = st.mannwhitneyu(a, b, alternative="two-sided")
    return TestResult(test="mannwhitneyu", effect_name="rank_biserial", n=len(a) + len(b), statistic=float(u),
                      p=float(p), effect=rank_biserial(float(u), len(a), len(b)))


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
    (first group in sorted order vs second); more → Kruskal-Wallis + ε². `p_holm` adjusts the
    per-checkpoint rows together (the overall row is the one primary test and keeps its p)."""
    lookup = grouping.get if isinstance(grouping, Mapping) else grouping
    matrix = cell_means(table, metric)
    labels = pd.Series({lang: lookup(lang) for lang in matrix.index}, dtype=object)
    columns = [(name, matrix[name]) for name in matrix.columns] + [(OVERALL, matrix.mean(axis=1))]
    out = pd.DataFrame([_compare_groups(name, values.dropna(), labels) for name, values in columns])
    per_checkpoint = out["checkpoint"] != OVERALL
    out["p_holm"] = out["p"]
    out.loc[per_checkpoint, "p_holm"] = holm(out.loc[per_checkpoint, "p"])
    return out


OVERALL = "(all checkpoints)"


def holm(pvalues: Sequence[float] | pd.Series) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels); NaN stays NaN and is left out of the family."""
    values = np.asarray(pvalues, float)
    out = np.full(len(values), np.nan)
    tested = np.isfinite(values)
    if tested.any():
        with existing_objects_skipped_by_gc():
            out[tested] = multipletests(values[tested], method="holm")[1]
    return out


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
    """Do monolingual checkpoints transfer differently within their own subgroup (genus)?

    Each (monolingual checkpoint, target) cell is divided by the target's median over monolingual
    checkpoints (removing language difficulty) and labelled 'same language', 'same subgroup' or
    'other subgroup'. Target languages are the blocks: on each target having both kinds of checkpoint,
    same-subgroup minus other-subgroup mean relative CER (`subgroup_blocks`); a Wilcoxon signed-rank
    test over those targets (effect < 0: own subgroup lower CER). Same-language cells are left out."""
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
    return cells, wilcoxon(subgroup_blocks(cells)["difference"])


def subgroup_blocks(cells: pd.DataFrame) -> pd.DataFrame:
    """Per target language with both same- and other-subgroup cells: their mean relative CER and the
    difference same − other (the paired observations of the subgroup test)."""
    kept = cells[cells["relation"].isin(["same subgroup", "other subgroup"])]
    means = kept.pivot_table(index="language", columns="relation", values="relative", aggfunc="mean")
    means = means.reindex(columns=["same subgroup", "other subgroup"]).dropna()
    frame = means.rename(columns={"same subgroup": "same_subgroup", "other subgroup": "other_subgroup"})
    frame["difference"] = frame["same_subgroup"] - frame["other_subgroup"]
    return frame.rename_axis(columns=None).reset_index()


def wilcoxon(differences: Sequence[float] | pd.Series) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of paired differences (scipy; zeros dropped, as Wilcox's
    default) with the matched-pairs rank-biserial effect (> 0: positive differences dominate)."""
    values = np.asarray(differences, float)
    values = values[np.isfinite(values)]
    nonzero = values[values != 0]
    if len(nonzero) < 1:
        return TestResult(test="wilcoxon", effect_name="rank_biserial", n=len(values))
    w, p = st.wilcoxon(values)
    return TestResult(test="wilcoxon", effect_name="rank_biserial", n=len(values), statistic=float(w), p=float(p),
                      effect=matched_rank_biserial(nonzero))


def matched_rank_biserial(differences: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """(sum of ranks of positive − of negative |differences|) / sum of all ranks; zeros excluded."""
    values = np.asarray(differences, float)
    ranks = st.rankdata(np.where(values == 0, np.nan, np.abs(values)), axis=axis, nan_policy="omit")
    ranks = np.nan_to_num(ranks)
    signed = (np.sign(values) * ranks).sum(axis=axis)
    total = ranks.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = signed / total
    return float(result) if np.ndim(result) == 0 else result


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
        return TestResult(test="spearman_permutation", effect_name="rho", n=len(x))
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
    return TestResult(test="spearman_permutation", effect_name="rho", n=len(x), statistic=rho, p=p, effect=rho)


def typology_correlation(table: pd.DataFrame, distances: pd.DataFrame, metric: str = "cer", seed: int = 0,
                         n_permutations: int = 4999, relative: bool = False) -> pd.DataFrame:
    """Spearman ρ between seed-mean cells and each distance column of `distances` (columns checkpoint,
    language, <distance kinds…>), with scipy's p and a within-language permutation p (seeded).

    `relative` divides each cell by its language's median over checkpoints first, so ρ is not driven
    by some languages being harder than others. The distances are one family: `p_holm` adjusts the
    permutation p-values together (Holm)."""
    matrix = cell_means(table, metric)
    if relative:
        matrix = matrix.div(matrix.median(axis=1), axis=0)
    cells = matrix.stack().rename("value").dropna().reset_index()  # pandas 3 keeps NaN cells in stack()
    merged = cells.merge(distances, on=["checkpoint", "language"], how="inner")
    rows = []
    for kind in [c for c in distances.columns if c not in ("checkpoint", "language")]:
        part = merged.dropna(subset=[kind])
        result = permutation_spearman(part[kind], part["value"], seed, n_permutations, part["language"])
        scipy_p = st.spearmanr(part[kind], part["value"]).pvalue if result.n >= 3 else math.nan
        rows.append({"distance": kind, "rho": result.statistic, "p_permutation": result.p,
                     "p_scipy": float(scipy_p), "n": result.n, "languages": part["language"].nunique()})
    out = pd.DataFrame(rows, columns=["distance", "rho", "p_permutation", "p_scipy", "n", "languages"])
    out.insert(3, "p_holm", holm(out["p_permutation"]))
    return out


def gender_gap(table: pd.DataFrame) -> tuple[pd.DataFrame, TestResult]:
    """Per run female − male test CER (paired within the run: one model, one test set), and a
    Wilcoxon signed-rank test over checkpoint × language cells of seed-mean gaps (`gender_cells`):
    runs of one cell share its test set, so seeds are averaged, not counted as samples.

    Effect: matched-pairs rank-biserial (> 0: women have the higher CER). Runs missing either gender
    have a NaN gap and are left out."""
    usable = usable_runs(table, "cer")
    for column in ("cer_female", "cer_male"):
        if column not in usable:
            usable[column] = np.nan
    runs = usable[[c for c in ("run_id", *KEYS, "cer_female", "cer_male") if c in usable]].copy()
    runs["gap"] = runs["cer_female"].astype(float) - runs["cer_male"].astype(float)
    return runs, wilcoxon(gender_cells(runs)["gap"])


def gender_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint × language: the mean gap over its runs having both genders, and how many."""
    known = runs.dropna(subset=["gap"])
    return (known.groupby(["checkpoint", "language"])["gap"].agg(gap="mean", runs="size").reset_index())


def setting_sensitivity(table: pd.DataFrame, metric: str = "cer", seed: int = 0) -> pd.DataFrame:
    """For each swept `setting.*` column: Kendall's τ between the checkpoint rankings (by average rank
    over languages of seed-mean cells) obtained under each pair of its values, with a 95 % bootstrap CI
    resampling checkpoints (tau_low, tau_high); `p_holm` adjusts the pairs of one setting together."""
    from crossling.findings import cluster_ci  # findings imports this module

    usable = usable_runs(table, metric)
    rows = []
    for column in swept_settings(usable):
        rankings = {value: _checkpoint_ranking(part, metric) for value, part in usable.groupby(usable[column].astype(str))}
        for a, b in combinations(sorted(rankings), 2):
            common = sorted(set(rankings[a].index) & set(rankings[b].index))
            x, y = rankings[a][common].to_numpy(), rankings[b][common].to_numpy()
            tau, p = st.kendalltau(x, y) if len(common) >= 2 else (math.nan, math.nan)
            low, high = cluster_ci(list(np.column_stack([x, y])), lambda drawn: kendall_tau_b(drawn[..., 0], drawn[..., 1]),
                                   seed)  # a resample of one checkpoint has no tau: dropped, not NaN for all
            rows.append({"setting": column.removeprefix("setting."), "value_a": a, "value_b": b,
                         "tau": float(tau), "tau_low": low, "tau_high": high, "p": float(p), "n_checkpoints": len(common)})
    out = pd.DataFrame(rows, columns=["setting", "value_a", "value_b", "tau", "tau_low", "tau_high", "p", "n_checkpoints"])
    out["p_holm"] = out.groupby("setting")["p"].transform(holm) if len(out) else out["p"]
    return out


def kendall_tau_b(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b of paired samples along `axis` (vectorized, as scipy's for one pair; NaN where a
    sample is constant)."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    upper = np.triu_indices(x.shape[-1], k=1)
    dx = np.sign(x[..., :, None] - x[..., None, :])[..., upper[0], upper[1]]
    dy = np.sign(y[..., :, None] - y[..., None, :])[..., upper[0], upper[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (dx * dy).sum(axis=-1) / np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))


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
