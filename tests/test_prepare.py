"""`prepare_release` end to end on generated releases: artifacts, subsets, cache, bad input, CLI."""

import json
import logging

import cvfactory
import pytest
import soundfile as sf

import crossling.prepare as prepare_module
from crossling import paths
from crossling.atomic import read_json
from crossling.cli import main
from crossling.errors import DataError
from crossling.manifest import read_manifest
from crossling.prepare import PrepareOptions, prepare_release

HOURS = 0.005  # 18 s of the 33 s each generated train split holds
CONTRACT_KEYS = {"language", "source", "seed", "train_hours", "train_utterances", "dev_utterances",
                 "test_utterances", "vocab", "vocab_threshold", "char_map", "oov_rate", "skipped",
                 "normalization"}


def _prepare(release, out, languages=("pt",), workers=1, **options):
    """prepare_release's results in their JSON form (prepared.json's record plus cache counts)."""
    options.setdefault("train_hours", HOURS)
    prepared = prepare_release(release, list(languages), out, PrepareOptions(**options), workers=workers)
    return [language.to_json() for language in prepared]


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    return cvfactory.write_release(root, ["pt", "de"])


def test_writes_the_prepared_language_contract(release, tmp_path):
    (summary,) = _prepare(release, tmp_path)
    assert CONTRACT_KEYS <= set(summary)
    on_disk = read_json(paths.prepared_summary_path(tmp_path, "pt"))
    assert CONTRACT_KEYS <= set(on_disk) and on_disk["vocab"] == summary["vocab"]
    train = read_manifest(paths.manifest_path(tmp_path, "pt", "train"))
    assert len(train) == summary["train_utterances"] and len(train) > 0
    for utt in train:
        assert utt.audio.startswith("_audio/pt/")
        data, rate = sf.read(str(tmp_path / utt.audio), dtype="int16")
        assert rate == 16_000 and len(data) == utt.num_samples and data.ndim == 1
    first = train[0]
    assert first.sentence == 'Ele disse "olá" ao João.' and first.text == "ele disse olá ao joão"
    assert (first.speaker, first.gender, first.age, first.accent) == ("pt-speaker-0", "female", "twenties",
                                                                      "accent-0")
    vocab = read_json(paths.vocab_path(tmp_path, "pt"))
    assert [vocab["<pad>"], vocab["<unk>"], vocab["|"]] == [0, 1, 2]
    assert list(vocab)[3:] == sorted(summary["vocab"]) and "ã" in vocab
    assert summary["dev_utterances"] == 4 and summary["test_utterances"] == 4


def test_prepared_json_is_written_last(release, tmp_path):
    _prepare(release, tmp_path)
    marker = paths.prepared_summary_path(tmp_path, "pt").stat().st_mtime_ns
    others = [paths.manifest_path(tmp_path, "pt", s) for s in paths.SPLITS] + [paths.vocab_path(tmp_path, "pt")]
    assert all(p.stat().st_mtime_ns <= marker for p in others)


def test_new_tsv_layout_and_plain_language_root(tmp_path):
    release = cvfactory.write_release(tmp_path / "r", ["de"], layout="new", corpus_dir=None)
    (summary,) = _prepare(release, tmp_path / "out", languages=["de"])
    train = read_manifest(paths.manifest_path(tmp_path / "out", "de", "train"))
    assert {u.gender for u in train} == {"female", "male"}
    assert all(u.accent.startswith("accent-") for u in train)
    assert "ß" in summary["vocab"] and "„" not in summary["vocab"]


def test_tar_release_gives_the_same_result_as_the_folder(release, tmp_path):
    tar = cvfactory.tar_release(release, tmp_path / "cv-corpus-7.0.tar.gz")
    _prepare(release, tmp_path / "from_dir")
    _prepare(tar, tmp_path / "from_tar")
    for split in paths.SPLITS:
        assert (read_manifest(paths.manifest_path(tmp_path / "from_dir", "pt", split))
                == read_manifest(paths.manifest_path(tmp_path / "from_tar", "pt", split)))
    assert not list((tmp_path / "from_tar").glob(".staging-*"))


def test_tar_rerun_reuses_cache(release, tmp_path, monkeypatch):
    tar = cvfactory.tar_release(release, tmp_path / "cv.tar.gz")
    _prepare(tar, tmp_path / "out")
    calls = cvfactory.count_decodes(monkeypatch)
    (summary,) = _prepare(tar, tmp_path / "out")
    assert calls == [] and summary["cache"]["decoded"] == 0 and summary["cache"]["reused"] > 0


def test_exact_hours_and_seeding(release, tmp_path):
    budget = HOURS * 3600
    subsets = {}
    for seed in (0, 0, 1):
        out = tmp_path / f"seed{seed}-{len(subsets)}"
        (summary,) = _prepare(release, out, seed=seed)
        train = read_manifest(paths.manifest_path(out, "pt", "train"))
        seconds = sum(u.duration for u in train)
        assert budget <= seconds < budget + max(u.duration for u in train)
        assert summary["train_hours"] == pytest.approx(seconds / 3600, abs=1e-6)
        subsets.setdefault(seed, []).append({u.id for u in train})
    assert subsets[0][0] == subsets[0][1]
    assert subsets[0][0] != subsets[1][0]


def test_not_enough_hours_says_how_many(release, tmp_path):
    with pytest.raises(DataError, match=r"train\.tsv: asked for 1 h .* only 0\.009\d h"):
        _prepare(release, tmp_path, train_hours=1.0)
    assert not paths.prepared_summary_path(tmp_path, "pt").exists()


def test_per_speaker_cap(tmp_path):
    splits = cvfactory.standard_splits("pt", train=30)
    splits["train"] = [cvfactory.replace(c, speaker="b" if i % 5 == 0 else "a")
                       for i, c in enumerate(splits["train"])]  # speaker a has 80 % of the audio
    release = cvfactory.write_release(tmp_path / "r", {"pt": splits})
    (summary,) = _prepare(release, tmp_path / "out", max_hours_per_speaker=0.0035)
    train = read_manifest(paths.manifest_path(tmp_path / "out", "pt", "train"))
    per_speaker = {}
    for utt in train:
        per_speaker[utt.speaker] = per_speaker.get(utt.speaker, 0) + utt.duration
    assert set(per_speaker) == {"a", "b"} and max(per_speaker.values()) <= 0.0035 * 3600
    assert summary["train_hours"] >= HOURS and summary["max_hours_per_speaker"] == 0.0035


def test_dev_and_test_caps(release, tmp_path):
    (summary,) = _prepare(release, tmp_path, dev_max=2, test_max=3)
    assert (summary["dev_utterances"], summary["test_utterances"]) == (2, 3)
    dev = read_manifest(paths.manifest_path(tmp_path, "pt", "dev"))
    assert [u.id for u in dev] == ["common_voice_pt_dev_0000", "common_voice_pt_dev_0001"]
    _prepare(release, tmp_path / "seeded", dev_max=2, eval_seed=3)
    seeded = read_manifest(paths.manifest_path(tmp_path / "seeded", "pt", "dev"))
    assert len(seeded) == 2 and [u.id for u in seeded] != [u.id for u in dev]


def test_rerun_reuses_the_decode_cache(release, tmp_path, monkeypatch):
    _prepare(release, tmp_path, languages=["pt", "de"])
    wavs = {p: p.stat().st_mtime_ns for p in (tmp_path / "_audio").rglob("*.wav")}
    calls = cvfactory.count_decodes(monkeypatch)
    summaries = _prepare(release, tmp_path, languages=["pt", "de"])
    assert calls == []
    assert all(s["cache"]["decoded"] == 0 and s["cache"]["reused"] > 0 for s in summaries)
    assert wavs == {p: p.stat().st_mtime_ns for p in (tmp_path / "_audio").rglob("*.wav")}


def test_vocabulary_from_train_only_and_oov_rate(tmp_path):
    splits = cvfactory.standard_splits("pt")
    splits["dev"] = cvfactory.with_kind(splits["dev"], 0, sentence="ñandu ñandu")
    release = cvfactory.write_release(tmp_path / "r", {"pt": splits})
    (summary,) = _prepare(release, tmp_path / "out")
    assert "ñ" not in summary["vocab"]
    assert summary["oov_rate"]["dev"] > 0 and summary["oov_rate"]["test"] == 0


def test_colliding_characters_are_mapped_and_recorded(release, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "normalize", lambda text, language: text.lower().replace(".", "")
                        .replace("<", "|") or "")
    splits = cvfactory.standard_splits("pt")
    splits["train"] = [cvfactory.replace(c, sentence="a|b <c") for c in splits["train"]]
    release = cvfactory.write_release(tmp_path / "r", {"pt": splits})
    (summary,) = _prepare(release, tmp_path / "out")
    stand_in = summary["char_map"]["|"]
    assert stand_in in summary["vocab"] and "|" not in summary["vocab"]
    train = read_manifest(paths.manifest_path(tmp_path / "out", "pt", "train"))
    assert all("|" not in u.text and stand_in in u.text for u in train)
    assert read_json(paths.prepared_summary_path(tmp_path / "out", "pt"))["char_map"] == summary["char_map"]


def test_unsegmented_language(tmp_path):
    release = cvfactory.write_release(tmp_path / "r", ["th"])
    (summary,) = _prepare(release, tmp_path / "out", languages=["th"])
    train = read_manifest(paths.manifest_path(tmp_path / "out", "th", "train"))
    assert all(" " not in u.text for u in train)
    assert "\u0e49" in summary["vocab"]  # a Thai tone mark (combining) kept as a character
    assert summary["normalization"]["unsegmented_script"] is True


# --- bad input ---------------------------------------------------------------------------------------


def test_bad_clips_and_sentences_are_skipped_counted_and_named(tmp_path, caplog):
    splits = cvfactory.standard_splits("pt", train=40)
    train = cvfactory.with_kind(splits["train"], 0, kind="corrupt")
    train = cvfactory.with_kind(train, 1, kind="empty")
    train = cvfactory.with_kind(train, 2, kind="missing")
    train = cvfactory.with_kind(train, 3, sentence="")
    splits["train"] = cvfactory.with_kind(train, 5, sentence="?! …")
    splits["dev"] = cvfactory.with_kind(splits["dev"], 1, kind="corrupt")
    splits["test"] = cvfactory.with_kind(splits["test"], 2, kind="empty")
    release = cvfactory.write_release(tmp_path / "r", {"pt": splits})
    with caplog.at_level(logging.WARNING):
        (summary,) = _prepare(release, tmp_path / "out")
    skipped = summary["skipped"]
    # rows are checked up front; clip decoding only as far as the train budget reaches (+ all dev/test)
    assert (skipped["missing_clip"], skipped["empty_sentence"]) == (1, 2)
    assert skipped["corrupt_clip"] >= 1 and skipped["empty_clip"] >= 1
    assert (summary["dev_utterances"], summary["test_utterances"]) == (3, 3)
    messages = caplog.text
    assert "train.tsv:4: skipped (missing_clip)" in messages and "common_voice_pt_train_0002.mp3" in messages
    assert "train.tsv:5: skipped (empty_sentence)" in messages  # header is line 1
    assert "train.tsv:7: skipped (empty_sentence)" in messages
    assert "dev.tsv:3: skipped (corrupt_clip)" in messages
    assert "test.tsv:4: skipped (empty_clip)" in messages
    ids = {u.id for u in read_manifest(paths.manifest_path(tmp_path / "out", "pt", "train"))}
    assert not ids & {f"common_voice_pt_train_000{i}" for i in (0, 1, 2, 3, 5)}


def test_corrupt_and_empty_train_clips_are_skipped(tmp_path):
    splits = cvfactory.standard_splits("pt", train=8)
    splits["train"] = cvfactory.with_kind(cvfactory.with_kind(splits["train"], 0, kind="corrupt"), 1, kind="empty")
    release = cvfactory.write_release(tmp_path / "r", {"pt": splits})
    # 6 usable clips of 1.5..1.75 s (8.5 s): a 8.4 s budget needs every one, so every clip is examined
    (summary,) = _prepare(release, tmp_path / "out", train_hours=8.4 / 3600)
    assert (summary["skipped"]["corrupt_clip"], summary["skipped"]["empty_clip"]) == (1, 1)
    assert summary["train_utterances"] == 6


def test_missing_tsv_is_an_error_naming_the_file(tmp_path):
    release = cvfactory.write_release(tmp_path / "r", ["pt"])
    (release / "cv-corpus-7.0-2021-07-21" / "pt" / "test.tsv").unlink()
    with pytest.raises(DataError, match=r"pt/test\.tsv: TSV file not found"):
        _prepare(release, tmp_path / "out")


def test_row_with_missing_columns_names_file_and_line(tmp_path):
    release = cvfactory.write_release(tmp_path / "r", ["pt"])
    tsv = release / "cv-corpus-7.0-2021-07-21" / "pt" / "dev.tsv"
    lines = tsv.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:4])
    tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"pt/dev\.tsv:3: expected 10 tab-separated columns"):
        _prepare(release, tmp_path / "out")


@pytest.mark.parametrize("bad", ["../x.mp3", "/etc/hostname"])
def test_path_escaping_clips_is_rejected(tmp_path, bad):
    splits = cvfactory.standard_splits("pt")
    splits["train"] = cvfactory.with_kind(splits["train"], 4, tsv_path=bad)
    release = cvfactory.write_release(tmp_path / "r", {"pt": splits})
    with pytest.raises(DataError, match=r"pt/train\.tsv:6: clip path .* leaves the clips folder"):
        _prepare(release, tmp_path / "out")
    assert not paths.language_dir(tmp_path / "out", "pt").exists()


def test_unknown_language_lists_present_and_writes_nothing(release, tmp_path):
    with pytest.raises(DataError, match="xx not in this release; present: de, pt"):
        _prepare(release, tmp_path / "out", languages=["pt", "xx"])
    assert not paths.language_dir(tmp_path / "out", "pt").exists()


def test_failing_language_loses_nothing_already_prepared(release, tmp_path):
    out = tmp_path / "out"
    _prepare(release, out, languages=["pt", "de"])
    before = _files(out)
    broken = cvfactory.write_release(tmp_path / "broken", ["pt", "de"])
    (broken / "cv-corpus-7.0-2021-07-21" / "de" / "train.tsv").write_text("client_id\tpath\n")
    with pytest.raises(DataError, match="header lacks"):
        _prepare(broken, out, languages=["pt", "de"])
    after = _files(out)
    de_and_cache = {k: v for k, v in before.items() if k.startswith(("de/", "_audio/de/"))}
    assert {k: after.get(k) for k in de_and_cache} == de_and_cache
    assert (out / "pt" / "prepared.json").is_file()


# --- command line --------------------------------------------------------------------------------------


def test_cli_json_lines(release, tmp_path, capsys):
    code = main(["prepare", str(release), "--languages", "pt", "de", "--train-hours", str(HOURS),
                 "--seed", "1", "--out", str(tmp_path), "--workers", "2", "--json", "--dev-max", "3"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["language"] for r in rows] == ["pt", "de"]
    for row in rows:
        assert {"language", "train_hours", "train_utterances", "dev_utterances", "test_utterances", "vocab",
                "oov_rate", "skipped"} <= set(row)
        assert row["dev_utterances"] == 3 and row["seed"] == 1
        assert paths.prepared_summary_path(tmp_path, row["language"]).is_file()


def test_cli_human_summary_and_error_exit(release, tmp_path, capsys):
    assert main(["prepare", str(release), "--languages", "pt", "--train-hours", str(HOURS),
                 "--out", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pt: 0.00") and "prepared 1 language(s)" in out
    assert main(["prepare", str(release), "--languages", "klingon", "--out", str(tmp_path)]) == 2
    assert "klingon not in this release; present: de, pt" in capsys.readouterr().err


def test_crash_while_writing_leaves_no_completion_marker(release, tmp_path, monkeypatch):
    _prepare(release, tmp_path, seed=0)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(prepare_module, "write_vocab_json", disk_full)
    with pytest.raises(OSError):
        _prepare(release, tmp_path, seed=1)  # new train.jsonl written, vocab.json not
    # prepared.json from seed 0 must not vouch for the seed-1 manifest now on disk
    assert not paths.prepared_summary_path(tmp_path, "pt").exists()


def test_prepared_text_round_trips_through_the_hf_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    release = cvfactory.write_release(tmp_path / "r", ["hi"], layout="new")
    _prepare(release, tmp_path / "out", languages=["hi"])
    tokenizer = transformers.Wav2Vec2CTCTokenizer(
        str(paths.vocab_path(tmp_path / "out", "hi")), unk_token="<unk>", pad_token="<pad>",
        word_delimiter_token="|")
    for utt in read_manifest(paths.manifest_path(tmp_path / "out", "hi", "train")):
        ids = tokenizer(utt.text).input_ids
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, group_tokens=False) == utt.text


def test_a_second_prepare_of_the_same_language_fails_at_once_and_changes_nothing(release, tmp_path):
    out = tmp_path / "out"
    _prepare(release, out, languages=["pt"])
    before = {k: v for k, v in _files(out).items() if not k.startswith(".locks/")}
    with prepare_module._preparing(out, "pt"):  # as if another process were preparing pt right now
        with pytest.raises(DataError, match=r"another `crossling prepare` is preparing 'pt' there right now "
                                            r"\(it holds .*\.locks/pt\.prepare\)"):
            _prepare(release, out, languages=["de", "pt"], train_hours=1.5 * HOURS)
        unlocked = {k: v for k, v in _files(out).items() if not k.startswith(".locks/")}
        assert unlocked == before  # neither de (asked first) nor pt was touched
        _prepare(release, out, languages=["de"])  # another language of the same root is fine meanwhile
    _prepare(release, out, languages=["pt"], train_hours=1.5 * HOURS)  # released: works again
    assert read_json(paths.prepared_summary_path(out, "pt"))["train_hours"] > HOURS
    assert not (out / ".locks").exists()  # every lock file went with its prepare
