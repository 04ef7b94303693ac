"""Reading Common Voice releases: TSV layouts, quotes, bad rows, unsafe paths, folders and tar archives."""

import io
import tarfile

import cvfactory
import pytest

from crossling.commonvoice import find_release_root, open_release, read_tsv
from crossling.errors import DataError


def _tsv(path, header, rows):
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n", encoding="utf-8")
    return path


def test_cv7_layout(tmp_path):
    cvfactory.write_language(tmp_path / "pt", "pt", cvfactory.standard_splits("pt", 4, 1, 1), layout="cv7")
    rows = read_tsv(tmp_path / "pt" / "train.tsv")
    assert len(rows) == 4
    first = rows[0]
    assert first.clip == "common_voice_pt_train_0000.mp3"
    assert first.sentence == 'Ele disse "olá" ao João.'
    assert (first.speaker, first.gender, first.age, first.accent) == ("pt-speaker-0", "female", "twenties",
                                                                      "accent-0")
    assert rows[1].gender == "male"
    assert first.where.endswith("train.tsv:2")


def test_new_layout_detects_renamed_and_added_columns(tmp_path):
    cvfactory.write_language(tmp_path / "de", "de", cvfactory.standard_splits("de", 4, 1, 1), layout="new")
    header = (tmp_path / "de" / "train.tsv").read_text().splitlines()[0].split("\t")
    assert "sentence_id" in header and "accents" in header and "accent" not in header
    rows = read_tsv(tmp_path / "de" / "train.tsv")
    assert [r.gender for r in rows[:2]] == ["female", "male"]  # from female_feminine / male_masculine
    assert rows[0].accent == "accent-0"
    assert rows[0].sentence == "Größe „zählt“ nicht!"


def test_quotes_are_not_processed(tmp_path):
    header = ["client_id", "path", "sentence"]
    rows = [["a", "1.mp3", '"Olá" disse ele'], ["b", "2.mp3", 'Ele disse "olá'], ["c", "3.mp3", "fim"]]
    read = read_tsv(_tsv(tmp_path / "t.tsv", header, rows))
    assert [r.sentence for r in read] == ['"Olá" disse ele', 'Ele disse "olá', "fim"]


def test_missing_tsv_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.tsv: TSV file not found"):
        read_tsv(tmp_path / "nothere.tsv")


def test_row_with_missing_columns_names_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("client_id\tpath\tsentence\nx\ta.mp3\tok\ny\tb.mp3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected 3 tab-separated columns .* found 2"):
        read_tsv(path)


def test_undecodable_or_oversized_tsv_is_a_data_error(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"path\tsentence\na.mp3\tcaf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=r"train\.tsv: not UTF-8 text"):
        read_tsv(path)
    path.write_text("path\tsentence\na.mp3\t" + "x" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:\d+: unreadable TSV row"):
        read_tsv(path)


def test_header_without_sentence_column(tmp_path):
    path = _tsv(tmp_path / "dev.tsv", ["client_id", "path"], [["x", "a.mp3"]])
    with pytest.raises(DataError, match=r"dev\.tsv:1: header lacks column\(s\) sentence"):
        read_tsv(path)


@pytest.mark.parametrize("bad", ["../x.mp3", "/etc/passwd", "sub/../../x.mp3", "a/b.mp3", "..\\x.mp3", ".."])
def test_path_escaping_clips_is_rejected(tmp_path, bad):
    path = _tsv(tmp_path / "test.tsv", ["client_id", "path", "sentence"], [["x", "ok.mp3", "a"], ["y", bad, "b"]])
    with pytest.raises(DataError, match=r"test\.tsv:3: clip path .* leaves the clips folder"):
        read_tsv(path)


def test_release_root_direct_or_cv_corpus_folder(tmp_path):
    direct = cvfactory.write_release(tmp_path / "direct", {"pt": cvfactory.standard_splits("pt", 1, 1, 1)},
                                     corpus_dir=None)
    assert find_release_root(direct) == direct
    nested = cvfactory.write_release(tmp_path / "nested", {"pt": cvfactory.standard_splits("pt", 1, 1, 1)})
    assert find_release_root(nested) == nested / "cv-corpus-7.0-2021-07-21"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Common Voice language folders"):
        find_release_root(tmp_path / "empty")


def test_unknown_language_lists_those_present(tmp_path):
    release = cvfactory.write_release(tmp_path / "r", {lang: cvfactory.standard_splits(lang, 1, 1, 1)
                                                       for lang in ("pt", "de")})
    with pytest.raises(DataError, match=r"language\(s\) xx not in this release; present: de, pt"):
        with open_release(release, ["pt", "xx"], tmp_path / "staging"):
            pass


def test_missing_release(tmp_path):
    with pytest.raises(DataError, match="release not found"):
        with open_release(tmp_path / "nope", ["pt"], tmp_path / "staging"):
            pass


@pytest.mark.parametrize("corpus_dir", ["cv-corpus-7.0-2021-07-21", None])
def test_tar_release_extracts_wanted_language_only(tmp_path, corpus_dir):
    folder = cvfactory.write_release(tmp_path / "r", {lang: cvfactory.standard_splits(lang, 2, 1, 1)
                                                      for lang in ("pt", "de")}, corpus_dir=corpus_dir)
    tar = cvfactory.tar_release(folder, tmp_path / "cv.tar.gz")
    staging = tmp_path / "staging"
    with open_release(tar, ["de"], staging) as release:
        de = release["de"]
        assert de.directory.is_relative_to(staging)
        assert len(de.read_split("train")) == 2
        assert de.clip_path("common_voice_de_train_0000.mp3").is_file()
        assert de.clip_stat("common_voice_de_train_0000.mp3")[0] > 0
        assert de.clip_stat("nope.mp3") is None
        assert not (staging / "pt").exists()
        assert "cv.tar.gz" in de.origin
    assert not staging.exists()


def test_tar_skips_clips_the_cache_already_has(tmp_path):
    folder = cvfactory.write_release(tmp_path / "r", {"pt": cvfactory.standard_splits("pt", 2, 1, 1)})
    tar = cvfactory.tar_release(folder, tmp_path / "cv.tar.gz")
    with open_release(tar, ["pt"], tmp_path / "s", keep_clip=lambda *_: False) as release:
        assert release["pt"].clip_stat("common_voice_pt_train_0001.mp3") is not None
        assert not release["pt"].clip_path("common_voice_pt_train_0001.mp3").exists()
        assert len(release["pt"].read_split("dev")) == 1


@pytest.mark.parametrize("name", ["../evil.tsv", "/abs/pt/train.tsv", "cv/pt/../../../x"])
def test_tar_member_escaping_target_is_rejected(tmp_path, name):
    tar = tmp_path / "evil.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        data = b"client_id\tpath\tsentence\n"
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="escapes the extraction folder"):
        with open_release(tar, ["pt"], tmp_path / "staging"):
            pass
    assert not (tmp_path / "evil.tsv").exists()


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read archive"):
        with open_release(bad, ["pt"], tmp_path / "staging"):
            pass
