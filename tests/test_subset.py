"""Exact N-hour seeded subsets and capped dev/test splits."""

import random
from dataclasses import dataclass

import pytest

from crossling.errors import DataError
from crossling.subset import eval_order, seeded_order, take_count, take_hours


@dataclass(frozen=True)
class Item:
    id: str
    duration: float
    speaker: str = "s"


def _items(n=600, seed=1):
    rng = random.Random(seed)
    return [Item(f"clip{i:04d}", rng.uniform(1.0, 9.0), f"spk{i % 7}") for i in range(n)]


def _key(item):
    return item.id


def _total(items):
    return sum(i.duration for i in items)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_total_lands_within_one_clip_of_budget(seed):
    chosen = take_hours(seeded_order(_items(), seed, _key), 0.5, "x")
    total, budget = _total(chosen), 0.5 * 3600
    assert budget <= total < budget + chosen[-1].duration
    assert total - budget < max(i.duration for i in chosen)


def test_same_seed_same_subset_other_seed_different():
    a = take_hours(seeded_order(_items(), 0, _key), 0.3, "x")
    b = take_hours(seeded_order(_items(), 0, _key), 0.3, "x")
    c = take_hours(seeded_order(_items(), 1, _key), 0.3, "x")
    assert [i.id for i in a] == [i.id for i in b]
    assert {i.id for i in a} != {i.id for i in c}


def test_order_does_not_depend_on_input_order():
    items = _items()
    shuffled = list(reversed(items))
    assert seeded_order(items, 5, _key) == seeded_order(shuffled, 5, _key)


def test_not_enough_audio_says_how_many_hours():
    items = [Item(f"c{i}", 360.0) for i in range(5)]  # 0.5 h in all
    with pytest.raises(DataError, match=r"pt/train.tsv: asked for 1 h .* only 0\.5000 h \(1800\.0 s\)"):
        take_hours(items, 1.0, "pt/train.tsv")


def test_per_speaker_cap_respected():
    chosen = take_hours(seeded_order(_items(), 0, _key), 0.5, "x", max_hours_per_speaker=0.1)
    per_speaker = {}
    for item in chosen:
        per_speaker[item.speaker] = per_speaker.get(item.speaker, 0) + item.duration
    assert max(per_speaker.values()) <= 0.1 * 3600
    assert _total(chosen) >= 0.5 * 3600


def test_per_speaker_cap_shortfall_is_an_error():
    items = [Item(f"c{i}", 100.0, "one") for i in range(100)]
    with pytest.raises(DataError, match="per-speaker cap"):
        take_hours(items, 0.5, "x", max_hours_per_speaker=0.1)


def test_take_hours_is_lazy():
    consumed = []

    def stream():
        for item in _items():
            consumed.append(item)
            yield item

    chosen = take_hours(stream(), 0.1, "x")
    assert len(consumed) == len(chosen) < len(_items())


def test_take_count_first_k_and_all():
    items = _items(10)
    assert take_count(items, None) == items
    assert take_count(items, 3) == items[:3]
    assert take_count(iter(items), 30) == items


def test_eval_order_first_or_seeded():
    items = _items(50)
    assert eval_order(items, None, _key) == items
    first = take_count(eval_order(items, 7, _key), 5)
    assert first == take_count(eval_order(items, 7, _key), 5)
    assert first != items[:5]


def test_bad_arguments():
    with pytest.raises(DataError):
        take_hours(_items(), 0, "x")
    with pytest.raises(DataError):
        take_count(_items(), -1)
