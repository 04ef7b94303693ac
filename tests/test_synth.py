"""Synthetic Common Voice: layout read by `prepare`, reproducibility, held-out speakers, disjoint text."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from crossling import paths
from crossling.cli import main
from crossling.errors import ConfigError
from crossling.espeak import Voice
from crossling.manifest import read_manifest, total_hours
from crossling.sentences import LANGUAGES, _capitalize, build_lexicon, sentences, synth_language
from crossling.synth import (
    TSV_COLUMNS,
    ClipJob,
    Room,
    SynthOptions,
    make_speakers,
    render_clip,
    synthesize_corpus,
)

HOURS = 0.004  # 14.4 s of train audio per language
SMALL = dict(hours=HOURS, seed=3, dev_fraction=0.5, test_fraction=0.5, speakers=(4, 2, 2))
LANGS = ["es", "tr"]
CV_AGES = {"", "teens", "twenties", "thirties", "fourties", "fifties", "sixties", "seventies", "eighties", "nineties"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    summary = synthesize_corpus(out, LANGS, SynthOptions(**SMALL), workers=1)
    return out, summary


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _split_rows(out: Path, lang: str) -> dict[str, list[dict]]:
    return {split: _rows(paths.synthetic_tsv_path(out, lang, split)) for split in ("train", "dev", "test")}


# --- layout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_tsvs_have_common_voice_columns_and_metadata(corpus, lang):
    out, _ = corpus
    for name in ("train", "dev", "test", "validated"):
        header = paths.synthetic_tsv_path(out, lang, name).read_text(encoding="utf-8").splitlines()[0]
        assert tuple(header.split("\t")) == TSV_COLUMNS
    splits = _split_rows(out, lang)
    validated = _rows(paths.synthetic_tsv_path(out, lang, "validated"))
    assert [r["path"] for r in validated] == [r["path"] for s in splits.values() for r in s]
    for row in validated:
        assert re.fullmatch(r"[0-9a-f]{128}", row["client_id"])
        assert row["gender"] in {"male", "female"} and row["age"] in CV_AGES
        assert row["locale"] == lang and row["up_votes"] == "2" and row["down_votes"] == "0"
        assert 3 <= len(row["sentence"].rstrip(".").split()) <= 6
        assert row["sentence"][0].isupper() and row["sentence"].endswith(".")


@pytest.mark.parametrize("lang", LANGS)
def test_clips_are_48khz_mp3_of_sane_length_reaching_the_hours(corpus, lang):
    out, summary = corpus
    seconds = {}
    for split, rows in _split_rows(out, lang).items():
        seconds[split] = 0.0
        for row in rows:
            clip = paths.synthetic_clips_dir(out, lang) / row["path"]
            info = sf.info(clip)
            assert (info.format, info.samplerate, info.channels) == ("MP3", 48000, 1)
            audio, _ = sf.read(clip, dtype="float32")
            assert 0.6 < audio.size / 48000 < 6.0
            assert np.abs(audio).max() > 0.1
            seconds[split] += audio.size / 48000
    assert seconds["train"] >= HOURS * 3600
    assert seconds["dev"] >= HOURS * 1800 and seconds["test"] >= HOURS * 1800
    assert summary["languages"][lang]["train"]["hours"] == pytest.approx(seconds["train"] / 3600, rel=1e-6)
    # The corpus keeps the shortest prefix reaching the target; clips rendered beyond it are deleted.
    listed = {r["path"] for rows in _split_rows(out, lang).values() for r in rows}
    assert {p.name for p in paths.synthetic_clips_dir(out, lang).iterdir()} == listed


def test_prepare_reads_the_synthetic_corpus(corpus, tmp_path):
    from crossling.prepare import PrepareOptions, prepare_release

    out, _ = corpus
    (prepared,) = prepare_release(out, ["es"], tmp_path / "prepared", PrepareOptions(train_hours=HOURS), workers=1)
    assert prepared.summary.train_hours >= HOURS
    assert not any(prepared.summary.skipped.values())
    tsv = _split_rows(out, "es")
    for split in ("dev", "test"):
        utterances = read_manifest(paths.manifest_path(tmp_path / "prepared", "es", split))
        assert len(utterances) == len(tsv[split])
        assert {u.speaker for u in utterances} == {r["client_id"] for r in tsv[split]}
        assert {u.gender for u in utterances} <= {"male", "female"}
    train = read_manifest(paths.manifest_path(tmp_path / "prepared", "es", "train"))
    assert total_hours(train) >= HOURS


# --- reproducibility ------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "synth.json"}


def test_same_seed_gives_identical_files_whatever_the_worker_count(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    synthesize_corpus(again, LANGS, SynthOptions(**SMALL), workers=2)
    first, second = _files(out), _files(again)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_another_seed_gives_other_sentences_and_speakers(corpus, tmp_path):
    out, _ = corpus
    other = tmp_path / "other"
    synthesize_corpus(other, ["es"], SynthOptions(**{**SMALL, "seed": 4}), workers=1)
    a, b = _split_rows(out, "es")["train"], _split_rows(other, "es")["train"]
    assert {r["sentence"] for r in a}.isdisjoint({r["sentence"] for r in b})
    assert {r["client_id"] for r in a}.isdisjoint({r["client_id"] for r in b})


def test_finished_language_is_reused_and_other_settings_refused(corpus):
    out, _ = corpus
    summary = synthesize_corpus(out, ["es"], SynthOptions(**SMALL), workers=1)
    assert summary["languages"]["es"]["reused"] and summary["synthesized_seconds"] == 0
    with pytest.raises(ConfigError, match="other settings"):
        synthesize_corpus(out, ["es"], SynthOptions(**{**SMALL, "seed": 9}), workers=1)


# --- speakers and sentences -------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_dev_and_test_speakers_and_sentences_are_held_out(corpus, lang):
    out, _ = corpus
    splits = _split_rows(out, lang)
    speakers = {split: {r["client_id"] for r in rows} for split, rows in splits.items()}
    texts = {split: [r["sentence"] for r in rows] for split, rows in splits.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert speakers[a].isdisjoint(speakers[b])
        assert set(texts[a]).isdisjoint(texts[b])
    assert all(len(set(t)) == len(t) for t in texts.values())


def test_speakers_are_disjoint_gender_balanced_variants():
    speakers = make_speakers("de", seed=0, counts={"train": 10, "dev": 3, "test": 3}, noise=True)
    assert [len(speakers[s]) for s in ("train", "dev", "test")] == [10, 3, 3]
    everyone = [s for split in speakers.values() for s in split]
    assert len({s.client_id for s in everyone}) == 16
    assert {s.gender for s in speakers["train"]} == {"male", "female"}
    for s in everyone:
        assert s.variant[0] == s.gender[0]  # m1..m7 are male voices, f1..f5 female
        assert s.room is not None and 15 <= s.room.snr_db <= 35
    assert len({(s.variant, s.rate, s.pitch) for s in everyone}) == 16


def test_sentence_streams_of_splits_never_share_a_sentence():
    language = synth_language("pt")
    lexicon = build_lexicon(language, 300)  # a small vocabulary makes collisions likely if unguarded
    rng = np.random.default_rng(0)
    streams = {split: sentences(language, lexicon, split, rng, (3, 4)) for split in ("train", "dev", "test")}
    drawn = {split: [next(stream) for _ in range(300)] for split, stream in streams.items()}
    assert all(len(set(d)) == 300 for d in drawn.values())
    assert set(drawn["train"]).isdisjoint(drawn["dev"]) and set(drawn["dev"]).isdisjoint(drawn["test"])
    assert set(drawn["train"]).isdisjoint(drawn["test"])


def test_a_closed_vocabulary_smaller_than_fifty_words_is_the_most_frequent_words():
    language = synth_language("pt")
    small = build_lexicon(language, 30)  # the demo's: short frequent words a micro model can learn
    assert small.words == build_lexicon(language, 300).words[:30]
    assert abs(sum(small.probabilities) - 1.0) < 1e-9
    with pytest.raises(ConfigError, match="vocabulary must be >= 1"):
        synthesize_corpus(Path("unused"), ["pt"], SynthOptions(hours=0.01, vocabulary=0))


@pytest.mark.parametrize(("lang", "pattern"), [
    ("ru", r"[а-яё]+"), ("es", r"[a-záéíóúüñ]+"), ("ja", r"[\u3040-\u30ff]+"), ("zh-CN", r"[\u4e00-\u9fff]+"),
])
def test_lexicon_keeps_only_the_languages_letters(lang, pattern):
    lexicon = build_lexicon(synth_language(lang), 2000)
    assert len(lexicon.words) == 2000 and sum(lexicon.probabilities) == pytest.approx(1.0)
    assert all(re.fullmatch(pattern, word) for word in lexicon.words)
    assert lexicon.probabilities[0] > lexicon.probabilities[-1]  # frequent words are sampled more


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_every_supported_language_has_words_and_a_voice(code):
    from crossling.espeak import synthesize

    language = synth_language(code)
    lexicon = build_lexicon(language, 300)
    sentence = next(sentences(language, lexicon, "train", np.random.default_rng(0)))
    samples, rate = synthesize(sentence, Voice(f"{language.espeak}+f3"))
    assert 0.5 < samples.size / rate < 8.0, sentence


def test_greek_words_keep_their_final_sigma():
    words = build_lexicon(synth_language("el"), 1000).words
    assert "της" in words and not any(word.endswith("σ") for word in words)


def test_turkish_sentences_capitalize_dotted_i():
    assert _capitalize("istanbul güzel", LANGUAGES["tr"]) == "İstanbul güzel"
    assert _capitalize("ılık", LANGUAGES["tr"]) == "Ilık"
    assert _capitalize("isla", LANGUAGES["es"]) == "Isla"


def test_room_changes_audio_deterministically():
    job = ClipJob("unused.mp3", "buenos días a todos", Voice("es+f3"), seed=5, pad_seconds=(0.1, 0.1), peak=0.8)
    dry = render_clip(job)
    wet = render_clip(ClipJob(**{**job.__dict__, "room": Room(rt60=0.3, snr_db=20.0)}))
    np.testing.assert_array_equal(wet, render_clip(ClipJob(**{**job.__dict__, "room": Room(0.3, 20.0)})))
    assert wet.size > dry.size and np.isfinite(wet).all()
    lead = int(0.05 * 48000)  # inside the leading pause: silent when dry, the room's noise when wet
    assert np.abs(dry[:lead]).max() < 1e-4 < np.abs(wet[:lead]).max()
    assert np.abs(wet).max() == pytest.approx(0.8, abs=0.02)


# --- errors -------------------------------------------------------------------------------------------


def test_language_without_word_list_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match=r"'et'.*wordfreq.*supported: .*es"):
        synthesize_corpus(tmp_path / "c", ["es", "et"], SynthOptions(hours=0.01))
    assert not (tmp_path / "c").exists()


def test_unknown_language_lists_the_supported_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown synthesis language 'xx'; supported: .*sv-SE.*zh-CN"):
        synthesize_corpus(tmp_path / "c", ["xx"], SynthOptions(hours=0.01))


def test_wordfreq_without_the_list_is_refused(monkeypatch, tmp_path):
    import wordfreq

    monkeypatch.setattr(wordfreq, "available_languages", lambda *a, **k: {"en": "en"})
    with pytest.raises(ConfigError, match="no word list 'es'"):
        synthesize_corpus(tmp_path / "c", ["es"], SynthOptions(hours=0.01))


@pytest.mark.parametrize("bad", [dict(hours=0), dict(hours=float("inf")), dict(hours=0.01, dev_fraction=0),
                                 dict(hours=0.01, speakers=(3, 0, 1)), dict(hours=0.01, word_range=(4, 2)),
                                 dict(hours=0.01, speakers=(4, 2)), dict(hours=0.01, word_range=(3,))])
def test_bad_sizes_are_config_errors(tmp_path, bad):
    with pytest.raises(ConfigError):
        synthesize_corpus(tmp_path / "c", ["es"], SynthOptions(**bad))


# --- command line ---------------------------------------------------------------------------------------


def test_cli_synth_writes_a_corpus_and_reports_speed(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", "--languages", "it", "--hours", "0.002", "--out", str(out), "--workers", "1",
            "--speakers", "2", "1", "1", "--words", "2", "3", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = _rows(out / "it" / "train.tsv")
    assert summary["languages"]["it"]["train"]["utterances"] == len(rows)
    assert {len(r["sentence"].split()) for r in rows} <= {2, 3}
    assert len({r["client_id"] for r in _rows(out / "it" / "validated.tsv")}) <= 4
    assert summary["audio_seconds_per_second"] > 0
    assert main(["synth", "--languages", "th", "--hours", "0.01", "--out", str(out)]) == 2
    assert "wordfreq" in capsys.readouterr().err
