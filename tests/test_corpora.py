"""`crossling prepare` on corpora besides Common Voice: manifest folders, HF datasets, lhotse manifests."""

import json
from dataclasses import replace

import pytest
from corpus_factory import entries, write_hf_dataset, write_lhotse, write_manifest_folder
from cvfactory import standard_splits, write_release

from crossling import paths
from crossling.cli import main
from crossling.corpora import CorpusOptions, detect_format
from crossling.errors import ConfigError, DataError
from crossling.manifest import read_manifest
from crossling.prepare import PrepareOptions, prepare_release

HOURS = 12 / 3600  # 12 s of training audio


def prepared_split(out, language, split):
    return read_manifest(paths.manifest_path(out, language, split))


def prepare(source, out, language="sw", **options):
    """prepare_release's result for one language in its JSON form (prepared.json's record plus cache counts)."""
    corpus = CorpusOptions(**{k: options.pop(k) for k in list(options) if k in CorpusOptions.__dataclass_fields__})
    options.setdefault("train_hours", HOURS)
    (prepared,) = prepare_release(source, [language], out, PrepareOptions(**options), corpus=corpus, workers=1)
    return prepared.to_json()


# --- manifest folders ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_manifest_folder_through_the_cli(tmp_path, fmt, capsys):
    source = write_manifest_folder(tmp_path / "corpus", "sw", entries(), fmt=fmt)
    out = tmp_path / "prepared"
    argv = ["prepare", str(source), "--languages", "sw", "--out", str(out), "--train-hours", str(HOURS),
            "--workers", "1", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["format"] == "manifest" and HOURS <= summary["train_hours"] < HOURS + 1.75 / 3600
    train, dev, test = (prepared_split(out, "sw", s) for s in ("train", "dev", "test"))
    assert {u.speaker for u in dev} == {"spk08"} and {u.speaker for u in test} == {"spk09"}
    assert not {u.speaker for u in train} & {"spk08", "spk09"}
    assert len(dev) == len(test) == 4 and train[0].id.startswith("clips__spk")  # folders flattened, unique
    assert summary["vocab"] == sorted(set("".join(u.text for u in train)) - {" "})  # train text only
    assert summary["normalization"]["function"] == "crossling.text.normalize"


def test_same_subset_as_the_common_voice_release(tmp_path):
    """The same clips and sentences as a CV release and as a manifest folder prepare to the same train
    subset, dev and test (same seeded order, same N-hour rule, same normalization)."""
    splits = standard_splits("pt")
    write_release(tmp_path / "cv", {"pt": splits}, corpus_dir=None)
    folder = tmp_path / "manifest" / "pt"
    folder.mkdir(parents=True)
    lines = ["path\ttext\tspeaker\tgender\tsplit"]
    for split, clips in splits.items():
        for clip in clips:
            (folder / clip.name).write_bytes((tmp_path / "cv" / "pt" / "clips" / clip.name).read_bytes())
            lines.append(f"{clip.name}\t{clip.sentence}\t{clip.speaker}\t{clip.gender}\t{split}")
    (folder / "manifest.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cv = prepare(tmp_path / "cv", tmp_path / "p-cv", "pt", train_hours=8 / 3600, seed=3)
    ours = prepare(tmp_path / "manifest", tmp_path / "p-m", "pt", train_hours=8 / 3600, seed=3)
    assert (cv["format"], ours["format"]) == ("cv", "manifest")
    for split in ("train", "dev", "test"):
        a, b = prepared_split(tmp_path / "p-cv", "pt", split), prepared_split(tmp_path / "p-m", "pt", split)
        assert [(u.id, u.text, u.num_samples, u.speaker) for u in a] == [(u.id, u.text, u.num_samples, u.speaker)
                                                                          for u in b]
    assert cv["vocab"] == ours["vocab"] and cv["train_hours"] == ours["train_hours"]


def test_dev_and_test_are_drawn_by_speaker_when_there_is_no_split(tmp_path):
    items = entries(speakers=20)
    source = write_manifest_folder(tmp_path / "c", "sw", items, columns=("path", "text", "speaker"))
    first = prepare(source, tmp_path / "a", held_out_speakers=0.1, seed=0)
    speakers = {s: {u.speaker for u in prepared_split(tmp_path / "a", "sw", s)} for s in ("train", "dev", "test")}
    assert len(speakers["dev"]) == len(speakers["test"]) == 2
    assert not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"]
                or speakers["dev"] & speakers["test"])
    # another train subset seed keeps dev and test; another split seed draws other speakers
    prepare(source, tmp_path / "b", seed=5)
    assert {u.speaker for u in prepared_split(tmp_path / "b", "sw", "test")} == speakers["test"]
    prepare(source, tmp_path / "c2", split_seed=1)
    assert {u.speaker for u in prepared_split(tmp_path / "c2", "sw", "test")} != speakers["test"]
    assert first["dev_utterances"] == 8


def test_any_bcp47_code_and_generic_normalization(tmp_path):
    items = [replace(e, text="¡Habari ZA asubuhi!") for e in entries()]
    source = write_manifest_folder(tmp_path / "c", "swh-Latn-KE", items)
    summary = prepare(source, tmp_path / "p", "swh-Latn-KE")
    assert {u.text for u in prepared_split(tmp_path / "p", "swh-Latn-KE", "train")} == {"habari za asubuhi"}
    assert summary["normalization"]["lowercase"] == "str.lower"
    with pytest.raises(ConfigError, match=r"'\.\./x' is not an ISO 639 or BCP-47 code"):
        prepare(source, tmp_path / "q", "../x", format="manifest")


def test_skips_are_counted_as_for_common_voice(tmp_path):
    items = entries()  # the broken ones in dev, which is decoded whole
    items[32] = replace(items[32], kind="missing")
    items[33] = replace(items[33], kind="corrupt")
    items[34] = replace(items[34], text="?!")
    items[35] = replace(items[35], kind="empty")
    items[31] = replace(items[31], split="dev")
    source = write_manifest_folder(tmp_path / "c", "sw", items)
    summary = prepare(source, tmp_path / "p", train_hours=30 / 3600)
    assert {k: v for k, v in summary["skipped"].items() if v} == {
        "missing_clip": 1, "corrupt_clip": 1, "empty_sentence": 1, "empty_clip": 1}
    again = prepare(source, tmp_path / "p", train_hours=30 / 3600)
    assert again["cache"]["decoded"] == 0 and again["cache"]["reused"] > 0  # the decode cache is shared


def _write(folder, text, name="manifest.tsv"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("manifest.tsv", "path\tspeaker\nclips/a.flac\ts\n", r"manifest\.tsv:1: lacks column\(s\) text"),
    ("manifest.tsv", "path\ttext\n../../etc/passwd\thi\n", r"manifest\.tsv:2: audio path '\.\./\.\./etc/passwd' leaves"),
    ("manifest.tsv", "path\ttext\n/abs/a.flac\thi\n", r"manifest\.tsv:2: audio path '/abs/a\.flac' leaves"),
    ("manifest.tsv", "path\ttext\n\thi\n", r"manifest\.tsv:2: empty path"),
    ("manifest.tsv", "path\ttext\tsplit\na.flac\thi\ttrain\nb.flac\tho\tholdout\n",
     r"manifest\.tsv:3: split 'holdout' is not one of train, dev, test"),
    ("manifest.tsv", "path\ttext\na.flac\thi\textra\n", r"manifest\.tsv:2: expected 2 columns"),
    ("manifest.tsv", "path\ttext\tsplit\na.flac\thi\ttrain\nb.flac\tho\t\n",
     r"manifest\.tsv:3: no split, although other rows have one"),
    ("manifest.csv", 'path,text\n"a.flac,hi\n', r"manifest\.csv:\d+: "),
    ("manifest.jsonl", '{"path": "a.flac", "text": "hi"}\n{"path": "b.flac", \n', r"manifest\.jsonl:2: not valid JSON"),
    ("manifest.jsonl", '["a.flac", "hi"]\n', r"manifest\.jsonl:1: expected a JSON object"),
    ("manifest.tsv", "path\ttext\nclips/a.flac\thi\nclips/b.flac\tho\n", r"2 speaker\(s\) cannot be split"),
])
def test_bad_manifests_name_file_and_line(tmp_path, capsys, name, text, message):
    _write(tmp_path / "c" / "sw", text, name)
    out = tmp_path / "p"
    argv = ["prepare", str(tmp_path / "c"), "--languages", "sw", "--out", str(out), "--workers", "1"]
    assert main(argv) == 2
    import re

    assert re.search(message, capsys.readouterr().err), message
    assert not paths.prepared_summary_path(out, "sw").exists()


def test_ambiguous_or_missing_folders(tmp_path):
    _write(tmp_path / "c" / "sw", "path\ttext\n", "manifest.tsv")
    _write(tmp_path / "c" / "sw", "path,text\n", "manifest.csv")
    with pytest.raises(DataError, match=r"expected exactly one of manifest\.tsv, manifest\.csv, manifest\.jsonl"):
        prepare(tmp_path / "c", tmp_path / "p")
    with pytest.raises(DataError, match=r"no folder for language 'yo'.*present: sw"):
        prepare(tmp_path / "c", tmp_path / "p", "yo", format="manifest")
    with pytest.raises(ConfigError, match="not a corpus format"):
        prepare(tmp_path / "c", tmp_path / "p", format="kaldi")


def test_corpus_options_are_checked_before_anything_is_written(tmp_path, capsys):
    argv = ["prepare", str(tmp_path / "c"), "--languages", "sw", "--out", str(tmp_path / "p")]
    assert main([*argv, "--held-out-speakers", "0.7"]) == 2
    assert "held_out_speakers (--held-out-speakers) must be in (0, 0.5), got 0.7" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_format_detection(tmp_path):
    write_manifest_folder(tmp_path / "m", "sw", entries(speakers=3, per_speaker=1))
    write_release(tmp_path / "cv", ["pt"])
    assert detect_format(tmp_path / "m", ["sw"]) == "manifest"
    assert detect_format(tmp_path / "cv", ["pt"]) == "cv"
    assert detect_format(tmp_path / "m" / "sw", ["sw"]) == "manifest"  # a one-language corpus given directly


# --- Hugging Face datasets -------------------------------------------------------------------------


def test_hf_dataset_with_splits_and_named_columns(tmp_path, capsys):
    source = write_hf_dataset(tmp_path / "hf", "sw", entries(), text_column="sentence")
    out = tmp_path / "p"
    argv = ["prepare", str(source), "--languages", "sw", "--out", str(out), "--train-hours", str(HOURS),
            "--workers", "1", "--text-column", "sentence", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["format"] == "hf" and summary["train_hours"] >= HOURS
    assert {u.speaker for u in prepared_split(out, "sw", "dev")} == {"spk08"}  # 'validation' is dev
    assert main(argv[:-3] + ["--json"]) == 2  # the default text column is not there; under --json, a JSON error
    error = json.loads(capsys.readouterr().out)["error"]
    assert "no text column 'text' (--text-column); columns: audio, sentence, speaker, gender" in error


def test_hf_dataset_without_splits(tmp_path):
    source = write_hf_dataset(tmp_path / "hf", "sw", entries(speakers=12), splits=False)
    summary = prepare(source, tmp_path / "p", held_out_speakers=0.1)
    assert summary["dev_utterances"] == summary["test_utterances"] == 4
    staged = list((tmp_path / "p").glob(".staging-*"))
    assert not staged  # embedded audio was staged only while preparing


# --- lhotse -----------------------------------------------------------------------------------------


def test_lhotse_manifests_with_segments(tmp_path):
    items = entries()
    source = write_lhotse(tmp_path / "lh", "sw", items)
    summary = prepare(source, tmp_path / "p", train_hours=30 / 3600)
    assert summary["format"] == "lhotse"
    test = prepared_split(tmp_path / "p", "sw", "test")
    expected = {f"rec{i:04d}-{k}": items[i + k] for i in range(0, len(items), 2) for k in (0, 1)}
    for utterance in test:  # each supervision is its own segment of a two-utterance recording
        assert utterance.speaker == "spk09" and utterance.text
        assert abs(utterance.duration - expected[utterance.id].seconds) < 0.002


def test_lhotse_unsplit_pair_and_bad_references(tmp_path):
    source = write_lhotse(tmp_path / "lh", "sw", entries(speakers=12), per_split=False)
    summary = prepare(source, tmp_path / "p", train_hours=20 / 3600)
    assert summary["dev_utterances"] == 4
    import gzip

    supervisions = tmp_path / "lh" / "sw" / "sw_supervisions.jsonl.gz"
    lines = gzip.decompress(supervisions.read_bytes()).decode().splitlines()
    row = json.loads(lines[2])
    row["recording_id"] = "nowhere"
    lines[2] = json.dumps(row)
    supervisions.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(DataError, match=r"sw_supervisions\.jsonl\.gz:3: supervision 'rec0002-0' names recording "
                                        r"'nowhere'"):
        prepare(source, tmp_path / "q")
