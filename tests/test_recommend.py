"""The recommender on a held-out language, on measured languages, without results, on partial grids."""

import math

import numpy as np
import pandas as pd
import pytest
from analysis_factory import synthetic_table
from scipy import stats as st

from crossling.recommend import leave_one_language_out, recommend
from crossling.registry import all_checkpoints


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


def test_held_out_language_is_predicted_from_its_neighbours(table):
    result = recommend("pt", table[table["language"] != "pt"])
    ranked = result.table()
    actual = table[table["language"] == "pt"].groupby("checkpoint")["cer"].mean()
    assert set(ranked["basis"]) == {"predicted"}
    assert ranked["checkpoint"].iloc[0] == actual.idxmin() == "xlsr300m"
    assert st.spearmanr(ranked["predicted"], actual[ranked["checkpoint"]]).statistic > 0.8
    assert np.mean(np.abs(ranked["predicted"].to_numpy() - actual[ranked["checkpoint"]].to_numpy())) < 0.05
    order = list(ranked["checkpoint"])
    assert order.index("vp-es") < order.index("vp-nl")  # the Romance neighbour transfers better
    assert ranked["uncertainty"].notna().all() and (ranked["uncertainty"] > 0).all()
    assert "es" in ranked["evidence"].iloc[0]
    assert result.neighbours[0][0] in {"es", "it", "fr"} and math.isfinite(result.loo_rmse)


def test_measured_language_uses_its_runs(table):
    result = recommend("pt", table)
    top = result.candidates[0]
    runs = table[(table["language"] == "pt") & (table["checkpoint"] == top.checkpoint)]["cer"]
    assert top.basis == "measured"
    assert top.predicted == pytest.approx(runs.mean())
    assert top.uncertainty == pytest.approx(runs.std(ddof=1) / math.sqrt(3))
    assert "3 run(s)" in top.evidence
    ranks = [c.rank for c in result.candidates]
    assert ranks == sorted(ranks) and ranks[0] == 1


def test_measured_ranks_come_from_the_tests_and_ties_are_shared():
    """Rank = 1 + the number of checkpoints with a significantly lower CER (Conover-Iman, Holm): two
    checkpoints no test separates share rank 1 whatever their names and means; a clearly worse one is 3rd.
    With the alphabet or the means deciding, "b-close" (higher mean) would be 2nd."""
    rows = [("b-close", 0.50 + d) for d in (0.00, 0.02, 0.04, 0.06)] + \
           [("a-best", 0.49 + d) for d in (0.00, 0.03, 0.05, 0.06)] + \
           [("c-worse", 0.90 + d) for d in (0.00, 0.01, 0.02, 0.03)]
    runs = pd.DataFrame([{"language": "pt", "checkpoint": c, "seed": i % 4, "cer": v, "status": "done"}
                         for i, (c, v) in enumerate(rows)])
    result = recommend("pt", runs)
    assert {c.checkpoint: c.rank for c in result.candidates} == {"a-best": 1, "b-close": 1, "c-worse": 3}
    assert result.best() == ("a-best", "b-close")
    sentences = result.sentences()
    assert sentences[0].startswith("Lowest CER on pt: a-best and b-close (none is significantly lower than another)")
    assert any(s.startswith("No evidence that a-best and b-close differ in CER on pt") for s in sentences)
    assert any(s.startswith("On pt, b-close has a lower CER than c-worse") for s in sentences)
    payload = result.to_dict()
    assert payload["best"] == ["a-best", "b-close"] and len(payload["findings"]) == 3


def test_one_run_per_checkpoint_is_said_to_be_untestable_not_tied():
    """With one seed no pair can be tested: the head says so, and claims no lowest CER and no correction."""
    runs = pd.DataFrame([{"language": "pt", "checkpoint": c, "seed": 0, "cer": v, "status": "done"}
                         for c, v in (("zoo-es", 0.5), ("zoo-de", 0.6), ("zoo-random", 0.9))])
    head = recommend("pt", runs).sentences()[0]
    assert head == ("Cannot be tested here which checkpoint has the lowest CER on pt: one run per checkpoint: no "
                    "variation within checkpoints to test against.")


def test_a_sole_rank_one_not_below_every_other_says_so():
    """Significance is not transitive: a below b and b below c, but a vs c not significant. a alone has
    rank 1 (nothing is significantly lower), yet 'lowest CER' must not read as a below everything."""
    from crossling.findings import NOT_SUPPORTED, SUPPORTED, Finding
    from crossling.recommend import Candidate, Recommendation

    def pair(a, b, verdict):
        return Finding(key=f"pair/pt/{a}/{b}", question=f"{a} and {b} differ in CER on pt", test="Conover-Iman",
                       unit="runs", n=8, alpha=0.05, verdict=verdict, p_adjusted=0.01 if verdict == SUPPORTED else 0.2,
                       adjustment="Holm over 3 pairs", subject=("pt", a, b), sign=-1 if verdict == SUPPORTED else 0,
                       claim=f"on pt, {a} has a lower CER than {b}" if verdict == SUPPORTED else "")

    candidates = tuple(Candidate(rank=r, checkpoint=c, predicted=m, uncertainty=0.01, score=m, basis="measured",
                                 evidence="", pretrain_distance=math.nan)
                       for r, c, m in ((1, "a", 0.1), (2, "b", 0.2), (2, "c", 0.3)))
    findings = (pair("a", "b", SUPPORTED), pair("a", "c", NOT_SUPPORTED), pair("b", "c", SUPPORTED))
    head = Recommendation("pt", candidates, (), math.nan, "", findings=findings).sentences()[0]
    assert head == ("Lowest CER on pt: a (no checkpoint significantly lower, though not significantly below every "
                    "other) — Conover-Iman, Holm over 3 pairs, alpha 0.05.")
    full = Recommendation("pt", candidates, (), math.nan, "", findings=(findings[0], pair("a", "c", SUPPORTED),
                                                                          findings[2]))
    assert full.sentences()[0] == "Lowest CER on pt: a — Conover-Iman, Holm over 3 pairs, alpha 0.05."


def test_no_direction_when_the_language_test_is_not_significant():
    """Every CER within noise: one shared rank, no sentence names a direction."""
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([{"language": "pt", "checkpoint": c, "seed": s, "cer": 0.5 + rng.normal(0, 0.05),
                          "status": "done"} for c in ("x", "y", "z") for s in range(3)])
    result = recommend("pt", runs)
    assert {c.rank for c in result.candidates} == {1}
    assert all("lower CER than" not in s and "higher CER than" not in s for s in result.sentences())


def test_predicted_and_prior_orders_are_not_tests_and_equal_scores_share_a_rank(table):
    predicted = recommend("pt", table[table["language"] != "pt"])
    assert "not a tested difference" in predicted.notes and predicted.sentences() == []
    from crossling.recommend import _ranked

    rows = [dict(checkpoint=name, predicted=0.5, uncertainty=0.1, score=0.5, basis="predicted", evidence="",
                 pretrain_distance=0.1) for name in ("b", "a")] + \
           [dict(checkpoint="c", predicted=0.6, uncertainty=0.1, score=0.6, basis="predicted", evidence="",
                 pretrain_distance=0.1)]
    assert [(c.checkpoint, c.rank) for c in _ranked(rows)] == [("a", 1), ("b", 1), ("c", 3)]


def test_alias_spelling_matches_the_results(table):
    assert recommend("sv", table).candidates[0].basis == "measured"
    assert recommend("sv", table).language == "sv-SE"


def test_language_outside_the_results_and_the_study(table):
    result = recommend("gl", table)  # Galician: never measured, close to Portuguese and Spanish
    assert {c.basis for c in result.candidates} == {"predicted"}
    assert result.neighbours[0][0] in {"pt", "es"}
    assert result.candidates[-1].checkpoint == "random-init"


def test_language_without_typology_still_ranks(table):
    result = recommend("tok", table)
    assert all(math.isfinite(c.predicted) for c in result.candidates)
    assert all(math.isnan(d) for _, d, _ in result.neighbours)


def test_no_results_gives_a_prior_over_every_registered_checkpoint():
    result = recommend("pt")
    names = [c.checkpoint for c in result.candidates]
    assert set(names) == {c.alias for c in all_checkpoints()}
    assert {c.basis for c in result.candidates} == {"prior"}
    assert all(math.isnan(c.predicted) for c in result.candidates)
    untrained = {c.alias for c in all_checkpoints() if not c.pretrain_hours}
    assert "random-init" in untrained
    assert set(names[-len(untrained):]) == untrained  # no pre-training ranks below every pre-trained model
    assert names.index("vp-es") < names.index("vp-nl")
    assert names.index("xlsr53") < names.index("lv60")


def test_partial_results_exclude_failed_runs_and_unmeasured_checkpoints(table):
    partial = table[table["language"] != "pt"].copy()
    partial.loc[partial["checkpoint"] == "hubert", "status"] = "failed"
    partial.loc[partial.index[:5], "cer"] = np.nan
    names = [c.checkpoint for c in recommend("pt", partial).candidates]
    assert "hubert" not in names and len(names) == 15


def test_leave_one_language_out_is_exact_when_languages_do_not_matter():
    effects = {"a": 0.1, "b": 0.2, "c": 0.3}
    matrix = pd.DataFrame({c: [v] * 4 for c, v in effects.items()}, index=["de", "nl", "ja", "es"])
    matrix = matrix.rename_axis(index="language", columns="checkpoint")
    assert leave_one_language_out(matrix).to_numpy() == pytest.approx([0.0, 0.0, 0.0])


def test_recommendation_serialises(table):
    payload = recommend("pt", table[table["language"] != "pt"]).to_dict()
    assert payload["language"] == "pt" and len(payload["candidates"]) == 16
    assert {"language", "distance", "weight"} == set(payload["neighbours"][0])


def test_recommend_cli(table, tmp_path, capsys):
    import json

    from crossling.cli import main

    table[table["language"] != "pt"].to_csv(tmp_path / "results.csv", index=False)
    assert main(["recommend", "--language", "pt", "--results", str(tmp_path / "results.csv"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["candidates"][0]["checkpoint"] == "xlsr300m" and payload["candidates"][0]["basis"] == "predicted"
    assert main(["recommend", "--language", "pt", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "prior" in lines[0] and len(lines) == 4 and lines[1].lstrip().startswith("1. ")


# --- from a rank record of the user's own audio --------------------------------------------------------


def test_rank_record_ranks_an_unmeasured_language_and_says_so(table):
    from rank_factory import make_record

    record = make_record({"xlsr53": 2.0, "vp-es": 2.0, "random-init": 0.5})
    result = recommend("pt", table[table["language"] != "pt"], rank=record)
    assert [(c.rank, c.checkpoint, c.basis) for c in result.candidates] == [
        (1, "xlsr53", "rank"), (1, "vp-es", "rank"), (3, "random-init", "rank")]
    first = result.candidates[0]
    assert "rank score (logme) 2.00000 at layer 1, 0.00000 below the best" in first.evidence
    assert "not separable from vp-es" in first.evidence
    assert ("0 checkpoint(s) score higher beyond the paired bootstrap's 95 % interval of the difference (200 "
            "resamples of 100 utterances)") in first.evidence
    assert "2 checkpoint(s) score higher" in result.candidates[2].evidence
    assert "cer predicted from" in first.evidence and math.isfinite(first.predicted)  # measured elsewhere
    assert "ranked on your own pt audio" in result.notes and "only the checkpoints that were ranked" in result.notes


def test_rank_record_without_results_and_a_measured_language_keeps_measurements_first(table):
    from rank_factory import make_record

    record = make_record({"xlsr53": 1.0, "random-init": 2.0})  # disagrees with the runs on purpose
    alone = recommend("pt", None, rank=record)
    assert [c.checkpoint for c in alone.candidates] == ["random-init", "xlsr53"] and math.isnan(alone.candidates[0].predicted)
    measured = recommend("pt", table, rank=record)
    assert measured.candidates[0].basis == "measured" and measured.candidates[-1].checkpoint == "random-init"
    shown = {c.checkpoint: c.evidence for c in measured.candidates}
    assert "rank score (logme)" in shown["random-init"] and "rank score" not in shown["vp-es"]


def test_rank_record_of_another_language_is_refused(table):
    from rank_factory import make_record

    from crossling.errors import DataError

    with pytest.raises(DataError, match="rank record is for 'nl'"):
        recommend("pt", table, rank=make_record({"xlsr53": 1.0}, language="nl"))


def test_recommend_cli_reads_the_rank_record_of_the_prepared_data(tmp_path, capsys):
    from rank_factory import make_record

    from crossling import paths
    from crossling.cli import main
    from crossling.rankrecord import write_record

    assert main(["recommend", "--language", "pt", "--data", str(tmp_path)]) == 2
    assert "no rank record" in capsys.readouterr().err
    write_record(make_record({"xlsr53": 2.0, "random-init": 1.0}), paths.rank_record_path(tmp_path, "pt"))
    assert main(["recommend", "--language", "pt", "--data", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ranked on your own pt audio" in lines[0]
    assert lines[1].split()[:4] == ["1.", "xlsr53", "2.00000", "score"] and " rank " in lines[1]
