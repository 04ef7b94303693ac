import math

import pytest
from rank_factory import make_record, results_for

from crossling.rankcheck import agreement, agreements, compute_sentence, estimator_summary, verdict

CERS = {"a": [0.50, 0.52], "b": [0.60, 0.61], "c": [0.70, 0.69], "d": [0.80, 0.82], "e": [0.99, 1.0]}


def test_perfect_agreement_has_the_exact_permutation_floor():
    record = make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0})
    found = agreement(record, results_for(CERS))
    assert found.spearman == pytest.approx(1.0) and found.kendall == pytest.approx(1.0)
    assert found.p_floor == pytest.approx(1 / 120)
    assert found.spearman_p == pytest.approx(1 / 120) and found.kendall_p == pytest.approx(1 / 120)
    assert found.spearman_low <= 1.0 and found.spearman_high == pytest.approx(1.0)
    text = verdict(found)
    assert "agrees with fine-tuning" in text and "1/5! = 0.0083" in text and "n = 5 checkpoints" in text
    assert "not how the estimator would rank other checkpoints" in text


def test_reversed_ranking_is_no_evidence_of_agreement():
    record = make_record({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0})
    found = agreement(record, results_for(CERS))
    assert found.spearman == pytest.approx(-1.0) and found.spearman_p == pytest.approx(1.0)
    assert verdict(found).startswith("logme on pt: no evidence")


def test_one_swap_is_said_with_its_p_value():
    record = make_record({"a": 5.0, "b": 3.0, "c": 4.0, "d": 2.0, "e": 1.0})  # b and c swapped
    found = agreement(record, results_for(CERS))
    assert found.spearman == pytest.approx(0.9) and found.kendall == pytest.approx(0.8)
    # rho >= 0.9 and tau >= 0.8 both mean at most one adjacent swap: the identity and 4 swaps of 120 orders
    assert found.spearman_p == pytest.approx(5 / 120) and found.kendall_p == pytest.approx(5 / 120)


def test_three_checkpoints_cannot_be_tested_at_five_percent():
    record = make_record({"a": 3.0, "b": 2.0, "c": 1.0})
    found = agreement(record, results_for({k: CERS[k] for k in "abc"}))
    assert found.p_floor == pytest.approx(1 / 6)
    assert "cannot be tested at alpha 0.05" in verdict(found)


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


def test_estimator_summary_counts_ties_for_each_and_names_no_winner_by_test():
    records = {"pt": make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0})}
    found = agreements(records, results_for(CERS))
    text = estimator_summary(found)
    assert "logme 1, logme-probe 1, probe-loss 1, probe-cer 1" in text  # all tie at rho = 1
    assert "not tested" in text


def test_seed_agreement_is_fine_tunings_own_reproducibility():
    record = make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0})
    assert agreement(record, results_for(CERS)).seed_spearman == pytest.approx(1.0)  # both seeds in one order
    shuffled = {"a": [0.5, 0.8], "b": [0.6, 0.7], "c": [0.7, 0.6], "d": [0.8, 0.5], "e": [1.0, 1.0]}
    found = agreement(record, results_for(shuffled))
    assert found.seed_spearman == pytest.approx(0.0, abs=1e-12)  # seed 1 reverses the first four: 1 - 6 * 20 / 120
    assert "agrees across its seeds with ρ = 0.00" in verdict(found)
    single = agreement(record, results_for({k: v[:1] for k, v in CERS.items()}))
    assert math.isnan(single.seed_spearman) and "across its seeds" not in verdict(single)


def test_pooled_test_permutes_within_languages_exactly():
    import itertools

    import numpy as np

    from crossling.rankcheck import _spearman, pooled, pooled_sentence

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
    assert "pooled: the rankings agree" in pooled_sentence(result) and "3 languages" in pooled_sentence(result)
    assert pooled([a for a in found if a.language == "pt"], records, table, "logme") is None  # one language
