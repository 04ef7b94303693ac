"""Statistics of a study: which checkpoints differ, per language (Kruskal-Wallis, Conover-Iman, compact
letter groups) and across languages (Friedman, critical differences). Pure functions over the tidy results
table (one row per run) → tables; `crossling.factors` asks what explains the differences.

No I/O and no plotting. Runs that are not usable (status != 'done' or a NaN metric) are listed by
`split_missing` and excluded explicitly; every function below works on the usable rows only."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
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


@dataclass(frozen=True, kw_only=True)
class TestResult:
    """One hypothesis test: statistic, p-value, an effect size (named) and the sample size; NaN statistic,
    p and effect when the test cannot be run."""

    test: str
    effect_name: str
    n: int
    statistic: float = math.nan
    p: float = math.nan
    effect: float = math.nan


# --- usable runs -----------------------------------------------------------------------------------


def split_missing(table: pd.DataFrame, metric: str = "cer") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(usable runs, missing runs). A run is missing when its status is not 'done' or its metric is NaN
    or infinite (an infinite CER averaged in would make every mean infinite); the missing frame keeps
    run_id/checkpoint/language/seed/status plus a `reason`."""
    _require(table, (*KEYS, metric))
    status = table["status"] if "status" in table else pd.Series("done", index=table.index)
    not_done = status.astype(str) != "done"
    values = pd.to_numeric(table[metric], errors="coerce")
    no_metric = values.isna()
    infinite = np.isinf(values.fillna(0.0))
    bad = not_done | no_metric | infinite
    missing = table.loc[bad, [c for c in ("run_id", *KEYS, "status") if c in table]].copy()
    missing["reason"] = np.select([not_done[bad], infinite[bad]],
                                  ["status " + status[bad].astype(str), f"{metric} is infinite"], f"no {metric}")
    usable = table.loc[~bad].copy()
    usable[metric] = usable[metric].astype(float)
    return usable, missing.reset_index(drop=True)


def _require(table: pd.DataFrame, columns: Sequence[str]) -> None:
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise DataError(f"results table lacks column(s) {', '.join(absent)}; it has: {', '.join(table.columns)}")


def usable_runs(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """The usable runs only (see `split_missing`)."""
    return split_missing(table, metric)[0]


def primary_slice(table: pd.DataFrame) -> pd.DataFrame:
    """Rows at each swept `setting.*` column's most frequent value (smallest value on ties: numbers
    compared as numbers, so 6e-5 < 1e-4 and 500 < 1000), so that seeds — not settings — are the
    replicates of the main analyses. Unswept tables pass unchanged."""
    keep = pd.Series(True, index=table.index)
    for column in swept_settings(table):
        labels = table[column].astype(str)
        counts = labels.value_counts()
        top = min(counts[counts == counts.max()].index, key=_setting_order)
        keep &= labels == top
    return table.loc[keep]


def _setting_order(label: str) -> tuple[int, float, str]:
    """Sort key of a setting value written as text: numbers first, by value; then other text."""
    try:
        return 0, float(label), label
    except ValueError:
        return 1, 0.0, label


def swept_settings(table: pd.DataFrame) -> list[str]:
    """The `setting.*` columns that take more than one value."""
    return [c for c in sorted(table.columns) if c.startswith("setting.") and table[c].astype(str).nunique() > 1]


# --- descriptive -----------------------------------------------------------------------------------


def cell_summary(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """Per checkpoint × language: mean, sd (ddof=1; NaN with one seed), n seeds, min, max."""
    usable = usable_runs(table, metric)
    grouped = usable.groupby(["checkpoint", "language"])[metric]
    out = grouped.agg(mean="mean", sd="std", n="count", min="min", max="max").reset_index()
    return out.sort_values(["language", "mean", "checkpoint"]).reset_index(drop=True)


def cell_means(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """Language × checkpoint matrix of seed-mean metric (NaN where a cell has no usable run)."""
    usable = usable_runs(table, metric)
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
        return TestResult(test="kruskal", effect_name="epsilon2", n=n)
    if np.ptp(np.concatenate(samples)) == 0:  # scipy refuses all-equal data: no evidence of a difference
        return TestResult(test="kruskal", effect_name="epsilon2", n=n, statistic=0.0, p=1.0, effect=0.0)
    h, p = st.kruskal(*samples)
    return TestResult(test="kruskal", effect_name="epsilon2", n=n, statistic=float(h), p=float(p),
                      effect=epsilon_squared(float(h), n))


def kruskal_by_language(table: pd.DataFrame, metric: str = "cer") -> pd.DataFrame:
    """Per language: Kruskal-Wallis across checkpoints with seeds as samples, ε², n runs, k checkpoints."""
    rows = []
    for language, part in usable_runs(table, metric).groupby("language"):
        result = kruskal(part[metric], part["checkpoint"])
        rows.append({"language": language, "H": result.statistic, "p": result.p,
                     "epsilon2": result.effect, "n": result.n, "k": part["checkpoint"].nunique()})
    return pd.DataFrame(rows, columns=["language", "H", "p", "epsilon2", "n", "k"])


def _check_p_adjust(p_adjust: str) -> str | None:
    if p_adjust not in P_ADJUST_METHODS:
        raise ConfigError(f"unknown p-value correction {p_adjust!r}; choose one of {', '.join(P_ADJUST_METHODS)}")
    return None if p_adjust == "none" else p_adjust


@contextmanager
def existing_objects_skipped_by_gc() -> Iterator[None]:
    """statsmodels' Holm correction (which scikit-posthocs calls) runs a full garbage collection on every
    call: with a report's figures alive that scans them all, 2.8 s of a 864-run report. Objects that
    exist before the block are frozen for it (`gc.freeze`), so a collection only scans the block's own."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def conover(part: pd.DataFrame, metric: str = "cer", p_adjust: str = "holm") -> pd.DataFrame:
    """Conover-Iman post-hoc p-values (checkpoint × checkpoint) for one language's runs, corrected by
    `p_adjust` (scikit-posthocs corrects nothing unless told, so the method is always passed).
    1 everywhere when every run has the same value; NaN (untestable) off the diagonal when
    `conover_untestable` gives a reason."""
    method = _check_p_adjust(p_adjust)
    names = sorted(part["checkpoint"].astype(str).unique())
    if len(names) < 2 or np.ptp(part[metric].to_numpy()) == 0:
        return pd.DataFrame(1.0, index=names, columns=names)
    if conover_untestable(part, metric):
        return pd.DataFrame(np.where(np.eye(len(names), dtype=bool), 1.0, np.nan), index=names, columns=names)
    frame = pd.DataFrame({"value": part[metric].to_numpy(), "group": part["checkpoint"].astype(str).to_numpy()})
    with existing_objects_skipped_by_gc():
        return sp.posthoc_conover(frame, val_col="value", group_col="group", p_adjust=method)


def conover_untestable(part: pd.DataFrame, metric: str = "cer") -> str:
    """Why Conover-Iman cannot compare one language's checkpoints ('' when it can).

    Its t statistic divides by the rank variance left within checkpoints: with one run per checkpoint
    there is none, and when every checkpoint is constant over its seeds it is 0 up to a rounding error
    whose sign would decide between p = 0 and NaN."""
    sizes = part.groupby("checkpoint")[metric].size()
    if (sizes <= 1).all():
        return "one run per checkpoint: no variation within checkpoints to test against"
    ranks = part[metric].rank(method="average")
    within = float(((ranks - ranks.groupby(part["checkpoint"]).transform("mean")) ** 2).sum())
    if within <= 1e-9 * len(part) ** 3 and np.ptp(part[metric].to_numpy()) > 0:
        return "every checkpoint has the same value on each of its seeds: no variation within checkpoints"
    return ""


def mean_ranks(part: pd.DataFrame, metric: str = "cer") -> pd.Series:
    """Mean rank (1 = lowest metric; ties averaged) of each checkpoint over one language's runs."""
    ranks = part[metric].rank(method="average")
    return ranks.groupby(part["checkpoint"]).mean().sort_values()


def compact_letters(order: Sequence[str], pvalues: pd.DataFrame, alpha: float = 0.05) -> dict[str, str]:
    """Compact letter display: checkpoints sharing a letter are not significantly different, and no
    letter can be dropped from any checkpoint without breaking that (an irredundant display).

    Piepho (2004): insert-and-absorb (start with one group of everyone; each significant pair splits
    every group containing both; groups contained in another are absorbed), then sweep (drop a
    checkpoint from a group when every pair it forms there is also covered by another group).
    Letters follow `order` (best first), so 'a' marks the group of the best checkpoint."""
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
    groups = _sweep(groups, position)
    groups.sort(key=lambda g: sorted(position[x] for x in g))
    letters = {name: "" for name in order}
    for k, group in enumerate(groups):
        for name in sorted(group, key=position.get):
            letters[name] += _letter(k)
    return letters


def _sweep(groups: list[set[str]], position: Mapping[str, int]) -> list[set[str]]:
    """Piepho's sweep: remove each member whose pairs within its group are all covered elsewhere
    (and that keeps another letter), until nothing changes; empty groups go."""
    groups = [set(g) for g in sorted(groups, key=lambda g: sorted(position[x] for x in g))]
    changed = True
    while changed:
        changed = False
        for k, group in enumerate(groups):
            others = [g for m, g in enumerate(groups) if m != k]
            for name in sorted(group, key=position.get):
                elsewhere = [g for g in others if name in g]
                if elsewhere and all(any(j in g for g in elsewhere) for j in group - {name}):
                    group.discard(name)
                    changed = True
        groups = [g for g in groups if g]
    return groups


def _letter(k: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[k] if k < 26 else f"{_letter(k // 26 - 1)}{_letter(k % 26)}"


def conover_by_language(table: pd.DataFrame, metric: str = "cer", p_adjust: str = "holm") -> dict[str, pd.DataFrame]:
    """language → its Conover-Iman p-value matrix (see `conover`)."""
    return {language: conover(part, metric, p_adjust) for language, part in usable_runs(table, metric).groupby("language")}


def posthoc_long(pvalues: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The per-language p-value matrices as one tidy frame: language, checkpoint_a, checkpoint_b, p (a < b)."""
    rows = [{"language": language, "checkpoint_a": a, "checkpoint_b": b, "p": float(matrix.loc[a, b])}
            for language, matrix in pvalues.items() for a, b in combinations(sorted(matrix.index), 2)]
    return pd.DataFrame(rows, columns=["language", "checkpoint_a", "checkpoint_b", "p"])


def language_groups(table: pd.DataFrame, metric: str = "cer", alpha: float = 0.05, p_adjust: str = "holm",
                    posthoc: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Per language × checkpoint: mean, mean rank, significance letters and whether it is (tied) best.

    Best = lowest mean (every checkpoint with exactly that mean); tied best = not significantly above them
    by Conover-Iman (`posthoc`: precomputed `conover_by_language` matrices): above means significantly
    different from each and with a higher mean rank (what the test compares) than each;
    `best_reference` names the lowest-mean checkpoint `p_vs_best` is against. When the Kruskal-Wallis test is not significant no
    pair is declared different (all share one letter). When it is significant but Conover-Iman cannot
    compare the checkpoints (`untestable` says why) no letters are given and none is called best."""
    usable = usable_runs(table, metric)
    omnibus = kruskal_by_language(usable, metric).set_index("language")
    rows = []
    for language, part in usable.groupby("language"):
        means = part.groupby("checkpoint")[metric].mean().sort_values(kind="stable")
        order = list(means.index)
        pvalues = posthoc[language] if posthoc is not None else conover(part, metric, p_adjust)
        significant = omnibus.loc[language, "p"] < alpha
        untestable = conover_untestable(part, metric) if significant else ""
        if not significant:
            pvalues = pd.DataFrame(1.0, index=order, columns=order)
        letters = {name: "" for name in order} if untestable else compact_letters(order, pvalues, alpha)
        ranks = mean_ranks(part, metric)
        lowest = [name for name in order if means[name] == means.iloc[0]]
        for name in order:
            reference, p_vs_best = _versus_lowest(pvalues, lowest, name)
            above = p_vs_best < alpha and all(ranks[name] > ranks[other] for other in lowest)  # the test's direction
            rows.append({"language": language, "checkpoint": name, "mean": means[name],
                         "mean_rank": ranks[name], "letters": letters[name],
                         "best": not untestable and not above, "p_vs_best": p_vs_best,
                         "best_reference": reference, "untestable": untestable})
    return pd.DataFrame(rows)


def _versus_lowest(pvalues: pd.DataFrame, lowest: Sequence[str], name: str) -> tuple[str, float]:
    """(the lowest-mean checkpoint `name` is least significantly different from, that p): with several
    exactly equal lowest means each is a reference — never the alphabetically first alone — so a checkpoint
    is above the lowest mean only when it differs significantly from every one of them."""
    if name in lowest:
        return name, 1.0
    against = pvalues.loc[list(lowest), name].astype(float)
    return (str(against.idxmax()), float(against.max())) if against.notna().any() else (lowest[0], math.nan)


def wins(groups: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: languages where it is (tied) best, where it is the sole best, out of how many,
    and its `rank` by wins then sole wins — equal counts share a rank (no tie is broken by name)."""
    total = groups.loc[groups["untestable"].eq("") if "untestable" in groups else groups.index, "language"].nunique()
    best = groups[groups["best"]]
    sole = best.groupby("language").filter(lambda g: len(g) == 1)
    out = pd.DataFrame({"wins": best.groupby("checkpoint").size(), "sole_wins": sole.groupby("checkpoint").size()})
    out = out.reindex(sorted(groups["checkpoint"].unique())).fillna(0).astype(int)
    out["languages"] = total
    best_languages = best.groupby("checkpoint")["language"].apply(lambda s: " ".join(sorted(s)))
    out["best_on"] = best_languages.reindex(out.index).fillna("")
    key = out["wins"] * (total + 1) + out["sole_wins"]
    out.insert(0, "rank", key.rank(method="min", ascending=False).astype(int))
    return out.sort_values("rank", kind="stable").rename_axis("checkpoint").reset_index()


# --- across languages ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
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
    if (complete.nunique(axis=1) == 1).all():  # scipy divides 0 by 0: every block ties every checkpoint
        chi2, p = 0.0, 1.0
    else:
        chi2, p = st.friedmanchisquare(*(complete[c].to_numpy() for c in complete.columns))
    ranks = complete.rank(axis=1, method="average").mean(axis=0).sort_values(kind="stable")
    w = float(chi2) / (n * (k - 1))
    nemenyi = sp.posthoc_nemenyi_friedman(complete.to_numpy())
    conover_p = sp.posthoc_conover_friedman(complete.to_numpy(), p_adjust=method)
    for frame in (nemenyi, conover_p):
        frame.index = frame.columns = complete.columns
    result = TestResult(test="friedman", effect_name="kendall_w", n=n, statistic=float(chi2), p=float(p), effect=w)
    return Friedman(result=result, kendall_w=w, matrix=complete, average_ranks=ranks, nemenyi=nemenyi,
                    conover=conover_p, cd=critical_difference(k, n, alpha), alpha=alpha, dropped_languages=dropped)


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks (Demšar 2006): q_α √(k(k+1) / 6N), where q_α is
    the studentized range quantile for k groups and infinite df divided by √2."""
    q = st.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))
