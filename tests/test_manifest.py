"""Manifests: utterances round-trip through JSON lines; malformed lines are DataErrors naming file and line."""

import pytest

from crossling.errors import DataError
from crossling.manifest import Utterance, read_manifest, total_hours, write_manifest


def test_round_trip(tmp_path):
    utterances = [Utterance("a", "_audio/xx/a.wav", 16_000, "olá", "Olá!", gender="female"),
                  Utterance("b", "_audio/xx/b.wav", 32_000, "mundo", "Mundo.")]
    path = tmp_path / "xx" / "train.jsonl"
    write_manifest(path, utterances)
    assert read_manifest(path) == utterances
    assert total_hours(utterances) == pytest.approx(3 / 3600)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"train\.jsonl:2: not valid JSON"),
    ("5", r"train\.jsonl:2: expected a JSON object \(one utterance\), found int"),
    ('["a", "b"]', r"train\.jsonl:2: expected a JSON object \(one utterance\), found list"),
    ('{"id": "b", "colour": "red"}', r"train\.jsonl:2: unknown fields \['colour'\]"),
    ('{"id": "b"}', r"train\.jsonl:2: .*missing"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    write_manifest(path, [Utterance("a", "a.wav", 1, "x", "x")])
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_manifest(path)


def test_missing_manifest_says_to_prepare(tmp_path):
    with pytest.raises(DataError, match="crossling prepare"):
        read_manifest(tmp_path / "train.jsonl")
