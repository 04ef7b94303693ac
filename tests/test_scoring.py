import math

import pytest

from crossling.scoring import Scores, score, score_by_group, score_pair, scores_record


def test_pair_counts_characters_and_words():
    s = score_pair("the cat sat", "the bat sat down")
    assert (s.char_edits, s.chars) == (1 + 5, 11)  # c->b, then " down" inserted
    assert (s.word_edits, s.words, s.utterances) == (2, 3, 1)


def test_corpus_rate_is_summed_edits_over_summed_length_not_mean_of_rates():
    refs, hyps = ["ab", "abcdefghij"], ["xb", "abcdefghij"]
    s = score(refs, hyps)
    assert s.cer == pytest.approx(1 / 12)
    assert s.cer != pytest.approx((0.5 + 0.0) / 2)
    assert s.wer == pytest.approx(1 / 2)


def test_empty_hypothesis_counts_every_reference_character():
    s = score(["abc de"], [""])
    assert s.cer == 1.0 and s.wer == 1.0


def test_scores_add_and_serialize_with_counts():
    total = Scores(1, 10, 1, 2, 1) + Scores(2, 10, 0, 3, 1)
    assert total == Scores(3, 20, 1, 5, 2)
    d = total.to_dict()
    assert d["cer"] == pytest.approx(0.15) and d["chars"] == 20 and d["utterances"] == 2


def test_no_reference_text():
    assert Scores().cer == 0.0
    assert math.isinf(Scores(char_edits=3).cer)
    assert Scores(char_edits=3).to_dict()["cer"] is None


def test_by_group_skips_unknown_and_sums_back_to_total():
    refs, hyps = ["aa", "bb", "cc", "dd"], ["aa", "b", "", "dd"]
    groups = score_by_group(refs, hyps, ["female", "male", "", "male"])
    assert set(groups) == {"female", "male"}
    assert groups["male"] == Scores(1, 4, 1, 2, 2)
    record = scores_record(refs, hyps, ["female", "male", "", "male"])
    assert record["chars"] == 8 and record["by_gender"]["female"]["cer"] == 0.0
    assert "by_gender" not in record["by_gender"]["male"]


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        score(["a"], [])


def test_an_emitted_unknown_token_is_one_wrong_character():
    from crossling.scoring import for_scoring

    assert score_pair("straße", for_scoring("stra<unk>e")).char_edits == 1
    assert score_pair("<unk>", for_scoring("<unk>")).char_edits == 5  # never matches a reference
