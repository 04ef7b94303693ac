"""crossling.findings on tables with a known truth: no sentence claims a direction or a difference its test
rejects, every untestable question says why, ties are named together, and each test uses its unit."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from analysis_factory import synthetic_table

from crossling import findings, stats
from crossling.findings import NOT_SUPPORTED, SUPPORTED, UNTESTABLE, Finding
from crossling.markup import fmt_p
from crossling.report import analyse, summary_sentences

DIRECTION = re.compile(r"\b(lower|higher|better|worse|rises|falls|beats?|above|below|agree|reversed)\b", re.I)


def _runs(cells: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [{"run_id": f"{c}-{lang}-{s}", "checkpoint": c, "language": lang, "seed": s, "status": "done", "cer": v}
            for (c, lang), values in cells.items() for s, v in enumerate(values)]
    return pd.DataFrame(rows)


def _assert_honest(a) -> None:
    """The invariants every analysis must keep, whatever the data."""
    for f in a.findings:
        sentence = f.sentence()
        assert "nan" not in sentence.lower().split(), sentence
        if f.verdict == SUPPORTED:
            assert f.claim and sentence.startswith(f.claim[0].upper())
            assert f.p_adjusted < f.alpha if math.isfinite(f.p_adjusted) else True
        elif f.verdict == NOT_SUPPORTED:
            assert sentence.startswith("No evidence that ") and not f.claim and f.sign == 0
            assert not DIRECTION.search(sentence.replace(f.question, "")), sentence
        else:
            assert sentence.startswith("Cannot be tested here whether ") and f.reason and not f.claim
            assert not DIRECTION.search(sentence.replace(f.question, "")), sentence
        if f.verdict != SUPPORTED and f.key.startswith(("pair/", "kruskal/", "friedman", "families", "subgroup",
                                                           "gender", "typology/")):
            assert not DIRECTION.search(f.question), f.question  # their questions are two-sided
    for sentence in summary_sentences(a):
        assert not re.search(r"\bnan\b", sentence, re.I), sentence


def _grid(checkpoints, languages, seeds, cer) -> pd.DataFrame:
    return _runs({(c, lang): [cer(c, lang, s) for s in range(seeds)] for c in checkpoints for lang in languages})


# --- known truths ---------------------------------------------------------------------------------------


def test_no_effect_claims_nothing():
    """Every checkpoint gets the same CERs (only languages and seeds vary): nothing differs."""
    table = _grid(("zoo-es", "zoo-de", "zoo-random"), ("pt", "ca", "nl", "sv-SE", "da", "is"), 4,
                  lambda c, lang, s: 0.5 + 0.01 * len(lang) + 0.003 * s)
    a = analyse(table)
    _assert_honest(a)
    tested = [f for f in a.findings if f.verdict != UNTESTABLE]
    assert tested and all(f.verdict == NOT_SUPPORTED for f in tested)
    joint = next(f for f in a.findings if f.key == "baseline/zoo-random")
    assert joint.sentence().startswith("No evidence that every pre-trained checkpoint")
    ranking = next(f for f in a.findings if f.key == "ranking")  # the gate's p is said, not only Nemenyi's
    assert ranking.reason.startswith(f"Friedman not significant (p = {fmt_p(a.friedman.result.p)}); ")
    assert "no evidence of a difference for zoo-de vs zoo-random on ca" in joint.sentence()


def test_strong_effect_is_supported_with_its_direction_effect_and_unit():
    def cer(c, lang, s):
        return {"zoo-es": 0.60, "zoo-de": 0.65, "zoo-random": 0.99}[c] + 0.004 * ((s * 7 + len(lang)) % 5)

    a = analyse(_grid(("zoo-es", "zoo-de", "zoo-random"), ("pt", "ca", "nl", "sv-SE", "da", "is"), 4, cer))
    _assert_honest(a)
    joint = next(f for f in a.findings if f.key == "baseline/zoo-random")
    assert joint.verdict == SUPPORTED and joint.n == 12
    pairs = [f for f in a.findings if f.key.startswith("pair/") and f.subject[2] == "zoo-random"]
    weakest = max(pairs, key=lambda f: f.p_adjusted)
    assert joint.p_adjusted == weakest.p_adjusted and math.isnan(joint.p)  # a Holm-corrected p is said to be one
    language, checkpoint, _ = weakest.subject
    assert f"Holm over 3 pairs, weakest pair ({checkpoint} vs zoo-random on {language}): p = " in joint.sentence()
    pair = next(f for f in a.findings if f.key == "pair/pt/zoo-es/zoo-random")
    assert pair.verdict == SUPPORTED and pair.sign == -1 and pair.unit.startswith("runs (seeds)") and pair.n == 8
    assert pair.effect.value == pytest.approx(-0.39, abs=0.01) and pair.effect.low <= pair.effect.value <= pair.effect.high
    assert "Holm over 3 pairs: p = " in pair.sentence()
    friedman = next(f for f in a.findings if f.key == "friedman")
    assert friedman.verdict == SUPPORTED and friedman.n == 6 and friedman.unit.startswith("languages")
    assert 0 <= friedman.effect.low <= friedman.effect.value <= friedman.effect.high <= 1


def test_the_best_on_a_language_counts_its_runs_and_cites_its_weakest_separation():
    def cer(c, lang, s):
        return {"zoo-es": 0.60, "zoo-de": 0.65, "zoo-random": 0.99}[c] + 0.004 * ((s * 7 + len(lang)) % 5)

    a = analyse(_grid(("zoo-es", "zoo-de", "zoo-random"), ("pt", "ca", "nl", "sv-SE", "da", "is"), 4, cer))
    best = next(f for f in a.findings if f.key == "best/pt")
    assert best.verdict == SUPPORTED and best.n == 12 and best.unit.startswith("runs (seeds)")  # 3 checkpoints x 4 seeds
    groups = a.groups[a.groups["language"] == "pt"].set_index("checkpoint")
    weakest = max(groups.loc[["zoo-de", "zoo-random"], "p_vs_best"])
    assert best.p_adjusted == weakest == groups.loc["zoo-de", "p_vs_best"] < 0.05  # the closer of the two
    assert best.effect.name == "mean CER difference (zoo-es − zoo-de)"
    assert best.effect.value == pytest.approx(-0.05, abs=0.001) and best.effect.high < 0
    assert "Holm over 3 pairs, weakest separation (zoo-es vs zoo-de): p = " in best.sentence()


def test_equal_lowest_means_are_named_together_and_never_above_themselves():
    cells = {("zoo-b", "pt"): [0.125] * 7 + [0.75], ("zoo-a", "pt"): [0.203125] * 8,
             ("zoo-random", "pt"): [0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97]}
    a = analyse(_runs(cells))
    _assert_honest(a)
    best = next(f for f in a.findings if f.key == "best/pt")
    assert best.claim == "on pt, lowest mean CER: zoo-a and zoo-b; significantly higher than it: zoo-random"
    assert "no checkpoint is the sole best" in findings.wins_sentence(a.wins, a.alpha, a.p_adjust, runs=a.runs)


def test_the_per_language_tally_names_its_n_p_and_effects():
    def cer(c, lang, s):  # nl's seeds vary ten times more than the others': no evidence there
        return {"zoo-es": 0.60, "zoo-de": 0.65, "zoo-random": 0.99}[c] + (0.3 if lang == "nl" else 0.004) * (
            (s * 7 + len(lang)) % 5)

    a = analyse(_grid(("zoo-es", "zoo-de", "zoo-random"), ("pt", "ca", "nl", "sv-SE", "da", "is"), 4, cer))
    sentence = findings.kruskal_sentence(a.findings)
    nl = next(f for f in a.findings if f.key == "kruskal/nl")
    assert nl.verdict == NOT_SUPPORTED and nl.n == 12
    assert "(Kruskal-Wallis per language over runs, n = 12 runs each, alpha 0.05)" in sentence
    assert f"no evidence of a difference on nl (p = {fmt_p(nl.p)}; epsilon squared = {nl.effect.value:.2f})" in sentence
    supported = [f for f in a.findings if f.key.startswith("kruskal/") and f.verdict == SUPPORTED]
    assert f"on ca da is pt sv-SE (p = {fmt_p(max(f.p for f in supported))}; epsilon squared" in sentence


def test_a_separation_whose_ranks_and_means_disagree_states_no_direction():
    """zoo-a's runs rank below zoo-b's (7 of 8 at 0.10) but one diverged seed (0.90) lifts its mean above
    zoo-b's: Conover-Iman (mean ranks) separates them, the mean CER difference points the other way. No
    sentence may call zoo-a 'significantly higher' (the test says lower) nor 'lower' (the effect says higher)."""
    cells = {("zoo-a", "pt"): [0.1] * 7 + [0.9], ("zoo-b", "pt"): [0.15, 0.151, 0.152, 0.153, 0.154, 0.155, 0.156, 0.157],
             ("zoo-random", "pt"): [0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.0, 1.0]}
    a = analyse(_runs(cells))
    _assert_honest(a)
    best = next(f for f in a.findings if f.key == "best/pt")
    assert best.claim == "on pt, lowest mean CER: zoo-b; not significantly above it: zoo-a; significantly higher " \
                         "than it: zoo-random"
    part = a.runs
    pair = findings.pair_finding(part, "zoo-a", "zoo-b", pvalue=float(a.posthoc_matrices["pt"].loc["zoo-a", "zoo-b"]),
                                 omnibus_p=float(a.omnibus["p"].iloc[0]), alpha=0.05, p_adjust="holm")
    assert pair.verdict == SUPPORTED and pair.sign == 0 and pair.effect.value > 0
    assert pair.claim == "on pt, zoo-a and zoo-b differ in CER (the runs of zoo-a rank lower, but its mean CER is " \
                         "higher: no direction)"
    from crossling.recommend import tested_ranks

    assert tested_ranks(part, alpha=0.05)[0] == {"zoo-a": 1, "zoo-b": 1, "zoo-random": 3}


def test_no_separation_from_the_lowest_mean_cites_the_closest_pair_not_the_omnibus_p():
    """Kruskal-Wallis rejects (p = 0.037) but Conover-Iman separates nothing from the lowest mean: the
    'no evidence' sentence must cite the p that decides it (the closest pair's, 0.10), not only 0.037."""
    cells = {("zoo-a", "pt"): [-0.004, 0.472, 0.369, 0.382], ("zoo-b", "pt"): [0.35, 0.331, 0.364, 0.36],
             ("zoo-c", "pt"): [0.461, 0.538, 0.441, 0.484]}
    a = analyse(_runs(cells))
    _assert_honest(a)
    best = next(f for f in a.findings if f.key == "best/pt")
    assert best.verdict == NOT_SUPPORTED and best.p < 0.05 and best.n == 12
    groups = a.groups.set_index("checkpoint")
    assert best.p_adjusted == groups.loc["zoo-c", "p_vs_best"] == min(groups.loc[["zoo-b", "zoo-c"], "p_vs_best"])
    assert best.effect.name == "mean CER difference (zoo-a − zoo-c)" and best.effect.value == pytest.approx(-0.176, abs=1e-3)
    assert "Holm over 3 pairs, closest to separation (zoo-a vs zoo-c): p = 0.102" in best.sentence()
    assert "Kruskal-Wallis is significant, but Conover-Iman separates no checkpoint" in best.sentence()


def test_every_cer_equal():
    a = analyse(_grid(("zoo-es", "zoo-de", "zoo-random"), ("pt", "nl", "ca"), 3, lambda *_: 1.0))
    _assert_honest(a)
    friedman = next(f for f in a.findings if f.key == "friedman")
    assert friedman.verdict == NOT_SUPPORTED and friedman.statistic == 0 and friedman.p == 1
    assert "every checkpoint has the same CER on every language" in friedman.sentence()
    assert all(f.verdict != SUPPORTED for f in a.findings)


def test_one_language_says_what_cannot_be_tested():
    a = analyse(_grid(("zoo-es", "zoo-random"), ("pt",), 3, lambda c, lang, s: (0.7 if c == "zoo-es" else 1.0)
                      + 0.01 * s))
    _assert_honest(a)
    by_key = {f.key: f for f in a.findings}
    assert by_key["friedman"].verdict == UNTESTABLE and "needs >= 2 languages" in by_key["friedman"].reason
    assert by_key["families"].verdict == UNTESTABLE and "all 1 targets are Indo-European" in by_key["families"].reason
    assert by_key["pair/pt/zoo-es/zoo-random"].verdict == SUPPORTED  # 3 vs 3 runs, fully separated


def test_two_against_one_language_is_untestable_with_the_smallest_p():
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es"), languages=("pt", "nl", "tr"))
    a = analyse(table)
    _assert_honest(a)
    families = next(f for f in a.findings if f.key == "families")
    assert families.verdict == UNTESTABLE
    assert families.sentence() == ("Cannot be tested here whether Indo-European vs other targets differ in CER: "
                                   "2 vs 1 languages: the smallest possible p is 0.667.")


def test_missing_cells_keep_every_test_defined():
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es", "vp-nl"), languages=("de", "es", "pt", "ja"))
    table.loc[(table["checkpoint"] == "vp-es") & (table["language"] == "ja"), "status"] = "failed"
    a = analyse(table)
    _assert_honest(a)
    assert a.typology["p_scipy"].notna().all() and (a.typology["n"] == 15).all()


def test_constant_groups_make_the_post_hoc_untestable_not_significant():
    """Each checkpoint collapses to one CER on every seed: Kruskal-Wallis finds a difference, but Conover-Iman
    has no variation within checkpoints (scikit-posthocs gives p = 0.0 or NaN depending on rounding)."""
    table = _grid(("a", "b", "c"), ("pt",), 4, lambda c, lang, s: {"a": 1.0, "b": 0.9, "c": 0.8}[c])
    p = stats.conover(table)
    assert np.isnan(p.loc["a", "b"]) and np.isnan(p.loc["a", "c"])
    groups = stats.language_groups(table)
    assert not groups["best"].any() and (groups["letters"] == "").all()
    assert "same value on each of its seeds" in groups["untestable"].iloc[0]
    a = analyse(table)
    _assert_honest(a)
    by_key = {f.key: f for f in a.findings}
    assert by_key["kruskal/pt"].verdict == SUPPORTED
    assert by_key["best/pt"].verdict == UNTESTABLE
    assert stats.wins(groups)["languages"].eq(0).all()


def test_a_sweep_analyses_the_most_frequent_value_and_tests_sensitivity():
    base = synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es", "hubert", "wavlm"), languages=("de", "ja"))
    other = base.assign(**{"setting.learning_rate": 1e-4})
    a = analyse(pd.concat([base, other]))
    _assert_honest(a)
    assert set(a.runs["setting.learning_rate"]) == {6e-5}  # a tie: the smaller value, compared as numbers
    sensitivity = [f for f in a.findings if f.key.startswith("sensitivity/")]
    assert len(sensitivity) == 1 and sensitivity[0].n == 5


# --- the Finding type and rendering ----------------------------------------------------------------------


def test_only_a_supported_finding_can_state_a_claim_or_a_direction():
    common = dict(key="k", question="a and b differ", test="t", unit="runs", n=3, alpha=0.05)
    with pytest.raises(ValueError, match="claim"):
        Finding(**common, verdict=NOT_SUPPORTED, claim="a is lower")
    with pytest.raises(ValueError, match="direction"):
        Finding(**common, verdict=NOT_SUPPORTED, sign=-1)
    with pytest.raises(ValueError, match="say why"):
        Finding(**common, verdict=UNTESTABLE)
    with pytest.raises(ValueError, match="claim"):
        Finding(**common, verdict=SUPPORTED)
    assert Finding(**common, verdict=NOT_SUPPORTED, p=0.3).sentence() == \
        "No evidence that a and b differ (t; p = 0.300; n = 3 runs; alpha 0.05)."
    assert Finding(**common, verdict=UNTESTABLE, reason="one seed").sentence() == \
        "Cannot be tested here whether a and b differ: one seed."


def test_findings_serialize_without_nan():
    import json

    a = analyse(_grid(("zoo-es", "zoo-random"), ("pt",), 1, lambda c, lang, s: 0.5 if c == "zoo-es" else 1.0))
    text = json.dumps([f.to_json() for f in a.findings], allow_nan=False)
    assert "cannot be tested here" in text


def test_ties_share_the_top_and_are_named_together():
    cells = {}
    for language in ("pt", "nl", "tr"):
        cells[("zoo-es", language)] = [0.60, 0.61, 0.62, 0.605]
        cells[("zoo-de", language)] = [0.601, 0.611, 0.621, 0.606]
        cells[("zoo-random", language)] = [0.99, 0.995, 0.998, 0.997]
    groups = stats.language_groups(_runs(cells))
    wins = stats.wins(groups).set_index("checkpoint")
    assert wins.loc["zoo-es", "rank"] == wins.loc["zoo-de", "rank"] == 1 and wins.loc["zoo-random", "rank"] == 3
    sentence = findings.wins_sentence(stats.wins(groups), 0.05, "holm", runs=_runs(cells))
    assert "of 3 languages: zoo-de on 3, zoo-es on 3; no checkpoint is the sole best" in sentence


def test_the_wins_tally_names_its_n_and_calls_no_checkpoint_best_overall():
    """zoo-es is tied best on 3 languages and zoo-de on 2: a count of per-language verdicts, which no test
    across languages compares, so no 'most' and no overall best; n counts each language's runs."""
    cells = {}
    for language, gap in (("pt", 0.001), ("nl", 0.001), ("tr", 0.2)):
        cells[("zoo-es", language)] = [0.60, 0.61, 0.62, 0.605]
        cells[("zoo-de", language)] = [0.60 + gap, 0.61 + gap, 0.62 + gap, 0.605 + gap]
        cells[("zoo-random", language)] = [0.99, 0.995, 0.998, 0.997]
    sentence = findings.wins_sentence(stats.wins(stats.language_groups(_runs(cells))), 0.05, "holm", runs=_runs(cells))
    assert sentence == ("Per language (Conover-Iman over runs, n = 12 runs each, Holm, alpha 0.05), best or tied best "
                        "(not significantly above the lowest mean), of 3 languages: zoo-es on 3, zoo-de on 2; sole best "
                        "(significantly below every other checkpoint): zoo-es on 1 (a tally of per-language tests, not "
                        "a test across languages).")


def test_nemenyi_with_few_languages_says_why_it_separates_nothing():
    order = {"pt": ("zoo-es", "zoo-de", "zoo-multi4", "zoo-romance"), "nl": ("zoo-de", "zoo-multi4", "zoo-es",
             "zoo-romance"), "tr": ("zoo-multi4", "zoo-es", "zoo-de", "zoo-romance")}

    def cer(c, lang, s):  # a different best on each language; random init last everywhere
        return 0.99 if c == "zoo-random" else 0.6 + 0.05 * order[lang].index(c) + 0.01 * s

    a = analyse(_grid(("zoo-es", "zoo-de", "zoo-multi4", "zoo-romance", "zoo-random"), ("pt", "nl", "tr"), 3, cer))
    ranking = next(f for f in a.findings if f.key == "ranking")
    assert ranking.verdict == NOT_SUPPORTED
    assert "with 3 languages two checkpoints must differ by CD = 3.52 in average rank" in ranking.reason
    from crossling.report import make_figures

    caption = make_figures(a)["critical_difference"][0]
    assert "CD = 3.52" in caption and "letters of the CER table" in caption


def test_a_ranking_claim_cites_its_weakest_separation_with_an_effect():
    """a ranks first, b second, c third, d last on 12 languages: Nemenyi separates c and d from a, and the
    claim rests on the weaker of the two (a vs c), not the stronger (a vs d)."""
    order = ("zoo-a", "zoo-b", "zoo-c", "zoo-d")
    languages = ("pt", "ca", "nl", "sv-SE", "da", "is", "de", "en", "es", "fr", "it", "ro")
    a = analyse(_grid(order, languages, 3, lambda c, lang, s: 0.5 + 0.1 * order.index(c) + 0.01 * s))
    _assert_honest(a)
    ranking = next(f for f in a.findings if f.key == "ranking")
    assert ranking.verdict == SUPPORTED and ranking.n == 12 and "above zoo-c and zoo-d" in ranking.claim
    nemenyi = a.friedman.nemenyi
    assert ranking.p_adjusted == float(nemenyi.loc["zoo-a", "zoo-c"]) > float(nemenyi.loc["zoo-a", "zoo-d"])
    assert "weakest separation (zoo-a vs zoo-c)" in ranking.sentence()
    assert ranking.effect.name == "average rank difference (zoo-c − zoo-a)" and ranking.effect.value == 2.0


def test_subgroup_and_gender_use_languages_and_cells_as_units():
    table = synthetic_table(checkpoints=("vp-es", "vp-nl", "xlsr53"), languages=("pt", "ca", "sv-SE", "da", "de", "en"))
    a = analyse(table)
    _assert_honest(a)
    subgroup = next(f for f in a.findings if f.key == "subgroup")
    assert subgroup.n == 6 and subgroup.unit.startswith("target languages") and subgroup.verdict == SUPPORTED
    assert "better (lower relative CER)" in subgroup.claim
    gender = next(f for f in a.findings if f.key == "gender")
    assert gender.n == 18 and gender.unit.startswith("checkpoint x language cells")  # not 54 runs


def test_typology_distances_are_one_holm_family():
    a = analyse(synthetic_table(checkpoints=("vp-es", "vp-nl", "vp-fr", "xlsr53"), languages=("pt", "nl", "ja", "th",
                                                                                                 "de")))
    typology = [f for f in a.findings if f.key.startswith("typology/")]
    assert len(typology) == 5 and all(f.adjustment == "Holm over 5 distances" for f in typology)
    assert all(f.p_adjusted >= f.p for f in typology)


def test_an_interval_that_excludes_its_estimate_is_not_reported():
    assert findings.Effect.with_ci("e", 0.93, (0.931, 0.962)).text() == "e 0.93"
    assert findings.Effect.with_ci("e", 0.5, (0.4, 0.7)).text() == "e 0.50 [95 % CI 0.40, 0.70]"
    assert math.isnan(findings.Effect.with_ci("e", 0.5, (math.nan, 0.7)).low)
    low, high = findings.bootstrap_ci([np.array([0.1, 0.2, 0.3, 0.25]), np.array([0.9, 1.0, 0.95, 0.97])],
                                      findings._mean_difference, seed=0)
    assert -0.85 < low < -0.72 < high < -0.65
