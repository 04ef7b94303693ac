import json
from dataclasses import replace

import pytest
from rank_factory import make_record

from crossling.errors import CorruptArtifactError, DataError
from crossling.rankrecord import RankRecord, ranking, read_record, write_record

# --- the ranking ---------------------------------------------------------------------------------------


def test_separated_scores_get_their_own_ranks():
    places = ranking(make_record({"a": 1.0, "b": 3.0, "c": 2.0}))
    assert [(p.rank, p.checkpoint) for p in places] == [(1, "b"), (2, "c"), (3, "a")]
    assert all(not p.not_separable_from for p in places)


def test_checkpoints_the_estimator_cannot_separate_share_a_rank_in_the_given_order():
    # equal scores: shared rank, the order given (z before a), never the alphabet
    places = ranking(make_record({"z": 2.0, "a": 2.0, "m": 1.0}))
    assert [(p.rank, p.checkpoint) for p in places] == [(1, "z"), (1, "a"), (3, "m")]
    assert places[0].not_separable_from == ("a",) and places[1].not_separable_from == ("z",)
    # close scores with noisy replicates: not separable either, though the point estimates differ
    noisy = ranking(make_record({"a": 2.0, "b": 2.01, "c": 1.0}, spread=0.3))
    assert [p.rank for p in noisy] == [1, 1, 3] and noisy[0].not_separable_from == ("a",)


def test_a_noisy_checkpoint_nothing_beats_is_listed_with_the_best():
    from rank_factory import estimate

    record = make_record({"a": 3.0, "b": 2.0, "c": 1.9})
    noisy = replace(record.checkpoints[2], estimates=tuple(estimate(e.estimator, 1.9, spread=3.0, seed=7)
                                                           for e in record.checkpoints[2].estimates))
    places = ranking(replace(record, checkpoints=(*record.checkpoints[:2], noisy)))
    assert [(p.checkpoint, p.rank) for p in places] == [("a", 1), ("c", 1), ("b", 2)]


def test_paired_replicates_separate_what_unpaired_intervals_would_not():
    # the replicates share a large common noise (same utterances drawn): intervals overlap, differences do not
    places = ranking(make_record({"a": 2.0, "b": 2.1}, spread=0.01))
    assert places[0].low < places[1].high  # the two 95 % intervals overlap
    assert [p.rank for p in places] == [1, 2]


def test_record_round_trips_with_its_schema_version(tmp_path):
    record = make_record({"a": 1.0, "b": 2.0})
    write_record(record, tmp_path / "rank.json")
    assert json.loads((tmp_path / "rank.json").read_text())["schema"] == 1
    assert read_record(tmp_path / "rank.json") == record
    with pytest.raises(DataError, match="no rank record"):
        read_record(tmp_path / "absent.json")


def test_a_record_written_before_schema_versions_is_read():
    values = make_record({"a": 1.0, "b": 2.0}).to_json()
    del values["schema"]
    assert RankRecord.from_json(values, "old.json") == make_record({"a": 1.0, "b": 2.0})


@pytest.mark.parametrize("spoil, message", [
    (lambda v: v["checkpoints"][0]["estimates"][0].pop("replicates"), r"rank.json checkpoints\[0\] estimates\[0\].*replicates"),
    (lambda v: v["checkpoints"][1].update(dim="64"), r"checkpoints\[1\]: dim must be int"),
    (lambda v: v.update(extra=1), "extra"),
    (lambda v: v["checkpoints"][0]["estimates"][0].update(estimator="logmee"), "'logmee' is not one of"),
    (lambda v: v["checkpoints"][0]["estimates"][0].update(layer=7), "layer 7 is not one of the 2 scored layers"),
    (lambda v: v["checkpoints"][0]["estimates"][0].update(replicates=[1.0, 2.0]), "replicates differ in number"),
    (lambda v: v.update(schema=9), "schema version 9"),
    (lambda v: v.update(checkpoints={}), "checkpoints must be a list"),
])
def test_a_corrupt_record_names_the_file_and_the_key(tmp_path, spoil, message):
    values = make_record({"a": 1.0, "b": 2.0}).to_json()
    spoil(values)
    (tmp_path / "rank.json").write_text(json.dumps(values))
    with pytest.raises(CorruptArtifactError, match=message):
        read_record(tmp_path / "rank.json")


def test_record_seconds_add_the_sample_and_each_checkpoint():
    record = make_record({"a": 1.0, "b": 2.0}, extract_seconds=3.0)
    assert record.seconds("logme") == pytest.approx(1.0 + 2 * (3.0 + 0.5))


def test_gap_to_the_best_has_the_paired_sd():
    places = ranking(make_record({"a": 2.0, "b": 2.1}, spread=0.01))
    assert places[0].gap == 0.0 and places[1].gap == pytest.approx(-0.1)
    assert places[1].gap_sd < 0.05 < places[1].sd  # the shared spread cancels in the difference
