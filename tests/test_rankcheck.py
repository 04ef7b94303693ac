import math

import pytest
from rank_factory import make_record, results_for

from crossling.findings import NOT_SUPPORTED, SUPPORTED, UNTESTABLE
from crossling.rankcheck import (
    agreement,
    agreement_finding,
    agreement_findings,
    agreements,
    compute_sentence,
    estimators_finding,
)

CERS = {"a": [0.50, 0.52], "b": [0.60, 0.61], "c": [0.70, 0.69], "d": [0.80, 0.82], "e": [0.99, 1.0]}


def test_perfect_agreement_has_the_exact_permutation_floor():
    record = make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0})
    found = agreement(record, results_for(CERS))
    assert found.spearman == pytest.approx(1.0) and found.kendall == pytest.approx(1.0)
    assert found.p_floor == pytest.approx(1 / 120)
    assert found.spearman_p == pytest.approx(1 / 120) and found.kendall_p == pytest.approx(1 / 120)
    assert found.spearman_low <= 1.0 and found.spearman_high == pytest.approx(1.0)
    finding = agreement_finding(found)
    assert finding.verdict == SUPPORTED and finding.n == 5 and finding.p == pytest.approx(1 / 120)
    text = finding.sentence()
    assert text.startswith("The ranking by logme before fine-tuning agrees with the fine-tuned order on pt (Kendall τ = 1.00")
    assert "exact one-sided permutation test of Spearman ρ, ρ = 1; p = 0.008" in text and "n = 5 checkpoints" in text
    assert "Spearman ρ (interval re-drawing utterances and seeds, checkpoints fixed) 1.00 [95 % CI" in text
    assert "not how it would rank others" in text


def test_reversed_ranking_is_no_evidence_of_agreement():
    record = make_record({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0})
    found = agreement(record, results_for(CERS))
    assert found.spearman == pytest.approx(-1.0) and found.spearman_p == pytest.approx(1.0)
    finding = agreement_finding(found)
    assert finding.verdict == NOT_SUPPORTED and not finding.claim
    assert finding.sentence().startswith("No evidence that the ranking by logme before fine-tuning agrees")


def test_one_swap_is_said_with_its_p_value():
    record = make_record({"a": 5.0, "b": 3.0, "c": 4.0, "d": 2.0, "e": 1.0})  # b and c swapped
    found = agreement(record, results_for(CERS))
    assert found.spearman == pytest.approx(0.9) and found.kendall == pytest.approx(0.8)
    # rho >= 0.9 and tau >= 0.8 both mean at most one adjacent swap: the identity and 4 swaps of 120 orders
    assert found.spearman_p == pytest.approx(5 / 120) and found.kendall_p == pytest.approx(5 / 120)
    assert agreement_finding(found).verdict == SUPPORTED  # p = 0.042 < 0.05 alone
    # with a second estimator (or language) tested alongside, Holm decides: 2 x 0.042 is not below 0.05
    family = agreement_findings([found, found], family="estimators")
    assert [f.verdict for f in family] == [NOT_SUPPORTED] * 2
    assert family[0].p_adjusted == pytest.approx(10 / 120) and "Holm over 2 estimators" in family[0].sentence()


def test_three_checkpoints_cannot_be_tested_at_five_percent():
    record = make_record({"a": 3.0, "b": 2.0, "c": 1.0})
    found = agreement(record, results_for({k: CERS[k] for k in "abc"}))
    assert found.p_floor == pytest.approx(1 / 6)
    finding = agreement_finding(found)
    assert finding.verdict == UNTESTABLE and finding.sentence().startswith("Cannot be tested here whether the ranking by logme")
    assert "no ordering gives p below 1/3! = 0.1667" in finding.sentence()
    assert "observed: Spearman ρ = 1.00 [" in finding.sentence() and "Kendall τ = 1.00 [" in finding.sentence()


def test_fewer_than_three_measured_checkpoints_give_nothing_and_missing_ones_are_named():
    record = make_record({"a": 3.0, "b": 2.0, "x": 1.0, "y": 0.0})
    assert agreement(record, results_for({"a": [0.5], "b": [0.6]})) is None
    found = agreement(record, results_for({"a": [0.5], "b": [0.6], "x": [0.7]}))
    assert found.missing == ("y",) and found.n == 3


def test_failed_runs_and_other_languages_are_not_measured():
    table = results_for(CERS)
    table.loc[table["checkpoint"] == "e", "status"] = "failed"
    other = results_for({"e": [0.1, 0.1]}, language="nl")
    found = agreement(make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 9.0}),
                      __import__("pandas").concat([table, other]))
    assert found.n == 4 and found.missing == ("e",) and found.spearman == pytest.approx(1.0)


def test_compute_compares_ranking_with_fine_tuning_once_and_all_runs():
    record = make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}, extract_seconds=2.0)
    found = agreement(record, results_for(CERS, wall_seconds=100.0), "probe-loss")
    assert found.rank_seconds == pytest.approx(1.0 + 5 * (2.0 + 0.5))  # sample + (extract + estimator) each
    assert found.finetune_seconds_once == pytest.approx(500.0) and found.finetune_seconds_all == pytest.approx(1000.0)
    assert found.compute_once == pytest.approx(13.5 / 500) and found.runs == 10
    assert "2.7 % of fine-tuning each of the 5 checkpoints once" in compute_sentence(found)


def test_interval_widens_when_replicates_are_noisy():
    scores = {"a": 5.0, "b": 4.9, "c": 4.8, "d": 4.7, "e": 1.0}
    tight = agreement(make_record(scores, spread=0.001), results_for(CERS))
    loose = agreement(make_record(scores, spread=0.5), results_for(CERS))
    assert tight.spearman_low == pytest.approx(1.0)
    assert loose.spearman_low < 0.7 and math.isfinite(loose.spearman_high)


def test_estimators_are_not_compared_by_a_test():
    records = {"pt": make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0})}
    found = agreements(records, results_for(CERS))
    finding = estimators_finding(found)
    assert finding.verdict == UNTESTABLE and "no test compares the estimators" in finding.test
    assert "logme 1.00, logme-probe 1.00, probe-loss 1.00, probe-cer 1.00" in finding.sentence()
    assert estimators_finding([a for a in found if a.estimator == "logme"]) is None


def test_seed_agreement_is_fine_tunings_own_reproducibility():
    record = make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0})
    assert agreement(record, results_for(CERS)).seed_spearman == pytest.approx(1.0)  # both seeds in one order
    shuffled = {"a": [0.5, 0.8], "b": [0.6, 0.7], "c": [0.7, 0.6], "d": [0.8, 0.5], "e": [1.0, 1.0]}
    found = agreement(record, results_for(shuffled))
    assert found.seed_spearman == pytest.approx(0.0, abs=1e-12)  # seed 1 reverses the first four: 1 - 6 * 20 / 120
    assert "agrees across its seeds with ρ = 0.00" in agreement_finding(found).sentence()
    single = agreement(record, results_for({k: v[:1] for k, v in CERS.items()}))
    assert math.isnan(single.seed_spearman) and "across its seeds" not in agreement_finding(single).sentence()


def test_pooled_test_permutes_within_languages_exactly():
    import itertools

    import numpy as np

    from crossling.rankcheck import _spearman, pooled, pooled_finding

    three = {"a": [0.5, 0.52], "b": [0.6, 0.61], "c": [0.9, 1.0]}
    records = {"pt": make_record({"a": 3.0, "b": 2.0, "c": 1.0}, language="pt"),
               "nl": make_record({"a": 3.0, "b": 1.0, "c": 2.0}, language="nl"),  # b and c swapped
               "da": make_record({"a": 3.0, "b": 2.0, "c": 1.0}, language="da")}
    table = __import__("pandas").concat([results_for(three, language=lang) for lang in records])
    found = agreements(records, table)
    result = pooled(found, records, table, "logme")
    assert result.spearman == pytest.approx((1 + 0.5 + 1) / 3) and result.p_floor == pytest.approx(1 / 216)
    measured = -np.array([np.mean(three[c]) for c in "abc"])
    observed = {"pt": [3, 2, 1], "nl": [3, 1, 2], "da": [3, 2, 1]}
    means = [np.mean([_spearman(np.array([observed[lang][i] for i in order])[None], measured[None])[0]
                      for lang, order in zip(observed, orders, strict=True)])
             for orders in itertools.product(itertools.permutations(range(3)), repeat=3)]
    assert result.p == pytest.approx(np.mean(np.array(means) >= result.spearman - 1e-9))  # brute force: 216 orders
    finding = pooled_finding(result)
    assert finding.verdict == SUPPORTED and finding.n == 3 and "18 checkpoint x language pairs" not in finding.unit
    assert finding.sentence().startswith("The rankings by logme agree with the fine-tuned order across 3 languages")
    assert "9 checkpoint x language pairs" in finding.sentence() and math.isfinite(result.low)
    assert pooled([a for a in found if a.language == "pt"], records, table, "logme") is None  # one language
