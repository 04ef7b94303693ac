"""Statistics of a study: pure functions over the tidy results table (one row per run) → tables.

No I/O and no plotting. Runs that are not usable (status != 'done' or a NaN metric) are listed by
`split_missing` and excluded explicitly; every function below works on the usable rows only."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats as st

from crossling.errors import ConfigError, DataError

P_ADJUST_METHODS = ("holm", "bonferroni", "sidak", "holm-sidak", "simes-hochberg", "hommel",
                    "fdr_bh", "fdr_by", "none")
KEYS = ("checkpoint", "language", "seed")


@dataclass(frozen=True)
class TestResult:
    """One hypothesis test: statistic, p-value, an effect size (named) and the sample size."""

    test: str
    statistic: float
    p: float
    effect: float
    effect_name: str
    n: int


# --- usable runs -----------------------------------------------------------------------------------


def split_missing(table: pd.DataFrame, metric: str = "cer") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable runs, missing runs). A run is missing when its status is not 'done' or its metric is NaN;
    the missing frame keeps run_id/checkpoint/language/seed/status plus a `reason`."""
    _require(table, (*KEYS, metric))
    status = table["status"] if "status" in table else pd.Series("done", index=table.index)
    not_done = status.astype(str) != "done"
    no_metric = pd.to_numeric(table[metric], errors="coerce").isna()
    bad = not_done | no_metric
    missing = table.loc[bad, [c for c in ("run_id", *KEYS, "status") if c in table]].copy()
    missing["reason"] = np.where(not_done[bad], "status " + status[bad].astype(str), f"no {metric}")
    usable = table.loc[~bad].copy()
    usable[metric] = usable[metric].astype(float)
    return usable, missing.reset_index(drop=True)


def _require(table: pd.DataFrame, columns: Sequence[str]) -> None:
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise DataError(f"results table lacks column(s) {', '.join(absent)}; it has: {', '.join(table.columns)}")


def _usable(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return split_missing(table, metric)[0]


def primary_slice(table: pd.DataFrame) -> pd.DataFrame:
    """Rows at each swept `setting.*` column's most frequent value (smallest value on ties), so that
    seeds — not settings — are the replicates of the main analyses. Unswept tables pass unchanged."""
    keep = pd.Series(True, index=table.index)
    for column in swept_settings(table):
        counts = table[column].astype(str).value_counts()
        top = sorted(counts[counts == counts.max()].index)[0]
        keep &= table[column].astype(str) == top
    return table.loc[keep]


def swept_settings(table: pd.DataFrame) -> list[str]:
    """The `setting.*` columns that take more than one value."""
    return [c for c in sorted(table.columns) if c.startswith("setting.") and table[c].astype(str).nunique() > 1]


# --- descriptive -----------------------------------------------------------------------------------


def cell_summary(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """Per checkpoint × language: mean, sd (ddof=1; NaN with one seed), n seeds, min, max."""
    usable = _usable(table, metric)
    grouped = usable.groupby(["checkpoint", "language"])[metric]
    out = grouped.agg(mean="mean", sd="std", n="count", min="min", max="max").reset_index()
    return out.sort_values(["language", "mean", "checkpoint"]).reset_index(drop=True)


def cell_means(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """Language × checkpoint matrix of seed-mean metric (NaN where a cell has no usable run)."""
    usable = _usable(table, metric)
    return usable.pivot_table(index="language", columns="checkpoint", values=metric, aggfunc="mean")


# --- per language ----------------------------------------------------------------------------------


def epsilon_squared(h: float, n: int) -> float:
    """Kruskal-Wallis effect size ε² = H / ((n² − 1) / (n + 1)) = H / (n − 1) (Tomczak & Tomczak 2014)."""
    return h / (n - 1) if n > 1 else math.nan


def kruskal(values: pd.Series, groups: pd.Series) -> TestResult:
    """Kruskal-Wallis H across `groups` (tie-corrected, as scipy) with ε²."""
    samples = [v.to_numpy() for _, v in values.groupby(groups.to_numpy())]
    n = int(sum(len(s) for s in samples))
    if len(samples) < 2:
        return TestResult("kruskal", math.nan, math.nan, math.nan, "epsilon2", n)
    if np.ptp(np.concatenate(samples)) == 0:  # scipy refuses all-equal data: no evidence of a difference
        return TestResult("kruskal", 0.0, 1.0, 0.0, "epsilon2", n)
    h, p = st.kruskal(*samples)
    return TestResult("kruskal", float(h), float(p), epsilon_squared(float(h), n), "epsilon2", n)


def kruskal_by_language(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """Per language: Kruskal-Wallis across checkpoints with seeds as samples, ε², n runs, k checkpoints."""
    rows = []
    for language, part in _usable(table, metric).groupby("language"):
        result = kruskal(part[metric], part["checkpoint"])
        rows.append({"language": language, "H": result.statistic, "p": result.p,
                     "epsilon2": result.effect, "n": result.n, "k": part["checkpoint"].nunique()})
    return pd.DataFrame(rows, columns=["language", "H", "p", "epsilon2", "n", "k"])


def _check_p_adjust(p_adjust: str) -> str | None:
    if p_adjust not in P_ADJUST_METHODS:
        raise ConfigError(f"unknown p-value correction {p_adjust!r}; choose one of {', '.join(P_ADJUST_METHODS)}")
    return None if p_adjust == "none" else p_adjust


def conover(part: pd.DataFrame, metric: str = "cer", p_adjust: str = "holm") -> pd.DataFrame:
    """Conover-Iman post-hoc p-values (checkpoint × checkpoint) for one language's runs, corrected by
    `p_adjust` (scikit-posthocs corrects nothing unless told, so the method is always passed).
    NaN (untestable) when every checkpoint has a single run."""
    method = _check_p_adjust(p_adjust)
    names = sorted(part["checkpoint"].astype(str).unique())
    if len(names) < 2 or np.ptp(part[metric].to_numpy()) == 0:
        return pd.DataFrame(1.0, index=names, columns=names)
    if len(part) <= len(names):  # one run per checkpoint: no within-group variance, the test is undefined
        return pd.DataFrame(np.where(np.eye(len(names), dtype=bool), 1.0, np.nan), index=names, columns=names)
    frame = pd.DataFrame({"value": part[metric].to_numpy(), "group": part["checkpoint"].astype(str).to_numpy()})
    return sp.posthoc_conover(frame, val_col="value", group_col="group", p_adjust=method)


def mean_ranks(part: pd.DataFrame, metric: str = "cer") -> pd.Series:
    """Mean rank (1 = lowest metric; ties averaged) of each checkpoint over one language's runs."""
    ranks = part[metric].rank(method="average")
    return ranks.groupby(part["checkpoint"]).mean().sort_values()


def compact_letters(order: Sequence[str], pvalues: pd.DataFrame, alpha: float = 0.05) -> dict[str, str]:
    """Compact letter display: checkpoints sharing a letter are not significantly different.

    Insert-and-absorb (Piepho 2004): start with one group of everyone; each significant pair splits
    every group containing both; groups contained in another are absorbed. Letters follow `order`
    (best first), so 'a' marks the group of the best checkpoint."""
    groups: list[set[str]] = [set(order)]
    for i, j in combinations(order, 2):
        if not pvalues.loc[i, j] < alpha:  # NaN (untestable) is no evidence of a difference
            continue
        split = []
        for group in groups:
            split.extend([group - {j}, group - {i}] if i in group and j in group else [group])
        groups = [g for g in split if not any(g < other for other in split)]
        groups = [g for k, g in enumerate(groups) if g not in groups[:k]]
    position = {name: k for k, name in enumerate(order)}
    groups.sort(key=lambda g: sorted(position[x] for x in g))
    letters = {name: "" for name in order}
    for k, group in enumerate(groups):
        for name in group:
            letters[name] += _letter(k)
    return letters


def _letter(k: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[k] if k < 26 else f"{_letter(k // 26 - 1)}{_letter(k % 26)}"


def conover_by_language(table: pd.DataFrame, metric: str = "cer", p_adjust: str = "holm") -> dict[str, pd.DataFrame]:
    """language → its Conover-Iman p-value matrix (see `conover`)."""
    return {language: conover(part, metric, p_adjust) for language, part in _usable(table, metric).groupby("language")}


def posthoc_long(pvalues: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The per-language p-value matrices as one tidy frame: language, checkpoint_a, checkpoint_b, p (a < b)."""
    rows = [{"language": language, "checkpoint_a": a, "checkpoint_b": b, "p": float(matrix.loc[a, b])}
            for language, matrix in pvalues.items() for a, b in combinations(sorted(matrix.index), 2)]
    return pd.DataFrame(rows, columns=["language", "checkpoint_a", "checkpoint_b", "p"])


def language_groups(table: pd.DataFrame, metric: str = "cer", alpha: float = 0.05, p_adjust: str = "holm",
                    posthoc: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per language × checkpoint: mean, mean rank, significance letters and whether it is (tied) best.

    Best = lowest mean; tied best = not significantly different from it by Conover-Iman (`posthoc`:
    precomputed `conover_by_language` matrices). When the Kruskal-Wallis test is not significant no
    pair is declared different (all share one letter)."""
    usable = _usable(table, metric)
    omnibus = kruskal_by_language(usable, metric).set_index("language")
    rows = []
    for language, part in usable.groupby("language"):
        means = part.groupby("checkpoint")[metric].mean().sort_values(kind="stable")
        order = list(means.index)
        pvalues = posthoc[language] if posthoc is not None else conover(part, metric, p_adjust)
        if not omnibus.loc[language, "p"] < alpha:
            pvalues = pd.DataFrame(1.0, index=order, columns=order)
        letters = compact_letters(order, pvalues, alpha)
        ranks = mean_ranks(part, metric)
        for name in order:
            tied = name == order[0] or not pvalues.loc[order[0], name] < alpha
            rows.append({"language": language, "checkpoint": name, "mean": means[name],
                         "mean_rank": ranks[name], "letters": letters[name], "best": bool(tied),
                         "p_vs_best": 1.0 if name == order[0] else float(pvalues.loc[order[0], name])})
    return pd.DataFrame(rows)


def wins(groups: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: languages where it is (tied) best, where it is the sole best, out of how many."""
    total = groups["language"].nunique()
    best = groups[groups["best"]]
    sole = best.groupby("language").filter(lambda g: len(g) == 1)
    out = pd.DataFrame({"wins": best.groupby("checkpoint").size(), "sole_wins": sole.groupby("checkpoint").size()})
    out = out.reindex(sorted(groups["checkpoint"].unique())).fillna(0).astype(int)
    out["languages"] = total
    best_languages = best.groupby("checkpoint")["language"].apply(lambda s: " ".join(sorted(s)))
    out["best_on"] = best_languages.reindex(out.index).fillna("")
    return out.sort_values(["wins", "sole_wins"], ascending=False, kind="stable").rename_axis("checkpoint").reset_index()


# --- across languages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Friedman:
    """Friedman test over languages (blocks) × checkpoints (treatments) on seed-mean cells.

    `matrix` holds the complete blocks used; `dropped_languages` had a missing cell; `average_ranks`
    are the mean within-language ranks (1 = best); `cd` the Nemenyi critical difference at `alpha`."""

    result: TestResult
    kendall_w: float
    matrix: pd.DataFrame
    average_ranks: pd.Series
    nemenyi: pd.DataFrame
    conover: pd.DataFrame
    cd: float
    alpha: float
    dropped_languages: tuple[str, ...]


def friedman(table: pd.DataFrame, metric: str = "cer", alpha: float = 0.05, p_adjust: str = "holm") -> Friedman:
    """Friedman test with languages as blocks (Kruskal-Wallis would ignore that every checkpoint meets
    every language), Kendall's W, average ranks, Nemenyi and Conover post-hocs, and the Nemenyi CD."""
    method = _check_p_adjust(p_adjust)
    matrix = cell_means(table, metric)
    complete = matrix.dropna(axis=0, how="any")
    dropped = tuple(sorted(set(matrix.index) - set(complete.index)))
    n, k = complete.shape
    if n < 2 or k < 3:
        raise DataError(f"Friedman test needs >= 2 languages with every checkpoint measured and >= 3 "
                        f"checkpoints; have {n} complete languages × {k} checkpoints")
    chi2, p = st.friedmanchisquare(*(complete[c].to_numpy() for c in complete.columns))
    ranks = complete.rank(axis=1, method="average").mean(axis=0).sort_values(kind="stable")
    w = float(chi2) / (n * (k - 1))
    nemenyi = sp.posthoc_nemenyi_friedman(complete.to_numpy())
    conover_p = sp.posthoc_conover_friedman(complete.to_numpy(), p_adjust=method)
    for frame in (nemenyi, conover_p):
        frame.index = frame.columns = complete.columns
    return Friedman(TestResult("friedman", float(chi2), float(p), w, "kendall_w", n), w, complete,
                    ranks, nemenyi, conover_p, critical_difference(k, n, alpha), alpha, dropped)


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks (Demšar 2006): q_α √(k(k+1) / 6N), where q_α is
    the studentized range quantile for k groups and infinite df divided by √2."""
    q = st.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


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
    usable = _usable(table, "cer")
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
    usable = _usable(table, metric)
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
    usable = _usable(table, metric)
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
