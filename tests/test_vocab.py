"""Vocabulary: train-only, frequency threshold, special-token collisions, OOV rate, HF tokenizer loading."""

import json

import pytest

from crossling.errors import DataError
from crossling.vocab import (
    Vocab,
    apply_char_map,
    build_vocab,
    collision_map,
    oov_rate,
    read_vocab_json,
    write_vocab_json,
)


def test_special_tokens_first_then_sorted_chars():
    vocab = build_vocab(["cab ba", "abc"])
    assert vocab.chars == ("a", "b", "c")
    assert vocab.tokens() == {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "c": 5}


def test_threshold_drops_rare_characters():
    texts = ["a" * 9999 + "z"]  # z has relative frequency 1e-4
    assert "z" in build_vocab(texts, threshold=1e-4).chars
    assert "z" not in build_vocab(texts, threshold=2e-4).chars
    assert "z" in build_vocab(texts).chars  # default 1e-5


def test_space_is_not_a_character():
    assert " " not in build_vocab(["a b"]).chars


def test_collisions_are_mapped_not_merged():
    vocab = build_vocab(["a|b", "c<d"])
    assert set(vocab.char_map) == {"|", "<"}
    stand_ins = set(vocab.char_map.values())
    assert stand_ins <= set(vocab.chars)
    assert "|" not in vocab.chars and "<" not in vocab.chars
    assert len(stand_ins) == 2 and not stand_ins & {"a", "b", "c", "d"}
    assert apply_char_map("a|b", vocab.char_map) == "a" + vocab.char_map["|"] + "b"


def test_collision_stand_in_avoids_characters_in_data():
    mapping = collision_map(["x|y\u00a6"])  # the first-choice stand-in is itself in the data
    assert mapping["|"] != "\u00a6"


def test_no_collision_no_map():
    assert build_vocab(["abc"]).char_map == {}


def test_oov_rate_counts_unknown_non_space_characters():
    vocab = Vocab(chars=("a", "b"))
    assert oov_rate(["ab ab", "ax"], vocab) == pytest.approx(1 / 6)
    assert oov_rate([], vocab) == 0.0


def test_empty_training_text_is_an_error():
    with pytest.raises(DataError, match="no characters"):
        build_vocab(["", " "])


def test_json_round_trip_and_check(tmp_path):
    vocab = build_vocab(["olá mundo"])
    path = tmp_path / "vocab.json"
    write_vocab_json(path, vocab)
    assert read_vocab_json(path) == vocab.tokens()
    path.write_text(json.dumps({"a": 0, "<unk>": 1, "|": 2}))
    with pytest.raises(DataError, match="'<pad>' to have id 0"):
        read_vocab_json(path)
    path.write_text(json.dumps(["<pad>", "<unk>", "|"]))
    with pytest.raises(DataError, match=r"vocab\.json: expected a JSON object"):
        read_vocab_json(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"vocab\.json: cannot read vocabulary"):
        read_vocab_json(path)


def test_transformers_tokenizer_loads_and_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    texts = ["ação é boa", "olá mundo", "a|b <unk>"]
    vocab = build_vocab(texts)
    path = tmp_path / "vocab.json"
    write_vocab_json(path, vocab)
    tokenizer = transformers.Wav2Vec2CTCTokenizer(
        str(path), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1
    assert tokenizer.word_delimiter_token_id == 2
    for text in texts:
        mapped = apply_char_map(text, vocab.char_map)
        ids = tokenizer(mapped).input_ids
        assert 1 not in ids, f"{mapped!r} produced <unk>"
        assert len(ids) == len(mapped)  # one id per character: nothing merged into a special token
        assert tokenizer.decode(ids, group_tokens=False) == mapped
