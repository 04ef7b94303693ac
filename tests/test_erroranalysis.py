"""Error analysis over runs' hypotheses: worst utterances, character edits that add up to the CER counts,
CER by utterance length, the best and the worst checkpoint of each language; all without torch."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from crossling import paths
from crossling.erroranalysis import (
    SPACE,
    cer_by_length,
    character_edits,
    extreme_checkpoints,
    length_bins,
    median_run,
    read_hypotheses,
    study_error_analysis,
    top_edits,
    worst_utterances,
)
from crossling.errors import DataError
from crossling.scoring import for_scoring, score_pair


def _write_run(run_dir, pairs, split="test"):
    rows = []
    for k, (reference, hypothesis) in enumerate(pairs):
        counts = score_pair(reference, for_scoring(hypothesis))
        rows.append({"id": f"u{k}", "reference": reference, "hypothesis": hypothesis,
                     "char_edits": counts.char_edits, "chars": counts.chars, "word_edits": counts.word_edits,
                     "words": counts.words, "speaker": "s", "gender": "female"})
    path = paths.run_hypotheses_path(run_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


PAIRS = [("die katze", "di kaze"), ("ein haus", "ein haus"), ("guten tag", "gutn<unk>tag"), ("ja", "jaa"),
         ("das ist ein langer satz", "das ist ein langer sats")]


def test_character_edits_add_up_to_the_counted_errors(tmp_path):
    _write_run(tmp_path, PAIRS)
    hypotheses = read_hypotheses(tmp_path)
    edits = character_edits(hypotheses)
    assert edits["count"].sum() == hypotheses["char_edits"].sum()  # the same alignment CER counts
    as_set = {(r.operation, r.reference, r.hypothesis): r.count for r in edits.itertuples()}
    assert as_set[("deletion", "e", "")] == 2 and as_set[("deletion", "t", "")] == 1
    assert as_set[("insertion", "", "a")] == 1 and as_set[("substitution", "z", "s")] == 1
    assert as_set[("substitution", SPACE, "\ufffd")] == 1  # <unk> is one wrong character, a space reads ␣
    top = top_edits(edits, n=1)
    assert sorted(top["operation"]) == ["deletion", "insertion", "substitution"]
    assert top["share"].sum() <= 1 and top.loc[top["operation"] == "deletion", "count"].iloc[0] == 2


def test_worst_utterances_come_first(tmp_path):
    _write_run(tmp_path, PAIRS)
    worst = worst_utterances(read_hypotheses(tmp_path), n=3)
    assert worst["id"].tolist() == ["u3", "u0", "u2"]  # 1/2, then 2/9 twice: file order breaks that tie
    assert worst.loc[0, "cer"] == pytest.approx(0.5) and list(worst.columns)[:3] == ["id", "reference", "hypothesis"]
    assert "u1" not in worst_utterances(read_hypotheses(tmp_path), n=10)["id"].tolist()  # no error, not listed


def test_cer_by_length_bins_cover_every_utterance_once(tmp_path):
    _write_run(tmp_path, PAIRS)
    hypotheses = read_hypotheses(tmp_path)
    bins = length_bins(hypotheses["chars"], bins=2)
    assert bins == [(2, 9), (23, 23)]  # lengths 2, 8, 9, 9, 23 split at their median
    frame = cer_by_length(hypotheses, bins)
    assert frame["length_bin"].tolist() == ["2–9", "23"] and frame["utterances"].tolist() == [4, 1]
    long = hypotheses[hypotheses["chars"] <= 9]
    assert frame.loc[0, "cer"] == pytest.approx(long["char_edits"].sum() / long["chars"].sum())  # corpus-level
    assert length_bins(pd.Series([7, 7, 7])) == [(7, 7)] and cer_by_length(hypotheses.head(1), [(7, 7)])["cer"].isna().all()


def test_missing_hypotheses_are_a_data_error(tmp_path):
    with pytest.raises(DataError, match="hypotheses-test.jsonl: no hypotheses"):
        read_hypotheses(tmp_path)


def _table(rows):
    return pd.DataFrame(rows, columns=["run_id", "checkpoint", "language", "seed", "status", "cer"])


def test_best_and_worst_checkpoints_keep_ties_together():
    table = _table([("a0", "a", "de", 0, "done", 0.2), ("b0", "b", "de", 0, "done", 0.2),
                    ("c0", "c", "de", 0, "done", 0.5), ("d0", "d", "de", 0, "failed", None)])
    extremes = extreme_checkpoints(table)
    assert extremes[extremes["role"] == "best"]["checkpoint"].tolist() == ["a", "b"]
    assert extremes[extremes["role"] == "worst"]["checkpoint"].tolist() == ["c"]


def test_the_median_run_represents_a_cell():
    runs = _table([("x0", "x", "de", 0, "done", 0.9), ("x1", "x", "de", 1, "done", 0.3),
                   ("x2", "x", "de", 2, "done", 0.4)])
    assert median_run(runs)["run_id"] == "x2"


def test_a_study_error_analysis_from_its_store(tmp_path):
    good = [("die katze", "die katze"), ("ein haus", "ein hau"), ("guten tag", "guten tag")]
    bad = [("die katze", "d"), ("ein haus", ""), ("guten tag", "gtn tg")]
    rows = []
    for seed in (0, 1, 2):
        for checkpoint, pairs, cer in (("good", good, 0.1 + seed / 100), ("bad", bad, 0.8 + seed / 100)):
            run_id = f"{checkpoint}-de-s{seed}"
            _write_run(paths.store_run_dir(tmp_path, run_id), pairs)
            rows.append((run_id, checkpoint, "de", seed, "done", cer))
    analysis = study_error_analysis(_table(rows), tmp_path, worst=2, edits=3, bins=2)
    worst = analysis.worst
    assert set(worst["role"]) == {"best", "worst"} and (worst["seed"] == 1).all()  # the median seed
    assert worst[worst["role"] == "worst"]["id"].tolist()[0] == "u1"  # 'ein haus' -> '' : CER 1
    edits = analysis.edits
    assert edits.loc[edits["checkpoint"] == "good", "count"].sum() == 3 and (edits["runs"] == 3).all()  # pooled
    by_length = analysis.by_length
    assert by_length.groupby("checkpoint")["utterances"].sum().tolist() == [9, 9]
    assert list(analysis.frames()) == ["errors_worst_utterances", "errors_character_edits", "errors_cer_by_length"]
    for frame in analysis.frames().values():
        assert list(frame.columns[:3]) == ["language", "role", "checkpoint"]
        assert pd.read_csv(pd.io.common.StringIO(frame.to_csv(index=False))).shape == frame.shape


def test_analysis_half_never_imports_torch():
    code = ("import sys; import crossling.erroranalysis, crossling.metrics, crossling.markup, crossling.figures; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
