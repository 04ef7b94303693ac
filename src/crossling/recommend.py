"""Which checkpoint to fine-tune for a target language: measured CERs when the results have them,
otherwise the ranking of the user's own audio (a `crossling rank` record) when there is one, otherwise a
prediction from typologically nearest measured languages, otherwise a prior from the registry's facts and
typology. Inputs: a language code, optionally the tidy results table and a rank record."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from crossling import findings as fd
from crossling import stats, typology
from crossling.errors import ConfigError, DataError
from crossling.languages import all_languages, find_language, language_suggestions
from crossling.rankrecord import RankRecord, ranking

#: Nearest measured languages used for an unmeasured target, and the softness of their weights
#: w = exp(−d / TEMPERATURE) where d is the mean of the five URIEL distances (0..1).
NEIGHBOURS = 5
TEMPERATURE = 0.1
#: Prior (no results): score = −closeness penalty + diversity bonus + data bonus, lower rank is better.
#: The weights encode the reference study's findings: a pre-training language close to the target
#: helps, diverse multilingual pre-training helps more than hours, and random init is last.
PRIOR_WEIGHTS = {"distance": 1.0, "multilingual": 0.5, "log10_hours": 0.1}


@dataclass(frozen=True)
class Candidate:
    """One ranked checkpoint. `predicted` is the expected test CER (NaN for a prior-only ranking);
    `uncertainty` its standard error (measured), leave-one-language-out RMSE (predicted) or the paired
    bootstrap sd of its rank score minus the best one (rank); `basis` is 'measured', 'rank', 'predicted' or 'prior'; `evidence` says
    what it rests on."""

    rank: int
    checkpoint: str
    predicted: float
    uncertainty: float
    score: float
    basis: str
    evidence: str
    pretrain_distance: float


@dataclass(frozen=True)
class Recommendation:
    """The ranked candidates. Measured ranks come from `findings` (the pair tests on the target language):
    rank = 1 + the number of checkpoints with a significantly lower CER, so checkpoints none of which is
    below another share a rank. Predicted and prior orderings are not tests; `notes` says so."""

    language: str
    candidates: tuple[Candidate, ...]
    neighbours: tuple[tuple[str, float, float], ...]  # (language, distance, weight) used for predictions
    loo_rmse: float  # leave-one-language-out RMSE of the neighbour prediction over all checkpoints
    notes: str
    findings: tuple[fd.Finding, ...] = ()

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(c) for c in self.candidates])

    def best(self) -> tuple[str, ...]:
        """The checkpoints sharing rank 1."""
        return tuple(c.checkpoint for c in self.candidates if c.rank == 1)

    def sentences(self) -> list[str]:
        """What the tests on the target language support about the best checkpoints: which share rank 1
        and why, then every pair finding that involves one of them (none without measured runs)."""
        if not self.findings:
            return []
        best = self.best()
        tested = [f for f in self.findings if f.verdict != fd.UNTESTABLE]
        involving = [f.sentence() for f in self.findings if set(f.subject[1:]) & set(best)]
        if not tested:
            return [f"Cannot be tested here which checkpoint has the lowest CER on {self.language}: "
                    f"{self.findings[0].reason}.", *involving]
        above = {higher for lower, higher in map(_lower_first, tested) if lower == best[0]}
        others = {c.checkpoint for c in self.candidates if c.basis == "measured"} - {best[0]}
        why = " (none is significantly lower than another)" if len(best) > 1 else "" if above >= others else \
            " (no checkpoint significantly lower, though not significantly below every other)"
        correction = next((f.adjustment for f in tested if f.adjustment), "no correction")
        head = f"Lowest CER on {self.language}: {fd.names(best)}{why} — {tested[0].test}, {correction}, alpha {tested[0].alpha}."
        return [head, *involving]

    def to_dict(self) -> dict:
        return {"language": self.language, "loo_rmse": self.loo_rmse, "notes": self.notes,
                "neighbours": [{"language": n, "distance": d, "weight": w} for n, d, w in self.neighbours],
                "candidates": [asdict(c) for c in self.candidates], "best": list(self.best()),
                "sentences": self.sentences(), "findings": [f.to_json() for f in self.findings]}


def _lower_first(f: fd.Finding) -> tuple[str, str]:
    """A pair finding's (significantly lower, higher) checkpoints; ('', '') without a supported direction."""
    _, a, b = f.subject
    return ("", "") if not f.sign else (a, b) if f.sign < 0 else (b, a)


# --- distances ---------------------------------------------------------------------------------------


@cache
def language_distance(a: str, b: str) -> float:
    """Mean of the five URIEL distances between two languages; NaN when URIEL lacks either."""
    if not (typology.has_uriel(a) and typology.has_uriel(b)):
        return math.nan
    return float(np.mean([typology.distance(a, b, kind) for kind in typology.DISTANCE_KINDS]))


@cache
def pretrain_distance(checkpoint: str, language: str) -> float:
    """Smallest `language_distance` from the checkpoint's pre-training languages to `language` (NaN when
    it has none, e.g. random init)."""
    values = [language_distance(source, language) for source in typology.pretrain_languages(checkpoint)]
    values = [v for v in values if not math.isnan(v)]
    return min(values) if values else math.nan


# --- the additive model ----------------------------------------------------------------------------
# cer(c, l) ≈ difficulty(l) + effect(c near l) + beta · pretrain_distance(c, l). For an unmeasured
# target, difficulty and effect are weighted averages over its nearest measured languages.


def _transfer_slope(matrix: pd.DataFrame) -> float:
    """beta: least-squares slope of the two-way (language + checkpoint) residuals on pre-training distance."""
    residual = matrix.sub(matrix.mean(axis=1), axis=0)
    residual = residual - residual.mean(axis=0)
    pairs = [(pretrain_distance(c, lang), residual.loc[lang, c]) for lang in matrix.index for c in matrix.columns]
    pairs = np.array([p for p in pairs if not (math.isnan(p[0]) or math.isnan(p[1]))])
    if len(pairs) < 3 or np.ptp(pairs[:, 0]) == 0:
        return 0.0
    x = pairs[:, 0] - pairs[:, 0].mean()
    return float(x @ (pairs[:, 1] - pairs[:, 1].mean()) / (x @ x))


def _neighbours(target: str, languages: list[str]) -> list[tuple[str, float, float]]:
    """Nearest measured languages with weights; uniform weights over all when typology is unavailable."""
    scored = [(lang, language_distance(target, lang)) for lang in languages if lang != target]
    known = sorted([(lang, d) for lang, d in scored if not math.isnan(d)], key=lambda x: (x[1], x[0]))
    if not known:
        return [(lang, math.nan, 1.0) for lang, _ in scored]
    return [(lang, d, math.exp(-d / TEMPERATURE)) for lang, d in known[:NEIGHBOURS]]


def _predict(matrix: pd.DataFrame, target: str, checkpoint: str, beta: float) -> tuple[float, list[str]]:
    """Predicted metric for (checkpoint, target) from the other languages of `matrix`; (NaN, []) when
    the checkpoint was measured on none of them."""
    languages = [lang for lang in matrix.index if lang != target and not math.isnan(matrix.loc[lang, checkpoint])]
    neighbours = _neighbours(target, languages)
    if not neighbours:
        return math.nan, []
    own = pretrain_distance(checkpoint, target)
    total, weights = 0.0, 0.0
    for lang, _, weight in neighbours:
        shift = 0.0 if math.isnan(own) else beta * (own - pretrain_distance(checkpoint, lang))
        total += weight * (matrix.loc[lang, checkpoint] + shift)
        weights += weight
    return total / weights, [lang for lang, _, _ in neighbours]


def leave_one_language_out(matrix: pd.DataFrame) -> pd.Series:
    """Per checkpoint RMSE of predicting each measured language's cell from the other languages."""
    errors: dict[str, list[float]] = {c: [] for c in matrix.columns}
    for held in matrix.index:
        rest = matrix.drop(index=held)
        beta = _transfer_slope(rest)
        for checkpoint in matrix.columns:
            actual = matrix.loc[held, checkpoint]
            predicted, _ = _predict(rest, held, checkpoint, beta)
            if not (math.isnan(actual) or math.isnan(predicted)):
                errors[checkpoint].append(predicted - actual)
    return pd.Series({c: math.sqrt(np.mean(np.square(e))) if e else math.nan for c, e in errors.items()})


# --- recommend -------------------------------------------------------------------------------------


def recommend(language: str, results: pd.DataFrame | None = None, metric: str = "cer",
              rank: RankRecord | None = None, alpha: float = 0.05) -> Recommendation:
    """Rank checkpoints for `language` (best first).

    With results: checkpoints measured on the language are ranked by the Conover-Iman tests between them
    at `alpha` (Holm over the language's pairs, gated by Kruskal-Wallis; see `Recommendation`), shown with
    their mean (uncertainty = standard error over seeds); the others by a prediction from the nearest measured languages by URIEL distance,
    shifted by how much closer or farther the checkpoint's pre-training languages are to the target
    (uncertainty = that checkpoint's leave-one-language-out RMSE). Without results: a prior ranking
    from registry facts and typology (no CER is predicted). With a rank record of the language and no
    measured runs on it: the record's checkpoints in the record's ranking (see `from_rank`); with both,
    the measured ranking, each candidate's evidence also giving its rank score."""
    code = _code(language)
    if rank is not None and _code(rank.language) != code:
        raise DataError(f"the rank record is for {rank.language!r}, not {code!r}; run `crossling rank --language {code}`")
    usable = stats.split_missing(results, metric)[0] if results is not None else None
    usable = None if usable is None or usable.empty else usable
    in_results = () if usable is None else tuple(sorted(usable["language"].astype(str).unique()))
    _check_known(code, in_results + ((code,) if rank is not None else ()))  # a rank record of it knows it
    measured = usable is not None and _match(code, list(in_results)) is not None
    if rank is not None and not measured:
        return from_rank(code, rank, usable, metric)
    if usable is None:
        return _prior(code)
    recommendation = _from_results(code, usable, metric, alpha)
    return recommendation if rank is None else _with_rank_evidence(recommendation, rank)


def _code(language: str) -> str:
    found = find_language(language)
    return found.code if found is not None else language


def _from_results(code: str, usable: pd.DataFrame, metric: str, alpha: float) -> Recommendation:
    usable = stats.primary_slice(usable)
    matrix = stats.cell_means(usable, metric)
    target = _match(code, list(matrix.index))
    summary = stats.cell_summary(usable, metric).set_index(["language", "checkpoint"])
    pooled_sd = math.sqrt(np.nanmean(summary["sd"] ** 2)) if summary["sd"].notna().any() else math.nan
    loo = leave_one_language_out(matrix) if len(matrix.index) >= 3 else pd.Series(math.nan, index=matrix.columns)
    beta = _transfer_slope(matrix.drop(index=[target]) if target else matrix)
    rows = [_candidate(matrix, summary, target or code, c, beta=beta, loo_error=loo[c], pooled_sd=pooled_sd)
            for c in matrix.columns]
    neighbours = tuple(_neighbours(code, [x for x in matrix.index if x != target]))
    overall = math.sqrt(np.nanmean(np.square(loo))) if loo.notna().any() else math.nan
    if target is None:
        notes = (f"{code} not measured: CER predicted from its nearest measured languages (transfer slope beta = "
                 f"{beta:.3f} {metric} per unit of distance); the order is a prediction, not a tested difference")
        return Recommendation(code, _ranked(rows), neighbours, overall, notes)
    part = usable[usable["language"] == target].assign(cer=lambda t: t[metric])
    ranks, pairs = tested_ranks(part, alpha=alpha)
    notes = (f"measured on {target}: rank = 1 + the number of checkpoints with a significantly lower {metric} "
             f"(shared ranks: none is significantly lower than another)")
    return Recommendation(target, _ranked(rows, ranks), neighbours, overall, notes, findings=pairs)


def tested_ranks(part: pd.DataFrame, *, alpha: float, p_adjust: str = "holm") -> tuple[dict[str, int], tuple]:
    """One language's runs -> (checkpoint -> 1 + the number of checkpoints with a significantly lower CER,
    the pair findings behind it): Conover-Iman with `p_adjust` over the language's pairs, gated by its
    Kruskal-Wallis test, exactly as the report's letters."""
    posthoc = stats.conover(part, "cer", p_adjust)
    omnibus = stats.kruskal(part["cer"], part["checkpoint"]).p
    names = sorted(part["checkpoint"].astype(str).unique())
    pairs = tuple(fd.pair_finding(part, a, b, pvalue=float(posthoc.loc[a, b]), omnibus_p=omnibus, alpha=alpha,
                                  p_adjust=p_adjust) for a, b in itertools.combinations(names, 2))
    beaten = Counter(higher for _, higher in map(_lower_first, pairs) if higher)  # a pair with no direction: none
    return {name: 1 + beaten[name] for name in names}, pairs


def _check_known(code: str, measured: tuple[str, ...]) -> None:
    """A language neither crossling's table, URIEL nor the results know cannot be ranked for: an error
    (a prior for it would rank by a meaningless distance)."""
    if find_language(code) is not None or typology.has_uriel(code) or code in measured:
        return
    known = " ".join(lang.code for lang in all_languages())
    raise ConfigError(f"unknown language {code!r}{language_suggestions(code, measured)}: not in the results, "
                      f"not a Common Voice code, and no ISO 639-3 code URIEL knows; known Common Voice codes: {known}")


def _match(code: str, languages: list[str]) -> str | None:
    """The spelling of `code` used in the results ('sv' there, 'sv-SE' asked), or None."""
    for name in languages:
        found = find_language(name)
        if name == code or (found is not None and found.code == code):
            return name
    return None


def _candidate(matrix, summary, target, checkpoint, beta, loo_error, pooled_sd) -> dict:
    distance = pretrain_distance(checkpoint, target)
    if target in matrix.index and not math.isnan(matrix.loc[target, checkpoint]):
        cell = summary.loc[(target, checkpoint)]
        sd = cell["sd"] if not math.isnan(cell["sd"]) else pooled_sd
        evidence = f"measured on {target}: {int(cell['n'])} run(s), mean {cell['mean']:.4f}, sd {cell['sd']:.4f}"
        return dict(checkpoint=checkpoint, predicted=float(cell["mean"]), uncertainty=float(sd / math.sqrt(cell["n"])),
                    score=float(cell["mean"]), basis="measured", evidence=evidence, pretrain_distance=distance)
    predicted, used = _predict(matrix, target, checkpoint, beta)
    evidence = (f"predicted from {', '.join(used)} (nearest measured languages); pre-training distance "
                f"{distance:.3f}" if used else "not measured on any language")
    return dict(checkpoint=checkpoint, predicted=predicted, uncertainty=float(loo_error), score=predicted,
                basis="predicted", evidence=evidence, pretrain_distance=distance)


def _ranked(rows: list[dict], tested: dict[str, int] | None = None) -> tuple[Candidate, ...]:
    """Candidates best first. Checkpoints in `tested` take their tested rank; the rest follow, ranked by
    score, equal scores sharing a rank (names only order the display of a tie, never its rank)."""
    tested = tested or {}

    def score(row: dict) -> float:
        return math.inf if math.isnan(row["score"]) else row["score"]

    measured = sorted((r for r in rows if r["checkpoint"] in tested),
                      key=lambda r: (tested[r["checkpoint"]], score(r), r["checkpoint"]))
    others = sorted((r for r in rows if r["checkpoint"] not in tested), key=lambda r: (score(r), r["checkpoint"]))
    ranked = [Candidate(rank=tested[r["checkpoint"]], **r) for r in measured]
    for position, row in enumerate(others):
        tie = position > 0 and score(row) == score(others[position - 1])
        ranked.append(Candidate(rank=ranked[-1].rank if tie else len(measured) + position + 1, **row))
    return tuple(ranked)


def _prior(code: str) -> Recommendation:
    """Ranking of every registered checkpoint from its facts alone (lower score is better)."""
    from crossling.registry import all_checkpoints

    rows = []
    for checkpoint in all_checkpoints():
        distance = pretrain_distance(checkpoint.alias, code)
        closeness = 1.0 if math.isnan(distance) else distance
        score = (PRIOR_WEIGHTS["distance"] * closeness - PRIOR_WEIGHTS["multilingual"] * checkpoint.multilingual
                 - PRIOR_WEIGHTS["log10_hours"] * math.log10(1 + checkpoint.pretrain_hours))
        languages = checkpoint.pretrain_language_count or len(checkpoint.pretrain_languages)
        evidence = (f"prior: {languages} pre-training language(s), {checkpoint.pretrain_hours:,.0f} h, closest "
                    f"pre-training language at distance {closeness:.3f}")
        rows.append(dict(checkpoint=checkpoint.alias, predicted=math.nan, uncertainty=math.nan, score=score,
                         basis="prior", evidence=evidence, pretrain_distance=distance))
    notes = "no results: prior ranking from registry facts and URIEL distances; no CER predicted"
    return Recommendation(code, _ranked(rows), (), math.nan, notes)


# --- from a rank record of the user's own audio ---------------------------------------------------------


def from_rank(code: str, record: RankRecord, usable: pd.DataFrame | None = None, metric: str = "cer") -> Recommendation:
    """The record's checkpoints in its ranking (shared ranks where its estimator cannot separate them);
    each candidate's evidence names the score, its bootstrap sd and interval, the layer and the sample, and
    adds the CER predicted from the nearest measured languages when `usable` results allow one."""
    predictions = _rank_predictions(code, record, usable, metric)
    rows = []
    for place in ranking(record):
        predicted, evidence = predictions.get(place.checkpoint, (math.nan, ""))
        rows.append(Candidate(rank=place.rank, checkpoint=place.checkpoint, predicted=predicted,
                              uncertainty=place.gap_sd, score=place.score, basis="rank",
                              evidence=_rank_evidence(record, place) + evidence,
                              pretrain_distance=pretrain_distance(place.checkpoint, code)))
    notes = (f"ranked on your own {code} audio by {record.estimator} ({record.utterances} train utterances, "
             f"{record.audio_seconds:.0f} s, seed {record.seed}) before any fine-tuning; only the checkpoints "
             f"that were ranked are listed")
    return Recommendation(code, tuple(rows), (), math.nan, notes)


def _rank_evidence(record: RankRecord, place) -> str:
    """The score and where its rank comes from: how many checkpoints score higher beyond the paired
    bootstrap's 95 % interval of the difference (utterances resampled), and those it cannot be told from."""
    tied = f"; not separable from {', '.join(place.not_separable_from)}" if place.not_separable_from else ""
    return (f"rank score ({record.estimator}) {place.score:.5f} at layer {place.layer}, {abs(place.gap):.5f} below the "
            f"best (paired bootstrap sd {place.gap_sd:.5f}); {place.rank - 1} checkpoint(s) score higher beyond the "
            f"paired bootstrap's 95 % interval of the difference ({record.bootstrap} resamples of "
            f"{record.utterances} utterances){tied}")


def _with_rank_evidence(recommendation: Recommendation, record: RankRecord) -> Recommendation:
    """Measured candidates keep their ranking; those the record ranked also show their rank score."""
    places = {place.checkpoint: place for place in ranking(record)}
    candidates = tuple(replace(c, evidence=c.evidence + "; " + _rank_evidence(record, places[c.checkpoint]))
                       if c.checkpoint in places else c for c in recommendation.candidates)
    return replace(recommendation, candidates=candidates)


def _rank_predictions(code: str, record: RankRecord, usable: pd.DataFrame | None, metric: str) -> dict:
    """checkpoint -> (CER predicted from neighbours, evidence text) for the ranked checkpoints measured elsewhere."""
    if usable is None:
        return {}
    matrix = stats.cell_means(stats.primary_slice(usable), metric)
    beta = _transfer_slope(matrix)
    out = {}
    for checkpoint in (c.checkpoint for c in record.checkpoints if c.checkpoint in matrix.columns):
        predicted, used = _predict(matrix, code, checkpoint, beta)
        if used:
            out[checkpoint] = (predicted, f"; {metric} predicted from {', '.join(used)}: {predicted:.4f}")
    return out


def recommend_from(language: str, source: str | Path | None = None, store: Path | None = None,
                   rank_record: Path | None = None) -> Recommendation:
    """`recommend` with the results table of `source` (a results file, store directory or study; see
    `crossling.results.load_table`) and the rank record at `rank_record`, or the prior when neither is given."""
    from crossling.rankrecord import read_record
    from crossling.results import load_table

    record = read_record(rank_record) if rank_record is not None else None
    return recommend(language, load_table(source, store) if source is not None else None, rank=record)
