"""A study's data source: the [data] table embeds the stages' own option declarations (PrepareOptions,
CorpusOptions, SynthOptions), the data identity, and that the CLI, the study file and the API share each option."""

import dataclasses

import pytest

from crossling.cli import build_parser
from crossling.corpora import CorpusOptions
from crossling.errors import ConfigError
from crossling.prepare import PrepareOptions
from crossling.sources import SYNTHETIC_DEFAULTS, CommonVoiceData, CorpusData, SyntheticData, parse_data
from crossling.study import expand_runs, load_study
from crossling.synth import SynthOptions


def _study(tmp_path, data: str):
    path = tmp_path / "s.toml"
    path.write_text(f'checkpoints = ["xlsr53"]\nlanguages = ["pt"]\nseeds = [0]\n[data]\n{data}\n')
    return load_study(path)


def test_the_data_table_builds_the_stages_options(tmp_path):
    study = _study(tmp_path, 'source = "synthetic"\nhours = 0.3\nseed = 4\nword_range = [2, 4]\neval_seed = 1\n'
                             'dev_max = 5\nnoise = true\nout = "p"\n')
    options = study.data.options
    assert isinstance(options, SyntheticData) and options.out == "p"
    assert options.synth == SynthOptions(hours=0.3, seed=4, word_range=(2, 4), noise=True)
    assert options.prepare == PrepareOptions(train_hours=SYNTHETIC_DEFAULTS["train_hours"], seed=4, eval_seed=1,
                                             dev_max=5)  # one `seed` seeds synthesis and selection
    cv = _study(tmp_path, 'source = "common-voice"\nrelease = "cv"\nmax_hours_per_speaker = 0.5\n').data.options
    assert isinstance(cv, CommonVoiceData) and cv.prepare == PrepareOptions(max_hours_per_speaker=0.5)
    corpus = _study(tmp_path, 'source = "corpus"\npath = "c"\nformat = "hf"\ntext_column = "transcription"\n'
                              'held_out_speakers = 0.2\ntrain_hours = 1.5\n').data
    assert isinstance(corpus.options, CorpusData) and corpus.options.path == "c"
    assert corpus.options.corpus == CorpusOptions(format="hf", text_column="transcription", held_out_speakers=0.2)
    assert corpus.options.prepare == PrepareOptions(train_hours=1.5)
    assert corpus.identity() == {"source": "corpus", "path": "c", **dataclasses.asdict(corpus.options.corpus),
                                 **dataclasses.asdict(corpus.options.prepare)}


def test_a_corpus_source_checks_its_options_where_they_are_written(tmp_path):
    with pytest.raises(ConfigError, match=r"s.toml \[data\] \(source = 'corpus'\): format \(--format\) 'kaldi' "
                                          r"is not a corpus format; choose one of cv, manifest, hf, lhotse"):
        parse_data({"source": "corpus", "path": "c", "format": "kaldi"}, "s.toml", tmp_path)
    with pytest.raises(ConfigError, match=r"\(source = 'corpus'\): held_out_speakers .* must be in \(0, 0.5\), got 0.6"):
        parse_data({"source": "corpus", "path": "c", "held_out_speakers": 0.6}, "s.toml", tmp_path)
    with pytest.raises(ConfigError, match=r"\(source = 'corpus'\): unknown key\(s\) audio; valid keys: audio_column, "
                                          r"dev_max, eval_seed, format, gender_column, held_out_speakers, "
                                          r"max_hours_per_speaker, out, path, seed, speaker_column, split_seed, "
                                          r"test_max, text_column, train_hours, vocab_threshold"):
        parse_data({"source": "corpus", "path": "c", "audio": "a"}, "s.toml", tmp_path)


def test_options_added_to_a_source_change_run_ids_only_when_set(tmp_path):
    def ids(extra: str) -> set[str]:
        return {r.run_id for r in expand_runs(_study(tmp_path, f'source = "synthetic"\nhours = 0.1\n{extra}'))}

    plain = ids("")
    assert ids("vocabulary = 5000\nword_range = [3, 6]\n") == plain  # defaults spelled out: the same runs
    for extra in ("vocabulary = 300\n", "word_range = [2, 3]\n", "eval_seed = 2\n", "max_hours_per_speaker = 0.01\n"):
        assert not ids(extra) & plain, extra


def test_unknown_data_keys_list_every_option_of_the_source(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) hourz; valid keys: dev_fraction, dev_max, eval_seed, "
                                          r"hours, max_hours_per_speaker, noise, out, seed, speakers, test_fraction, "
                                          r"test_max, train_hours, vocab_threshold, vocabulary, word_range"):
        parse_data({"source": "synthetic", "hourz": 1}, "s.toml", tmp_path)
    with pytest.raises(ConfigError, match=r"\(source = 'common-voice'\): missing required key\(s\) release"):
        parse_data({"source": "common-voice"}, "s.toml", tmp_path)


def _flags(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[command]
    return {action.dest for action in sub._actions}


@pytest.mark.parametrize(("options_class", "command", "source"), [
    (PrepareOptions, "prepare", "common-voice"), (SynthOptions, "synth", "synthetic"), (PrepareOptions, None, "synthetic"),
    (CorpusOptions, "prepare", "corpus"), (PrepareOptions, None, "corpus"),
])
def test_every_option_is_a_flag_and_a_study_key(tmp_path, options_class, command, source):
    """One declaration: a field added to a stage's options is settable from the CLI and the study file."""
    names = {f.name for f in dataclasses.fields(options_class)}
    if command:
        assert names <= _flags(command)
    extra = {"common-voice": {"release": "cv"}, "corpus": {"path": "c"}}.get(source, {})
    for field in dataclasses.fields(options_class):
        if field.default is not dataclasses.MISSING and field.default is not None and field.name not in extra:
            parse_data({"source": source, **extra, field.name: field.default}, "s.toml", tmp_path)
