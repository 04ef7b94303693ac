"""Prepared languages out: lhotse manifests and a Hugging Face dataset, loaded back by those libraries."""

import io

import numpy as np
import pytest
import soundfile
from corpus_factory import entries, write_manifest_folder

from crossling import paths
from crossling.cli import main
from crossling.corpora import CorpusOptions
from crossling.errors import ConfigError
from crossling.export import export_prepared
from crossling.prepare import PrepareOptions, prepare_release
from crossling.prepared import load_audio, open_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    source = write_manifest_folder(root / "corpus", "sw", entries())
    prepare_release(source, ["sw"], root / "prepared", PrepareOptions(train_hours=12 / 3600), corpus=CorpusOptions(),
                    workers=1)
    return root / "prepared"


def test_lhotse_export_loads_back_in_lhotse_and_prepares_again(prepared, tmp_path, capsys):
    from lhotse import CutSet, load_manifest

    assert main(["export", str(prepared), "--language", "sw", "--to", "lhotse", "--out", str(tmp_path / "lh")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    data = open_prepared(prepared, "sw")
    for split in ("train", "dev", "test"):
        recordings = load_manifest(paths.export_lhotse_path(tmp_path / "lh", "sw", "recordings", split))
        supervisions = load_manifest(paths.export_lhotse_path(tmp_path / "lh", "sw", "supervisions", split))
        cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
        utterances = {u.id: u for u in data.split(split)}
        assert {c.recording_id for c in cuts} == set(utterances)
        for cut in cuts:
            utterance = utterances[cut.recording_id]
            assert cut.supervisions[0].text == utterance.text and cut.supervisions[0].speaker == utterance.speaker
            np.testing.assert_allclose(cut.load_audio()[0], load_audio(prepared, utterance), atol=1e-4)
    # crossling reads its own export: the same train subset, dev and test
    prepare_release(tmp_path / "lh", ["sw"], tmp_path / "again", PrepareOptions(train_hours=data.summary.train_hours * 0.999),
                    corpus=CorpusOptions(format="lhotse"), workers=1)
    for split in ("dev", "test"):
        again = open_prepared(tmp_path / "again", "sw").split(split)
        assert [(u.text, u.num_samples) for u in again] == [(u.text, u.num_samples) for u in data.split(split)]


def test_hf_export_loads_back_in_datasets(prepared, tmp_path):
    from datasets import Audio, load_from_disk

    (target,) = export_prepared(prepared, "sw", "hf", tmp_path / "hf")
    loaded = load_from_disk(str(target))
    assert set(loaded) == {"train", "validation", "test"}
    data = open_prepared(prepared, "sw")
    for split, name in (("train", "train"), ("dev", "validation"), ("test", "test")):
        part = loaded[name].cast_column("audio", Audio(decode=False))
        utterances = data.split(split)
        assert part["id"] == [u.id for u in utterances] and part["text"] == [u.text for u in utterances]
        first = soundfile.read(io.BytesIO(part[0]["audio"]["bytes"]), dtype="float32")
        assert first[1] == 16_000
        np.testing.assert_array_equal(first[0], load_audio(prepared, utterances[0]))
    assert loaded["train"].features["audio"].sampling_rate == 16_000
    # and crossling reads it as a corpus: dev and test come back unchanged
    prepare_release(tmp_path / "hf", ["sw"], tmp_path / "again", PrepareOptions(train_hours=data.summary.train_hours * 0.999),
                    corpus=CorpusOptions(), workers=1)
    again = open_prepared(tmp_path / "again", "sw")
    assert again.summary.format == "hf"
    assert [(u.text, u.num_samples) for u in again.split("test")] == [(u.text, u.num_samples)
                                                                        for u in data.split("test")]


def test_export_errors(prepared, tmp_path):
    with pytest.raises(ConfigError, match="not an export format"):
        export_prepared(prepared, "sw", "kaldi", tmp_path)
    assert main(["export", str(prepared), "--language", "yo", "--to", "hf", "--out", str(tmp_path)]) == 2
