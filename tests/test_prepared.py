"""Reading prepared languages: summary, vocabulary, audio, errors, and the content fingerprint."""

import json
import os

import numpy as np
import pytest
import soundfile
from tinydata_factory import make_prepared

from crossling import paths
from crossling.errors import DataError
from crossling.prepared import SplitAudio, is_prepared, load_audio, open_prepared


def test_prepared_language_and_audio_errors(tmp_path):
    root = make_prepared(tmp_path, "xx", n_train=2, n_dev=1, n_test=1)
    data = open_prepared(root, "xx")
    first = data.split("train")[0]
    assert len(load_audio(root, first)) == first.num_samples
    with pytest.raises(DataError, match=r"'de' is not prepared .*prepared languages there: xx"):
        open_prepared(root, "de")
    soundfile.write(root / first.audio, np.zeros(800, np.float32), 8000)
    with pytest.raises(DataError, match="expected 16 kHz mono"):
        load_audio(root, first)
    (root / first.audio).unlink()
    with pytest.raises(DataError, match="cannot read audio"):
        load_audio(root, first)
    paths.vocab_path(root, "xx").write_text(json.dumps({"a": 0, "<unk>": 1, "|": 2}))
    with pytest.raises(DataError, match="<pad>=0"):
        open_prepared(root, "xx")


def test_the_summary_is_typed_and_split_audio_reads_lazily(tmp_path):
    root = make_prepared(tmp_path, "xx", n_train=2, n_dev=1, n_test=3)
    data = open_prepared(root, "xx")
    assert data.summary.test_utterances == 3 and data.summary.language == "xx" and is_prepared(root, "xx")
    audio = SplitAudio(root, data.split("test"))
    assert len(audio) == 3 and audio.lengths() == [len(audio[i]) for i in range(3)]


def test_the_fingerprint_names_the_content_not_the_place(tmp_path):
    root = make_prepared(tmp_path / "a", "xx", n_train=3, n_dev=1, n_test=1)
    before = open_prepared(root, "xx").fingerprint()
    os.rename(tmp_path / "a", tmp_path / "b")
    assert open_prepared(tmp_path / "b", "xx").fingerprint() == before  # moved: the same data
    assert len(before) == 16
    other = make_prepared(tmp_path / "c", "xx", n_train=3, n_dev=1, n_test=1, seed=1)
    assert open_prepared(other, "xx").fingerprint() != before
    manifest = paths.manifest_path(tmp_path / "b", "xx", "test")
    manifest.write_text(manifest.read_text().replace('"text": "', '"text": "x', 1))
    assert open_prepared(tmp_path / "b", "xx").fingerprint() != before  # an edited transcript: other data


def test_a_node_finds_the_prepared_data_by_content_where_it_mounts_it(tmp_path):
    """The driver's path first; on a node that mounts the data elsewhere, under CROSSLING_DATA_ROOT (the
    folder itself, or a folder holding it under its name); another content is refused, never trained on."""
    from crossling.prepared import DATA_ROOT_ENV, locate_prepared

    driver = make_prepared(tmp_path / "driver" / "prepared", "xx", n_train=3, n_dev=1, n_test=1)
    expected = open_prepared(driver, "xx").fingerprint()
    assert locate_prepared(driver, "xx", expected, environ={}) == driver
    mounted = tmp_path / "node2" / "mnt"
    mounted.mkdir(parents=True)
    os.replace(driver, mounted / "prepared")
    with pytest.raises(DataError, match=f"fingerprint {expected} is not on this node.*{DATA_ROOT_ENV}"):
        locate_prepared(driver, "xx", expected, environ={})
    assert locate_prepared(driver, "xx", expected, environ={DATA_ROOT_ENV: str(mounted)}) == mounted / "prepared"
    assert locate_prepared(driver, "xx", expected, environ={DATA_ROOT_ENV: str(mounted / "prepared")}) == \
        mounted / "prepared"
    other = make_prepared(tmp_path / "node3" / "prepared", "xx", n_train=3, n_dev=1, n_test=1, seed=1)
    found = open_prepared(other, "xx").fingerprint()
    with pytest.raises(DataError) as error:
        locate_prepared(driver, "xx", expected, environ={DATA_ROOT_ENV: str(tmp_path / "node3")})
    message = str(error.value)
    assert f"fingerprint {expected}" in message and f"{other} (content fingerprint {found})" in message
