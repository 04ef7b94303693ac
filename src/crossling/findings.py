"""Findings: each question a study asks, answered by one test at its unit of analysis, as a typed `Finding`
(statistic, p, adjusted p, effect size with a 95 % bootstrap CI over that unit, n, verdict) — and the
sentences, rendered from verdicts alone. Inputs: the tables of `crossling.stats` and `crossling.factors`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from crossling import design, factors, stats
from crossling.markup import fmt_p

SUPPORTED, NOT_SUPPORTED, UNTESTABLE = "supported", "not supported", "cannot be tested here"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, UNTESTABLE)
RESAMPLES = 1999
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Effect:
    """An effect size and its 95 % bootstrap CI (NaN bounds when there is none: see `with_ci`)."""

    name: str
    value: float
    low: float = math.nan
    high: float = math.nan

    @classmethod
    def with_ci(cls, name: str, value: float, interval: tuple[float, float]) -> Effect:
        """The effect with its interval, unless the interval excludes the estimate: resampling a few runs
        with replacement adds ties that shift rank statistics, and such an interval describes the
        resampling, not the data — it is left out rather than printed."""
        low, high = interval
        if not (math.isfinite(low) and math.isfinite(high) and low - 1e-12 <= value <= high + 1e-12):
            return cls(name, float(value))
        return cls(name, float(value), low, high)

    def text(self) -> str:
        ci = f" [95 % CI {self.low:.2f}, {self.high:.2f}]" if math.isfinite(self.low) else ""
        return f"{self.name} {self.value:.2f}{ci}"


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One answered question. `question` is neutral ("A and B differ in CER on pt"); `claim` says which
    way, and only a supported finding has one, so no sentence can state a direction its test rejects.
    `p_adjusted` is set when the test belongs to a family (`adjustment` names it); `reason` says why a
    question cannot be tested here, or adds context to a verdict. `subject` names what the question is
    about, e.g. (language,) or (language, checkpoint a, checkpoint b); `sign` the supported direction where
    one applies (−1: the first named has the lower value, +1 the higher; 0 otherwise)."""

    key: str
    question: str
    test: str
    unit: str
    n: int
    verdict: str
    alpha: float
    statistic_name: str = ""
    statistic: float = math.nan
    p: float = math.nan
    p_adjusted: float = math.nan
    adjustment: str = ""
    effect: Effect | None = None
    claim: str = ""
    reason: str = ""
    subject: tuple[str, ...] = ()
    sign: int = 0

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if self.sign and self.verdict != SUPPORTED:
            raise ValueError(f"{self.key}: only a supported finding has a direction")
        if bool(self.claim) != (self.verdict == SUPPORTED):
            raise ValueError(f"{self.key}: a claim belongs to supported findings only (verdict {self.verdict!r})")
        if self.verdict == UNTESTABLE and not self.reason:
            raise ValueError(f"{self.key}: an untestable finding must say why")

    def sentence(self) -> str:
        return render(self)

    def to_json(self) -> dict:
        """A JSON-ready dict (NaN as None) with the rendered sentence."""
        return {**_finite(asdict(self)), "sentence": self.sentence()}


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render(f: Finding) -> str:
    """The finding as one sentence: the claim when supported, "No evidence that …" when not (never a
    direction), "Cannot be tested here whether …: why" when the design cannot answer."""
    if f.verdict == UNTESTABLE:
        return f"Cannot be tested here whether {f.question}: {f.reason}."
    if f.verdict == SUPPORTED:
        return f"{f.claim[0].upper()}{f.claim[1:]} ({details(f)})."
    context = f"; {f.reason}" if f.reason else ""
    return f"No evidence that {f.question} ({details(f)}{context})."


def details(f: Finding) -> str:
    """Test, statistic, p (and adjusted p), effect with CI, n and unit, alpha."""
    parts = [f"{f.test}" + (f", {f.statistic_name} = {f.statistic:.3g}" if math.isfinite(f.statistic) else "")]
    if math.isfinite(f.p):
        parts.append(f"p = {fmt_p(f.p)}")
    if math.isfinite(f.p_adjusted):
        parts.append(f"{f.adjustment}: p = {fmt_p(f.p_adjusted)}")
    if f.effect is not None and math.isfinite(f.effect.value):
        parts.append(f.effect.text())
    parts.append(f"n = {f.n} {f.unit}")
    parts.append(f"alpha {f.alpha}")
    return "; ".join(parts)


def verdict(p: float, alpha: float) -> str:
    return SUPPORTED if p < alpha else NOT_SUPPORTED


def method_name(p_adjust: str) -> str:
    """How a correction is written in a sentence: 'holm' -> 'Holm'; 'fdr_bh' stays as scipy names it."""
    return p_adjust.capitalize() if p_adjust in ("holm", "bonferroni", "sidak", "hommel") else p_adjust


def names(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


# --- bootstrap CIs over the unit of analysis ---------------------------------------------------------


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable, seed: int, paired: bool = False
                 ) -> tuple[float, float]:
    """BCa CI (scipy) of a vectorized `statistic(*samples, axis=-1)`, resampling each sample independently
    (or rows together when `paired`); the percentile CI where BCa is undefined (every resample on one side
    of the estimate); NaN when a sample has fewer than 2 values."""
    samples = [np.asarray(s, float) for s in samples]
    if any(len(s) < 2 for s in samples):
        return math.nan, math.nan
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # degenerate resamples give NaN, handled below
            result = st.bootstrap(samples, statistic, n_resamples=RESAMPLES, paired=paired, vectorized=True,
                                  method=method, confidence_level=CONFIDENCE, rng=np.random.default_rng(seed))
        low, high = (float(v) for v in result.confidence_interval)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return math.nan, math.nan


def cluster_ci(blocks: Sequence[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray], seed: int
               ) -> tuple[float, float]:
    """Percentile CI resampling whole blocks (e.g. languages with all their cells) with replacement.
    `statistic` maps resampled blocks stacked as (resamples, blocks, …) to one value per resample; blocks
    of unequal shapes are resampled one draw at a time."""
    if len(blocks) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(blocks), (RESAMPLES, len(blocks)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if len({np.shape(b) for b in blocks}) == 1:
            values = np.asarray(statistic(np.stack(blocks)[draws]), float)
        else:
            values = np.array([statistic(np.concatenate([blocks[i] for i in row])[None, None])[0] for row in draws])
    values = values[np.isfinite(values)]
    if len(values) < RESAMPLES // 2:
        return math.nan, math.nan
    tail = 100 * (1 - CONFIDENCE) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _epsilon_squared(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    n = sum(s.shape[axis] for s in samples)
    return st.kruskal(*samples, axis=axis).statistic / (n - 1)


def _rank_biserial(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    u = st.mannwhitneyu(a, b, axis=axis).statistic
    return 2 * u / (a.shape[axis] * b.shape[axis]) - 1


# --- per language -------------------------------------------------------------------------------------

RUNS_UNIT = "runs (seeds) on the language's test set"


def kruskal_findings(runs: pd.DataFrame, alpha: float, seed: int = 0) -> list[Finding]:
    """Per language: do checkpoints differ? Kruskal-Wallis over runs, ε² with a CI resampling runs
    within each checkpoint; untestable when even non-overlapping groups could not reach alpha."""
    out = []
    for language, part in runs.groupby("language"):
        samples = [g["cer"].to_numpy() for _, g in part.groupby("checkpoint")]
        result = stats.kruskal(part["cer"], part["checkpoint"])
        key, question = f"kruskal/{language}", f"checkpoints differ in CER on {language}"
        common = dict(key=key, question=question, test="Kruskal-Wallis", unit=RUNS_UNIT, n=result.n, alpha=alpha,
                      subject=(str(language),))
        smallest = design.min_p_kruskal([len(s) for s in samples])
        if not smallest < alpha:
            shape = "x".join(str(len(s)) for s in samples)
            out.append(Finding(**common, verdict=UNTESTABLE, reason=f"{len(samples)} checkpoints with {shape} runs: "
                                                                     f"the smallest possible p is {fmt_p(smallest)}"))
            continue
        effect = Effect.with_ci("epsilon squared", result.effect, bootstrap_ci(samples, _epsilon_squared, seed))
        out.append(Finding(**common, verdict=verdict(result.p, alpha), statistic_name="H", statistic=result.statistic,
                           p=result.p, effect=effect, claim=f"checkpoints differ in CER on {language}"
                           if result.p < alpha else ""))
    return out


def pair_finding(part: pd.DataFrame, a: str, b: str, *, pvalue: float, omnibus_p: float, alpha: float,
                 p_adjust: str, seed: int = 0) -> Finding:
    """Do checkpoints a and b differ on one language? The Conover-Iman p of the report's letters (its
    correction over the language's pairs), gated like them by the language's Kruskal-Wallis test."""
    language = str(part["language"].iloc[0])
    common = dict(key=f"pair/{language}/{a}/{b}", question=f"{a} and {b} differ in CER on {language}",
                  test="Conover-Iman", unit=RUNS_UNIT, n=int(part["checkpoint"].isin([a, b]).sum()), alpha=alpha,
                  subject=(language, a, b))
    reason = stats.conover_untestable(part)
    if reason or not math.isfinite(pvalue):
        return Finding(**common, verdict=UNTESTABLE, reason=reason or "the post-hoc test is undefined here")
    effect = _mean_cer_difference(part, a, b, seed=seed)
    adjusted = dict(p_adjusted=pvalue, adjustment=_pairs_correction(p_adjust, part["checkpoint"].nunique())) \
        if p_adjust != "none" else {}
    gated = not omnibus_p < alpha
    decided = NOT_SUPPORTED if gated else verdict(pvalue, alpha)
    sign, why = _direction(part, a, b)
    claim = f"on {language}, {a} has a {'lower' if sign < 0 else 'higher'} CER than {b}" if sign else \
        f"on {language}, {a} and {b} differ in CER ({why})"  # a name is never capitalised
    supported = decided == SUPPORTED
    return Finding(**common, **adjusted, verdict=decided, claim=claim if supported else "", sign=sign if supported else 0,
                   p=pvalue if p_adjust == "none" else math.nan, effect=effect,
                   reason=f"Kruskal-Wallis on {language} not significant (p = {fmt_p(omnibus_p)}): no pair is "
                          f"declared different" if gated else "")


def _direction(part: pd.DataFrame, a: str, b: str) -> tuple[int, str]:
    """Which way a and b differ (−1: a lower), as far as both the test and the effect say it — Conover-Iman
    compares mean ranks, the effect is the mean CER difference — or (0, why not) when they disagree or tie."""
    ranks = part["cer"].rank().groupby(part["checkpoint"]).mean()
    means = part.groupby("checkpoint")["cer"].mean()
    by_rank, by_mean = np.sign(ranks[a] - ranks[b]), np.sign(means[a] - means[b])
    if by_rank == by_mean != 0:
        return int(by_mean), ""
    if not by_rank or not by_mean:
        return 0, f"equal mean {'ranks' if not by_rank else 'CERs'}: no direction"
    lower = a if by_rank < 0 else b
    return 0, f"the runs of {lower} rank lower, but its mean CER is higher: no direction"


def baseline_findings(runs: pd.DataFrame, posthoc: Mapping[str, pd.DataFrame], omnibus: pd.DataFrame,
                      *, baseline: str, alpha: float, p_adjust: str, seed: int = 0) -> list[Finding]:
    """Every pre-trained checkpoint against the random-init `baseline` on every language (pair findings),
    then the joint question: does every one beat it on every language?"""
    omnibus_p = omnibus.set_index("language")["p"]
    pairs = []
    for language, part in runs.groupby("language"):
        if baseline not in set(part["checkpoint"]):
            continue
        for name in sorted(set(part["checkpoint"]) - {baseline}):
            pairs.append(pair_finding(part, name, baseline, pvalue=float(posthoc[language].loc[name, baseline]),
                                      omnibus_p=float(omnibus_p[language]), alpha=alpha, p_adjust=p_adjust, seed=seed))
    return [*pairs, joint_baseline_finding(pairs, baseline, alpha)] if pairs else []


def joint_baseline_finding(pairs: Sequence[Finding], baseline: str, alpha: float) -> Finding:
    """Intersection-union: every pre-trained checkpoint beats the baseline on every language iff each pair
    is significant with a lower CER (no further correction: all must hold, none is picked); it cites the
    weakest pair's p (with that pair's correction and name) and effect."""
    beats = [f for f in pairs if f.sign < 0]
    untestable = [f for f in pairs if f.verdict == UNTESTABLE]
    weakest = max(pairs, key=lambda f: _decisive(f) if math.isfinite(_decisive(f)) else 2.0)
    question = f"every pre-trained checkpoint has a lower CER than {baseline} on every language"
    common = dict(key=f"baseline/{baseline}", question=question, test="intersection-union of per-language Conover-Iman tests",
                  unit="checkpoint pairs", n=len(pairs), alpha=alpha, p_adjusted=_decisive(weakest),
                  adjustment=f"{weakest.adjustment or 'uncorrected'}, weakest pair ({_pair_label(weakest)})",
                  effect=weakest.effect)
    if untestable:
        return Finding(**{**common, "p_adjusted": math.nan, "adjustment": ""}, verdict=UNTESTABLE,
                       reason=f"{len(untestable)} of {len(pairs)} pairs cannot be tested ({untestable[0].reason})")
    if len(beats) == len(pairs):
        return Finding(**common, verdict=SUPPORTED, claim=f"every pre-trained checkpoint has a lower CER than "
                                                          f"{baseline} on every language")
    return Finding(**common, verdict=NOT_SUPPORTED, reason=_shortfall(pairs, beats))


LISTED = 8  # pairs named in a sentence; the findings table has every one


def _decisive(f: Finding) -> float:
    return f.p_adjusted if math.isfinite(f.p_adjusted) else f.p


def _shortfall(pairs: Sequence[Finding], beats: Sequence[Finding]) -> str:
    """Which pairs fail the joint claim: no evidence of a difference, or a significant difference the
    other way."""
    missing = [f for f in pairs if f.verdict == NOT_SUPPORTED]
    reverse = [f for f in pairs if f.verdict == SUPPORTED and f not in beats]
    parts = [f"{len(beats)} of {len(pairs)} pairs significant"]
    if missing:
        listed = ", ".join(f"{_pair_label(f)} ({f.reason.split(':')[0] if f.reason else f'p = {fmt_p(_decisive(f))}'})"
                           for f in missing[:LISTED])
        more = f" and {len(missing) - LISTED} more pairs (findings.csv)" if len(missing) > LISTED else ""
        parts.append(f"no evidence of a difference for {listed}{more}")
    parts.extend(f.claim for f in reverse)
    return "; ".join(parts)


def _pair_label(f: Finding) -> str:
    language, a, b = f.subject
    return f"{a} vs {b} on {language}"


def best_findings(runs: pd.DataFrame, groups: pd.DataFrame, omnibus: pd.DataFrame, *, alpha: float, p_adjust: str,
                  seed: int = 0) -> list[Finding]:
    """Per language: which checkpoints have the lowest CER — the lowest mean and every checkpoint not
    significantly above it (tied, named together) — and which are significantly above it, citing the
    weakest of those separations (its corrected p and mean CER difference), or, when Kruskal-Wallis rejects
    but no such pair does, the pair closest to separation; n counts the language's runs."""
    omnibus_p = omnibus.set_index("language")["p"]
    out = []
    for language, part in groups.groupby("language"):
        lowest = part.loc[part["mean"] == part["mean"].min(), "checkpoint"].tolist()
        tied = [c for c in part.loc[part["best"], "checkpoint"] if c not in lowest]
        worse = part.loc[~part["best"]]
        on_language = runs[runs["language"] == language]
        common = dict(key=f"best/{language}", question=f"some checkpoints have a lower CER than others on {language}",
                      test="Kruskal-Wallis, then Conover-Iman", unit=RUNS_UNIT, n=len(on_language), alpha=alpha,
                      p=float(omnibus_p[language]), subject=(str(language),))
        untestable = str(part["untestable"].iloc[0])
        if untestable:
            out.append(Finding(**common, verdict=UNTESTABLE, reason=untestable))
        elif not worse.empty:
            ties = f"; not significantly above it: {names(tied)}" if tied else ""
            claim = f"on {language}, lowest mean CER: {names(lowest)}{ties}; significantly higher than it: " \
                    f"{names(worse['checkpoint'])}"
            weakest = worse.sort_values(["p_vs_best", "mean"], ascending=[False, True], kind="stable").iloc[0]
            out.append(Finding(**common, **_separation(on_language, part, weakest, "weakest separation",
                                                       p_adjust=p_adjust, seed=seed), verdict=SUPPORTED, claim=claim))
        elif not omnibus_p[language] < alpha or len(lowest) == len(part):
            out.append(Finding(**common, verdict=NOT_SUPPORTED))
        else:  # Kruskal-Wallis rejects, yet no pair with the lowest mean does: the closest pair decides
            closest = part[~part["checkpoint"].isin(lowest)].sort_values(["p_vs_best", "mean"], kind="stable").iloc[0]
            out.append(Finding(**common, **_separation(on_language, part, closest, "closest to separation",
                                                       p_adjust=p_adjust, seed=seed), verdict=NOT_SUPPORTED,
                               reason="Kruskal-Wallis is significant, but Conover-Iman separates no checkpoint "
                                      "from the lowest mean in the direction of their means"))
    return out


def _separation(runs: pd.DataFrame, groups: pd.DataFrame, row: pd.Series, which: str, *, p_adjust: str,
                seed: int) -> dict:
    """The corrected p and effect of one checkpoint (`row` of `groups`) against the lowest mean, as `Finding`
    fields; `which` says why this pair is cited (the weakest separation, or the closest to one)."""
    anchor, other = str(row["best_reference"]), str(row["checkpoint"])
    correction = _pairs_correction(p_adjust, groups.shape[0])
    return dict(p_adjusted=float(row["p_vs_best"]), adjustment=f"{correction}, {which} ({anchor} vs {other})",
                effect=_mean_cer_difference(runs, anchor, other, seed=seed))


def _mean_cer_difference(runs: pd.DataFrame, a: str, b: str, *, seed: int) -> Effect:
    """The mean CER of a's runs minus b's (one language), with its bootstrap CI resampling runs."""
    x = runs.loc[runs["checkpoint"] == a, "cer"].to_numpy()
    y = runs.loc[runs["checkpoint"] == b, "cer"].to_numpy()
    return Effect.with_ci(f"mean CER difference ({a} − {b})", float(x.mean() - y.mean()),
                          bootstrap_ci([x, y], _mean_difference, seed))


def _pairs_correction(p_adjust: str, checkpoints: int) -> str:
    """How a language's pairwise p-values are corrected, e.g. 'Holm over 3 pairs'."""
    if p_adjust == "none":
        return "uncorrected"
    return f"{method_name(p_adjust)} over {math.comb(checkpoints, 2)} pairs"


# --- across languages --------------------------------------------------------------------------------

LANGUAGE_UNIT = "languages (seed-mean CER per checkpoint)"


def friedman_finding(friedman: stats.Friedman | None, note: str, alpha: float, seed: int = 0) -> Finding:
    """Do checkpoints differ across languages? Friedman with languages as blocks; Kendall's W with a CI
    resampling languages."""
    common = dict(key="friedman", question="checkpoints differ in CER across languages",
                  test="Friedman (languages as blocks)", unit=LANGUAGE_UNIT, alpha=alpha)
    if friedman is None:
        return Finding(**common, n=0, verdict=UNTESTABLE, reason=note)
    n, k = friedman.matrix.shape
    smallest = design.min_p_friedman(n, k)
    if not smallest < alpha:
        return Finding(**common, n=n, verdict=UNTESTABLE,
                       reason=f"{n} languages x {k} checkpoints: the smallest possible p is {fmt_p(smallest)}")
    ranks = friedman.matrix.rank(axis=1).to_numpy()
    effect = Effect.with_ci("Kendall's W", friedman.kendall_w, cluster_ci(list(ranks), kendall_w, seed))
    tied = (friedman.matrix.nunique(axis=1) == 1).all()
    return Finding(**common, n=n, verdict=verdict(friedman.result.p, alpha), statistic_name="chi2",
                   statistic=friedman.result.statistic, p=friedman.result.p, effect=effect,
                   claim="checkpoints differ in CER across languages" if friedman.result.p < alpha else "",
                   reason="every checkpoint has the same CER on every language" if tied else "")


def kendall_w(ranks: np.ndarray) -> np.ndarray:
    """Kendall's W of within-block rank rows stacked as (…, blocks, treatments): Friedman's tie-corrected
    chi2 / (n (k − 1)), as scipy computes chi2; NaN where every block ties every treatment."""
    n, k = ranks.shape[-2:]
    sums = ranks.sum(axis=-2)
    chi2 = 12 / (n * k * (k + 1)) * (sums**2).sum(axis=-1) - 3 * n * (k + 1)
    ties = np.zeros(ranks.shape[:-1])
    for value in np.unique(ranks):
        counts = (ranks == value).sum(axis=-1)
        ties += np.where(counts > 1, counts**3 - counts, 0)
    correction = 1 - ties.sum(axis=-1) / (n * (k**3 - k))
    with np.errstate(all="ignore"):
        return np.where(correction > 0, chi2 / correction, np.nan) / (n * (k - 1))


def ranking_finding(friedman: stats.Friedman | None, alpha: float, seed: int = 0) -> Finding | None:
    """Which checkpoints rank apart from the best across languages (Nemenyi, as the critical-difference
    diagram draws it)? Ties at the best average rank are named together; when the Nemenyi test separates
    nobody, the reason says how far apart ranks would have to be with this many languages. A supported
    claim cites its weakest separation (see `_weakest_rank_separation`); otherwise p is the smallest."""
    if friedman is None:
        return None
    ranks = friedman.average_ranks
    n, k = friedman.matrix.shape
    top = sorted(ranks.index[np.isclose(ranks, ranks.min())])
    separated = [c for c in ranks.index if c not in top and all(friedman.nemenyi.loc[t, c] < alpha for t in top)]
    power = cd_note(friedman.cd, n, k)
    best_p = min((float(friedman.nemenyi.loc[t, c]) for t in top for c in ranks.index if c not in top), default=math.nan)
    common = dict(key="ranking", question="any checkpoint ranks apart from the best-ranked ones across languages",
                  test="Nemenyi (critical difference)", unit=LANGUAGE_UNIT, n=n, alpha=alpha,
                  statistic_name="CD", statistic=friedman.cd, p=best_p)
    if not friedman.result.p < alpha:
        return Finding(**common, verdict=NOT_SUPPORTED,
                       reason=f"Friedman not significant (p = {fmt_p(friedman.result.p)}); {power}")
    if not separated:
        return Finding(**common, verdict=NOT_SUPPORTED, reason=power)
    verb = "ranks" if len(top) == 1 else "rank"
    return Finding(**{**common, "p": math.nan}, **_weakest_rank_separation(friedman, top, separated, seed=seed),
                   verdict=SUPPORTED, claim=f"across languages {names(top)} (average rank {ranks.min():.2f}) "
                                            f"{verb} above {names(separated)}")


def _weakest_rank_separation(friedman: stats.Friedman, top: Sequence[str], separated: Sequence[str], *,
                             seed: int) -> dict:
    """The Nemenyi p that decides a ranking claim — the largest over (best-ranked, separated) pairs, since
    every one must hold — and that pair's average rank difference with a CI resampling languages."""
    best, other = max(((t, c) for t in top for c in separated), key=lambda pair: float(friedman.nemenyi.loc[pair]))
    columns = list(friedman.matrix.columns)
    i, j = columns.index(other), columns.index(best)
    ranks = friedman.matrix.rank(axis=1).to_numpy()
    difference = float(ranks[:, i].mean() - ranks[:, j].mean())
    interval = cluster_ci(list(ranks), lambda drawn: drawn[..., i].mean(axis=1) - drawn[..., j].mean(axis=1), seed)
    pairs = math.comb(len(columns), 2)
    return dict(p_adjusted=float(friedman.nemenyi.loc[best, other]),
                adjustment=f"Nemenyi over {pairs} pairs, weakest separation ({best} vs {other})",
                effect=Effect.with_ci(f"average rank difference ({other} − {best})", difference, interval))


def cd_note(cd: float, languages: int, checkpoints: int) -> str:
    """Why the Nemenyi test over few languages separates little: the critical difference against the
    largest rank difference any pair can have (CD shrinks as 1 / sqrt(languages))."""
    largest = checkpoints - 1
    text = (f"with {languages} languages two checkpoints must differ by CD = {cd:.2f} in average rank to be "
            f"separated (the largest possible difference is {largest})")
    if cd >= 1:
        text += f"; separating checkpoints one rank apart needs more than {math.floor(cd**2 * languages)} languages"
    return text


def kruskal_sentence(findings: Sequence[Finding]) -> str:
    """How many languages' Kruskal-Wallis tests find a difference, naming the languages of each verdict."""
    tests = [f for f in findings if f.key.startswith("kruskal/")]
    if not tests:
        return ""
    by = {v: [f.subject[0] for f in tests if f.verdict == v] for v in VERDICTS}
    sizes = sorted({f.n for f in tests})
    n = f"n = {sizes[0]} runs each" if len(sizes) == 1 else f"n = {sizes[0]} to {sizes[-1]} runs per language"
    parts = [f"Checkpoints differ in CER on {len(by[SUPPORTED])} of {len(tests)} languages "
             f"(Kruskal-Wallis per language over runs, {n}, alpha {tests[0].alpha})"]
    if by[SUPPORTED]:
        parts.append(f"on {' '.join(by[SUPPORTED])} ({_range(tests, SUPPORTED)})")
    if by[NOT_SUPPORTED]:
        parts.append(f"no evidence of a difference on {' '.join(by[NOT_SUPPORTED])} ({_range(tests, NOT_SUPPORTED)})")
    if by[UNTESTABLE]:
        parts.append(f"cannot be tested on {' '.join(by[UNTESTABLE])} ({tests[[f.verdict for f in tests].index(UNTESTABLE)].reason})")
    return "; ".join(parts) + "."


def _range(tests: Sequence[Finding], decided: str) -> str:
    """The p-values and effect sizes of the languages with one verdict: 'p = 0.003; epsilon squared = 0.71'
    or 'p from 0.001 to 0.004; epsilon squared from 0.55 to 0.80'."""
    chosen = [f for f in tests if f.verdict == decided]
    p = sorted(f.p for f in chosen)
    effects = sorted(f.effect.value for f in chosen if f.effect is not None)
    return f"p{_span(p, fmt_p)}" + (f"; epsilon squared{_span(effects, lambda v: f'{v:.2f}')}" if effects else "")


def _span(values: Sequence[float], text: Callable[[float], str]) -> str:
    return f" = {text(values[0])}" if values[0] == values[-1] else f" from {text(values[0])} to {text(values[-1])}"


# --- families, transfer, typology, gender, settings --------------------------------------------------


def family_finding(families: pd.DataFrame, matrix: pd.DataFrame, alpha: float, seed: int = 0) -> Finding | None:
    """Indo-European vs other targets over languages (each language's mean over checkpoints)."""
    overall = families[families["checkpoint"] == factors.OVERALL]
    if overall.empty:
        return None
    row = overall.iloc[0]
    groups = row["groups"].split(" vs ")
    sizes = [int(row.get(f"n[{g}]", 0)) for g in groups]
    common = dict(key="families", question=f"{row['groups']} targets differ in CER", test="Mann-Whitney U",
                  unit="languages (mean CER over checkpoints)", n=sum(sizes), alpha=alpha)
    if len(groups) != 2:
        return Finding(**common, verdict=UNTESTABLE, reason=f"all {sum(sizes)} targets are {groups[0]}")
    smallest = design.min_p_mann_whitney(*sizes)
    if not smallest < alpha:
        return Finding(**common, verdict=UNTESTABLE, reason=f"{sizes[0]} vs {sizes[1]} languages: the smallest "
                                                            f"possible p is {fmt_p(smallest)}")
    labels = pd.Series({lang: factors.indo_european(lang) for lang in matrix.index})
    values = matrix.mean(axis=1)
    a, b = (values[labels == g].to_numpy() for g in groups)
    effect = Effect.with_ci(f"rank-biserial ({groups[0]} − {groups[1]})", row["effect"],
                            bootstrap_ci([a, b], _rank_biserial, seed))
    lower = groups[0] if row["effect"] < 0 else groups[1]
    return Finding(**common, verdict=verdict(row["p"], alpha), statistic_name="U", statistic=row["statistic"],
                   p=row["p"], effect=effect,
                   claim=f"{lower} targets have the lower CER" if row["p"] < alpha else "")


def subgroup_finding(blocks: pd.DataFrame, test: stats.TestResult, alpha: float, seed: int = 0) -> Finding:
    """Same-subgroup transfer over target languages (blocks): same- minus other-subgroup relative CER."""
    n = len(blocks)
    common = dict(key="subgroup", question="monolingual checkpoints transfer differently to targets of their own "
                                           "subgroup than to others", test="Wilcoxon signed-rank",
                  unit="target languages (same − other subgroup, relative CER)", n=n, alpha=alpha)
    smallest = design.min_p_wilcoxon(n)
    if not smallest < alpha:
        why = ("no target has both a same- and an other-subgroup monolingual checkpoint" if n == 0 else
               f"{n} target languages with both: the smallest possible p is {fmt_p(smallest)}")
        return Finding(**common, verdict=UNTESTABLE, reason=why)
    differences = blocks["difference"].to_numpy()
    effect = Effect.with_ci("matched rank-biserial (same − other subgroup)", test.effect,
                            bootstrap_ci([differences], factors.matched_rank_biserial, seed))
    side = "better (lower relative CER)" if test.effect < 0 else "worse (higher relative CER)"
    return Finding(**common, verdict=verdict(test.p, alpha), statistic_name="W", statistic=test.statistic, p=test.p,
                   effect=effect, claim=f"monolingual checkpoints transfer {side} to targets of their own subgroup"
                   if test.p < alpha else "")


def typology_findings(typology: pd.DataFrame, cells: pd.DataFrame, alpha: float, seed: int = 0) -> list[Finding]:
    """CER vs each URIEL distance (one family, Holm); rho's CI resamples languages with all their cells.
    `cells`: checkpoint, language, value (relative CER) and one column per distance."""
    out = []
    for row in typology.itertuples():
        part = cells.dropna(subset=[row.distance, "value"])
        blocks = [g[[row.distance, "value"]].to_numpy() for _, g in part.groupby("language")]
        family = len(typology)
        common = dict(key=f"typology/{row.distance}", question=f"relative CER changes with the {row.distance} distance "
                                                               f"of the pre-training languages",
                      test="Spearman, permutation within languages", unit="checkpoint x language cells",
                      n=int(row.n), alpha=alpha, subject=(row.distance,))
        smallest = min(1.0, family * design.min_p_permutation([len(b) for b in blocks]))
        if not smallest < alpha:
            out.append(Finding(**common, verdict=UNTESTABLE, reason=f"{len(blocks)} languages of {row.n} cells allow "
                                                                     f"few arrangements: the smallest possible p after "
                                                                     f"Holm over {family} distances is {fmt_p(smallest)}"))
            continue
        common.update(statistic_name="rho", statistic=row.rho, p=row.p_permutation, p_adjusted=row.p_holm,
                      adjustment=f"Holm over {family} distances",
                      effect=Effect.with_ci("Spearman rho", row.rho, cluster_ci(blocks, _spearman, seed)))
        side = "rises" if row.rho > 0 else "falls"
        decided = verdict(row.p_holm, alpha)
        out.append(Finding(**common, verdict=decided, claim=f"relative CER {side} with the {row.distance} distance of "
                                                            f"the pre-training languages" if decided == SUPPORTED else ""))
    return out


def _spearman(blocks: np.ndarray) -> np.ndarray:
    """Spearman rho of (x, y) pairs pooled over blocks, per resample: (resamples, blocks, cells, 2) -> (resamples,)."""
    pairs = blocks.reshape(blocks.shape[0], -1, 2)
    x, y = (st.rankdata(pairs[..., i], axis=1) for i in (0, 1))
    x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    return (x * y).sum(axis=1) / np.sqrt((x**2).sum(axis=1) * (y**2).sum(axis=1))


def gender_finding(cells: pd.DataFrame, test: stats.TestResult, alpha: float, seed: int = 0) -> Finding | None:
    """Female − male CER, paired within runs, over checkpoint × language cells (seed means)."""
    if cells.empty:
        return None
    n = len(cells)
    common = dict(key="gender", question="test CER differs between female and male speakers", test="Wilcoxon signed-rank",
                  unit="checkpoint x language cells (seed-mean female − male gap)", n=n, alpha=alpha)
    smallest = design.min_p_wilcoxon(n)
    if not smallest < alpha:
        return Finding(**common, verdict=UNTESTABLE, reason=f"{n} cells: the smallest possible p is {fmt_p(smallest)}")
    if not math.isfinite(test.p):
        return Finding(**common, verdict=NOT_SUPPORTED, reason="every cell has a gap of exactly 0")
    gaps = cells["gap"].to_numpy()
    effect = Effect.with_ci("matched rank-biserial (female − male)", test.effect,
                            bootstrap_ci([gaps], factors.matched_rank_biserial, seed))
    side = "women" if test.effect > 0 else "men"
    return Finding(**common, verdict=verdict(test.p, alpha), statistic_name="W", statistic=test.statistic, p=test.p,
                   effect=effect, claim=f"test CER is higher for {side}" if test.p < alpha else "")


def sensitivity_findings(sensitivity: pd.DataFrame, alpha: float) -> list[Finding]:
    """Do checkpoint rankings under two values of a swept setting agree (Kendall's τ, Holm per setting)?"""
    out = []
    for row in sensitivity.itertuples():
        common = dict(key=f"sensitivity/{row.setting}/{row.value_a}/{row.value_b}",
                      question=f"the checkpoint rankings under {row.setting} {row.value_a} and {row.value_b} are "
                               f"associated", test="Kendall's tau", unit="checkpoints", n=int(row.n_checkpoints),
                      alpha=alpha)
        smallest = design.min_p_kendall(int(row.n_checkpoints))
        if not smallest < alpha:
            out.append(Finding(**common, verdict=UNTESTABLE, reason=f"{row.n_checkpoints} checkpoints: the smallest "
                                                                     f"possible p is {fmt_p(smallest)}"))
            continue
        decided = verdict(row.p_holm, alpha)
        side = "agree" if row.tau > 0 else "are reversed"
        out.append(Finding(**common, verdict=decided, statistic_name="tau", statistic=row.tau, p=row.p,
                           p_adjusted=row.p_holm, adjustment="Holm over the value pairs",
                           effect=Effect.with_ci("Kendall's tau", row.tau,
                                                 (row.tau_low, row.tau_high)),
                           claim=f"the checkpoint rankings under {row.setting} {row.value_a} and {row.value_b} {side}"
                           if decided == SUPPORTED else ""))
    return out


# --- what the summary shows ---------------------------------------------------------------------------

#: Keys shown in the summary, in order (prefix match); the rest are in the findings table.
HEADLINE = ("baseline/", "friedman", "ranking", "families", "subgroup", "typology/", "gender", "sensitivity/")


def headline(findings: Sequence[Finding]) -> list[Finding]:
    """The findings the summary states, in `HEADLINE` order."""
    return [f for prefix in HEADLINE for f in findings if f.key == prefix or (prefix.endswith("/") and
                                                                              f.key.startswith(prefix))]


def wins_sentence(wins: pd.DataFrame, alpha: float, p_adjust: str, *, runs: pd.DataFrame) -> str:
    """The per-language tally: on how many languages each checkpoint is best or tied best, and where one
    is the sole best — counts of per-language verdicts (n: `runs` per language), not a test across
    languages, so no checkpoint is called best overall (that is the Friedman and Nemenyi tests' question)."""
    if wins.empty or not wins["languages"].iloc[0]:
        return "No language allows a per-language comparison of checkpoints."
    total = int(wins["languages"].iloc[0])
    best = ", ".join(f"{r.checkpoint} on {r.wins}" for r in wins[wins["wins"] > 0].itertuples())
    sole = wins[wins["sole_wins"] > 0]
    sole_text = ("; sole best (significantly below every other checkpoint): " +
                 ", ".join(f"{r.checkpoint} on {r.sole_wins}" for r in sole.itertuples())) if len(sole) else \
        "; no checkpoint is the sole best on any language"
    sizes = sorted(set(runs.groupby("language").size()))
    n = f"n = {sizes[0]} runs each" if len(sizes) == 1 else f"n = {sizes[0]} to {sizes[-1]} runs per language"
    return (f"Per language (Conover-Iman over runs, {n}, {method_name(p_adjust)}, alpha {alpha}), best or tied best (not "
            f"significantly above the lowest mean), of {total} languages: {best}{sole_text} (a tally of "
            f"per-language tests, not a test across languages).")
