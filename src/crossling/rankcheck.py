"""Predicted vs measured: rank records (scores before fine-tuning) and a study's results table (fine-tuned
CERs of the same language and checkpoints) -> Spearman and Kendall tau with exact permutation p-values
and bootstrap intervals, ranking vs fine-tuning compute, and the findings they support (crossling.findings)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from crossling import factors
from crossling.findings import NOT_SUPPORTED, SUPPORTED, UNTESTABLE, Effect, Finding, cluster_ci
from crossling.markup import fmt_p
from crossling.rankrecord import ESTIMATORS, RankRecord
from crossling.stats import primary_slice, usable_runs

INTERVAL_REPLICATES = 2000
#: Permutations enumerated exactly up to this many checkpoints (8! = 40320), sampled beyond.
EXACT_PERMUTATIONS_UP_TO = 8


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """One estimator's ranking vs the fine-tuned CERs on one language.

    Correlations are oriented so that +1 means the estimator orders the checkpoints exactly as fine-tuning
    does (higher score, lower CER). `*_low`/`*_high`: 95 % percentile interval over re-drawn utterances
    (the record's paired bootstrap) and re-drawn seeds per checkpoint, with these checkpoints fixed.
    `*_p`: exact one-sided permutation p (H0: no association), whose smallest attainable value is
    `p_floor` = 1 / n!. Compute: wall seconds of ranking with this estimator, of fine-tuning each
    checkpoint once (the mean run of each) and of every run of the study on this language.
    `seed_spearman` is how well fine-tuning's order at one seed predicts its order at another: no
    estimator can be expected to agree with the measured order better than the measurements agree."""

    language: str
    estimator: str
    n: int
    checkpoints: tuple[str, ...]
    spearman: float
    spearman_low: float
    spearman_high: float
    spearman_p: float
    kendall: float
    kendall_low: float
    kendall_high: float
    kendall_p: float
    p_floor: float
    rank_seconds: float
    finetune_seconds_once: float
    finetune_seconds_all: float
    runs: int
    missing: tuple[str, ...]  # ranked checkpoints with no usable run on this language
    seed_spearman: float  # fine-tuning against itself: mean Spearman between the orders of two seeds (NaN: < 2)

    @property
    def compute_once(self) -> float:
        return self.rank_seconds / self.finetune_seconds_once if self.finetune_seconds_once > 0 else math.nan

    @property
    def compute_all(self) -> float:
        return self.rank_seconds / self.finetune_seconds_all if self.finetune_seconds_all > 0 else math.nan


def measured_cer(table: pd.DataFrame, language: str, checkpoints: Sequence[str]) -> dict[str, np.ndarray]:
    """Test CER of every usable run per checkpoint (seeds as replicates) on `language`; in a swept study,
    the runs at each setting's main value (`stats.primary_slice`), as the report's own analyses use."""
    runs = primary_slice(usable_runs(table))
    runs = runs[runs["language"].astype(str) == language]
    return {c: runs.loc[runs["checkpoint"].astype(str) == c, "cer"].to_numpy(float) for c in checkpoints
            if (runs["checkpoint"].astype(str) == c).any()}


def agreement(record: RankRecord, table: pd.DataFrame, estimator: str | None = None, seed: int = 0) -> Agreement | None:
    """The record's ranking against the table's CERs on its language; None when fewer than 3 of its
    checkpoints were measured there (no correlation to speak of)."""
    name = estimator or record.estimator
    ranked = [c.checkpoint for c in record.checkpoints]
    cer = measured_cer(table, record.language, ranked)
    common = [c for c in ranked if c in cer]
    if len(common) < 3:
        return None
    scores = {c.checkpoint: c.estimate(name) for c in record.checkpoints}
    predicted = np.array([scores[c].score for c in common])
    measured = -np.array([cer[c].mean() for c in common])  # higher is better on both sides
    spearman_p, kendall_p = (_permutation_p(predicted, measured, statistic, seed) for statistic in (_spearman, _kendall))
    spearman_interval, kendall_interval = _intervals(np.array([scores[c].replicates for c in common]),
                                                     [cer[c] for c in common], seed)
    runs = primary_slice(usable_runs(table))
    runs = runs[(runs["language"].astype(str) == record.language) & runs["checkpoint"].astype(str).isin(common)]
    once = float(pd.to_numeric(runs["wall_seconds"], errors="coerce").groupby(runs["checkpoint"]).mean().sum())
    seconds = record.sample_seconds + sum(c.seconds(name) for c in record.checkpoints if c.checkpoint in common)
    return Agreement(
        language=record.language, estimator=name, n=len(common), checkpoints=tuple(common),
        spearman=float(_spearman(predicted[None], measured[None])[0]), spearman_low=spearman_interval[0],
        spearman_high=spearman_interval[1], spearman_p=spearman_p,
        kendall=float(_kendall(predicted[None], measured[None])[0]), kendall_low=kendall_interval[0],
        kendall_high=kendall_interval[1], kendall_p=kendall_p, p_floor=1 / math.factorial(len(common)),
        rank_seconds=seconds, finetune_seconds_once=once,
        finetune_seconds_all=float(pd.to_numeric(runs["wall_seconds"], errors="coerce").sum()), runs=len(runs),
        missing=tuple(c for c in ranked if c not in cer), seed_spearman=seed_agreement(runs, common))


def seed_agreement(runs: pd.DataFrame, checkpoints: Sequence[str]) -> float:
    """Mean Spearman rho between the CER orders of every pair of seeds run for all `checkpoints`."""
    by_seed = runs.pivot_table(index="seed", columns="checkpoint", values="cer").reindex(columns=list(checkpoints))
    complete = by_seed.dropna().to_numpy(float)
    if len(complete) < 2:
        return math.nan
    first, second = np.triu_indices(len(complete), k=1)
    return float(np.nanmean(_spearman(complete[first], complete[second])))


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rho of (rows, n) arrays (average ranks for ties; NaN when a row is constant)."""
    return _pearson(st.rankdata(x, axis=-1), st.rankdata(y, axis=-1))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=-1) / np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Kendall tau-b of (rows, n) arrays."""
    upper = np.triu_indices(x.shape[-1], k=1)
    dx = np.sign(x[..., :, None] - x[..., None, :])[..., upper[0], upper[1]]
    dy = np.sign(y[..., :, None] - y[..., None, :])[..., upper[0], upper[1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (dx * dy).sum(axis=-1) / np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))


def _permutation_p(predicted: np.ndarray, measured: np.ndarray, statistic, seed: int) -> float:
    """One-sided (agreement) permutation p of `statistic`, exact when n <= EXACT_PERMUTATIONS_UP_TO."""
    result = st.permutation_test(
        (predicted, measured), lambda x, y, axis: statistic(np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)),
        permutation_type="pairings",
        vectorized=True, alternative="greater", rng=np.random.default_rng(seed),
        n_resamples=math.factorial(EXACT_PERMUTATIONS_UP_TO))
    return float(result.pvalue)


def _intervals(replicates: np.ndarray, cers: Sequence[np.ndarray], seed: int):
    """95 % percentile intervals of rho and tau over paired score replicates x seeds re-drawn per checkpoint."""
    rng = np.random.default_rng([seed, 2])
    picks = rng.integers(replicates.shape[1], size=INTERVAL_REPLICATES)
    predicted = replicates[:, picks].T  # (draws, checkpoints), one paired replicate per draw
    measured = -np.stack([rng.choice(c, size=(INTERVAL_REPLICATES, len(c))).mean(axis=1) for c in cers], axis=1)
    return tuple(_percentiles(statistic(predicted, measured)) for statistic in (_spearman, _kendall))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


# --- many languages and estimators -----------------------------------------------------------------------


def agreements(records: Mapping[str, RankRecord], table: pd.DataFrame,
               estimators: Sequence[str] = ESTIMATORS) -> list[Agreement]:
    """Every (language, estimator) that can be compared (the record scored it), languages in the records' order."""
    found = (agreement(records[lang], table, name) for lang in records for name in estimators
             if all(name in c.estimators for c in records[lang].checkpoints))
    return [a for a in found if a is not None]


@dataclass(frozen=True, kw_only=True)
class Pooled:
    """One estimator over several languages: the mean of the per-language Spearman rho, and its one-sided
    permutation p with checkpoints permuted within each language (exact: the null distribution is the
    convolution of each language's exact one; languages with more than EXACT_PERMUTATIONS_UP_TO
    checkpoints are sampled). `p_floor` is the smallest p any result could reach (every language perfect);
    `low`, `high`: the mean's 95 % percentile interval re-drawing languages (NaN with fewer than 2)."""

    estimator: str
    languages: tuple[str, ...]
    cells: int  # checkpoint x language pairs compared
    spearman: float
    p: float
    p_floor: float
    low: float
    high: float


def pooled(found: Sequence[Agreement], records: Mapping[str, RankRecord], table: pd.DataFrame,
           estimator: str, seed: int = 0) -> Pooled | None:
    """The pooled test of `estimator` over the languages of `found` (None with fewer than 2 languages)."""
    mine = [a for a in found if a.estimator == estimator]
    if len(mine) < 2:
        return None
    null = {0.0: 1.0}
    observed = []
    for a in mine:
        predicted, measured = _paired_arrays(records[a.language], table, a.checkpoints, estimator)
        observed.append(float(_spearman(predicted[None], measured[None])[0]))
        null = _convolve(null, _null_distribution(predicted, measured, seed))
    mean = float(np.mean(observed))
    p = sum(probability for total, probability in null.items() if total / len(mine) >= mean - 1e-9)
    floor = math.prod(1 / math.factorial(a.n) for a in mine)
    low, high = cluster_ci([np.array([rho]) for rho in observed], lambda drawn: drawn.mean(axis=(1, 2)), seed)
    return Pooled(estimator=estimator, languages=tuple(a.language for a in mine), cells=sum(a.n for a in mine),
                  spearman=mean, p=min(p, 1.0), p_floor=floor, low=low, high=high)


def _paired_arrays(record: RankRecord, table: pd.DataFrame, checkpoints: Sequence[str], estimator: str):
    scores = {c.checkpoint: c.estimate(estimator).score for c in record.checkpoints}
    cer = measured_cer(table, record.language, checkpoints)
    return np.array([scores[c] for c in checkpoints]), -np.array([cer[c].mean() for c in checkpoints])


def _null_distribution(predicted: np.ndarray, measured: np.ndarray, seed: int) -> dict[float, float]:
    """rho of `predicted` against every ordering of `measured` (sampled beyond EXACT_PERMUTATIONS_UP_TO)."""
    n = len(predicted)
    if n <= EXACT_PERMUTATIONS_UP_TO:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng([seed, 4])
        orders = np.array([rng.permutation(n) for _ in range(math.factorial(EXACT_PERMUTATIONS_UP_TO))])
    values = np.round(_spearman(np.broadcast_to(predicted, orders.shape), measured[orders]), 9)
    unique, counts = np.unique(values, return_counts=True)
    return dict(zip(unique.tolist(), (counts / counts.sum()).tolist(), strict=True))


def _convolve(first: dict[float, float], second: dict[float, float]) -> dict[float, float]:
    """The distribution of the sum of two independent discrete variables."""
    out: dict[float, float] = {}
    for a, p in first.items():
        for b, q in second.items():
            key = round(a + b, 9)
            out[key] = out.get(key, 0.0) + p * q
    return out


def agreement_frame(found: Sequence[Agreement]) -> pd.DataFrame:
    rows = [{**asdict(a), "checkpoints": " ".join(a.checkpoints), "missing": " ".join(a.missing),
             "compute_once": a.compute_once, "compute_all": a.compute_all} for a in found]
    return pd.DataFrame(rows)


# --- what may be said: findings (crossling.findings' rules) -----------------------------------------------

AGREEMENT_TEST = "exact one-sided permutation test of Spearman ρ"
POOLED_TEST = "exact one-sided permutation test of the mean Spearman ρ, checkpoints permuted within languages"
CHECKPOINT_UNIT = "checkpoints (each: mean test CER over its seeds)"
INTERVAL = "interval re-drawing utterances and seeds, checkpoints fixed"
INTERVALS = "95 % intervals re-draw utterances and seeds, checkpoints fixed"


def agreement_findings(found: Sequence[Agreement], alpha: float = 0.05, family: str = "") -> list[Finding]:
    """One finding per agreement; several are one family, Holm-adjusted (`family` names what they span)."""
    adjusted = factors.holm([a.spearman_p for a in found]) if len(found) > 1 else [math.nan] * len(found)
    return [agreement_finding(a, alpha, p_adjusted=float(p), family=(len(found), family))
            for a, p in zip(found, adjusted, strict=True)]


def agreement_finding(a: Agreement, alpha: float = 0.05, *, p_adjusted: float = math.nan,
                      family: tuple[int, str] = (1, "")) -> Finding:
    """Does the estimator's ranking agree with the fine-tuned order on the language? The exact permutation
    test of Spearman ρ over the checkpoints; Kendall τ, fine-tuning's own seed-to-seed ρ and what n
    checkpoints can show are said alongside."""
    size, spans = family
    question = f"the ranking by {a.estimator} before fine-tuning agrees with the fine-tuned order on {a.language}"
    common = dict(key=f"rank/{a.estimator}/{a.language}", question=question, test=AGREEMENT_TEST,
                  unit=CHECKPOINT_UNIT, n=a.n, alpha=alpha, subject=(a.language, a.estimator))
    smallest = min(1.0, size * a.p_floor)
    if not smallest < alpha:
        holm = f", {fmt_p(smallest)} after Holm over {size} {spans}" if size > 1 else ""
        return Finding(**common, verdict=UNTESTABLE, reason=(
            f"with {a.n} checkpoints no ordering gives p below 1/{a.n}! = {a.p_floor:.4f}{holm} (observed: "
            f"Spearman ρ = {a.spearman:.2f} {span(a.spearman_low, a.spearman_high)}, {_kendall_text(a)}; {INTERVALS})"
            f"{_seed_text(a)}"))
    adjustment = {"p_adjusted": p_adjusted, "adjustment": f"Holm over {size} {spans}"} if size > 1 else {}
    decisive = p_adjusted if size > 1 else a.spearman_p
    agrees = decisive < alpha and a.spearman > 0
    effect = Effect.with_ci(f"Spearman ρ ({INTERVAL})", a.spearman, (a.spearman_low, a.spearman_high))
    context = f"{_kendall_text(a)}{_seed_text(a)}; about these checkpoints, not how it would rank others"
    return Finding(**common, **adjustment, verdict=SUPPORTED if agrees else NOT_SUPPORTED, statistic_name="ρ",
                   statistic=a.spearman, p=a.spearman_p, effect=effect,
                   claim=f"{question} ({context})" if agrees else "", reason="" if agrees else context)


def _kendall_text(a: Agreement) -> str:
    return f"Kendall τ = {a.kendall:.2f} {span(a.kendall_low, a.kendall_high)} with p = {fmt_p(a.kendall_p)}"


def _seed_text(a: Agreement) -> str:
    if not math.isfinite(a.seed_spearman):
        return ""
    return (f"; fine-tuning's own order agrees across its seeds with ρ = {a.seed_spearman:.2f} (mean over seed "
            f"pairs), the most an estimator could be expected to reach")


def pooled_findings(pools: Sequence[Pooled], alpha: float = 0.05) -> list[Finding]:
    """Each estimator over every language; several estimators are one family (Holm)."""
    adjusted = factors.holm([p.p for p in pools]) if len(pools) > 1 else [math.nan] * len(pools)
    return [pooled_finding(p, alpha, p_adjusted=float(q), family=len(pools)) for p, q in zip(pools, adjusted, strict=True)]


def pooled_finding(p: Pooled, alpha: float = 0.05, *, p_adjusted: float = math.nan, family: int = 1) -> Finding:
    """Do the estimator's rankings agree with fine-tuning across the languages? The mean ρ's exact
    permutation test; its interval re-draws languages."""
    question = f"the rankings by {p.estimator} agree with the fine-tuned order across {len(p.languages)} languages"
    common = dict(key=f"rank/{p.estimator}/pooled", question=question, test=POOLED_TEST,
                  unit=f"languages ({p.cells} checkpoint x language pairs)", n=len(p.languages), alpha=alpha,
                  subject=(p.estimator,))
    smallest = min(1.0, family * p.p_floor)
    where = f"{', '.join(p.languages)}; mean Spearman ρ = {p.spearman:.2f}"
    if not smallest < alpha:
        return Finding(**common, verdict=UNTESTABLE, reason=f"the smallest attainable p is {fmt_p(smallest)} ({where})")
    adjustment = {"p_adjusted": p_adjusted, "adjustment": f"Holm over {family} estimators"} if family > 1 else {}
    agrees = (p_adjusted if family > 1 else p.p) < alpha and p.spearman > 0
    effect = Effect.with_ci("mean Spearman ρ (95 % interval re-drawing languages)", p.spearman, (p.low, p.high))
    context = f"{', '.join(p.languages)}; about these checkpoints, not how it would rank others"
    return Finding(**common, **adjustment, verdict=SUPPORTED if agrees else NOT_SUPPORTED, statistic_name="mean ρ",
                   statistic=p.spearman, p=p.p, effect=effect, claim=f"{question} ({context})" if agrees else "",
                   reason="" if agrees else context)


def estimators_finding(found: Sequence[Agreement], alpha: float = 0.05) -> Finding | None:
    """Whether one estimator agrees better than another is not tested here (None with one estimator):
    each is tested on its own; their mean ρ is said as a description."""
    frame = agreement_frame(found)
    if frame.empty or frame["estimator"].nunique() < 2:
        return None
    means = frame.groupby("estimator", sort=False)["spearman"].mean()
    return Finding(key="rank/estimators", question="the estimators differ in how well their rankings agree with "
                   "fine-tuning", test="none (no test compares the estimators)", unit="languages",
                   n=int(frame["language"].nunique()), alpha=alpha, verdict=UNTESTABLE,
                   reason="comparing them needs a paired test over many more languages or checkpoints than a "
                          "handful; mean Spearman ρ over the languages, as a description: "
                          + ", ".join(f"{name} {value:.2f}" for name, value in means.items()))


def compute_sentence(a: Agreement) -> str:
    """A measurement, not a test: ranking's recorded wall time against fine-tuning's."""
    return (f"{a.estimator} on {a.language}: ranking took {a.rank_seconds:.1f} s, "
            f"{percent(a.compute_once)} of fine-tuning each of the {a.n} checkpoints once "
            f"({a.finetune_seconds_once:.0f} s) and {percent(a.compute_all)} of the study's {a.runs} runs "
            f"on {a.language} ({a.finetune_seconds_all:.0f} s), wall time as each recorded it (measured at other "
            f"times, perhaps under other load; bench/bench_rank.py times both in one session).")


def span(low: float, high: float) -> str:
    return "n/a" if not (math.isfinite(low) and math.isfinite(high)) else f"[{low:.2f}, {high:.2f}]"


def percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f} %"
