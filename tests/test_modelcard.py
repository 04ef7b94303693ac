"""Model cards: Hugging Face model-index metadata (base checkpoint, language, data, recipe, test CER/WER)
that huggingface_hub reads back."""

import json

from huggingface_hub import ModelCard

from crossling import paths
from crossling.config import TrainConfig
from crossling.modelcard import write_model_card
from crossling.schedule import describe


def _run(tmp_path, language="pt", kind="hub", location="facebook/wav2vec2-large-xlsr-53"):
    from dataclasses import asdict

    prepared, run = tmp_path / "prepared", tmp_path / f"xlsr53-{language}-s1-abc"
    config = TrainConfig()
    identity = {"model": "xlsr53", "checkpoint": "xlsr53", "weights": location, "language": language, "seed": 1,
                "prepared": str(prepared), "config": asdict(config), "schedule": describe(config)}
    record = {"run": identity, "status": "done", "steps": 4000,
              "scores": {"dev": {"cer": 0.1012, "wer": 0.3}, "test": {"cer": 0.1234, "wer": 0.3456}},
              "cost": {"wall_seconds": 5400.0, "device": "cuda", "threads": 8}}
    paths.run_config_path(run).parent.mkdir(parents=True)
    paths.run_config_path(run).write_text(json.dumps({**identity, "source": {"kind": kind, "location": location},
                                                      "precision": "bf16"}))
    summary = paths.prepared_summary_path(prepared, language)
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"language": language, "source": "/data/cv-corpus-7.0-2021-07-21", "seed": 0,
                                   "train_hours": 5.0, "train_utterances": 3512, "train_speakers": 120,
                                   "dev_utterances": 400, "test_utterances": 500, "vocab": list("abcde"),
                                   "oov_rate": {"dev": 0.001, "test": 0.002}}))
    return run, record


def test_card_metadata_is_a_model_index_huggingface_hub_reads(tmp_path):
    run, record = _run(tmp_path)
    path = write_model_card(run, record)
    assert path == paths.run_model_dir(run) / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.base_model == "facebook/wav2vec2-large-xlsr-53" and data.language == ["pt"]
    assert data.pipeline_tag == "automatic-speech-recognition" and data.model_name == run.name
    results = {r.metric_type: r for r in data.eval_results}
    assert results["cer"].metric_value == 12.34 and results["wer"].metric_value == 34.56
    assert results["cer"].dataset_split == "test" and results["cer"].dataset_config == "pt"
    assert results["cer"].dataset_name == "Common Voice (cv-corpus-7.0-2021-07-21)"
    text = card.text
    for expected in ("Portuguese (pt)", "5.0 h, 3512 utterances, 120 speakers", "4000 steps", "tri_stage_linear",
                     "| CER (%) | 10.12 | 12.34 |", "frozen", "precision bf16", "1.5 h", 'pipeline("automatic-speech'):
        assert expected in text, expected


def test_card_leaves_wer_out_for_unsegmented_scripts_and_names_no_hub_base_for_local_models(tmp_path):
    run, record = _run(tmp_path, language="ja", kind="zoo", location="/x/zoo/zoo-es")
    card = ModelCard.load(write_model_card(run, record))
    assert [r.metric_type for r in card.data.eval_results] == ["cer"] and card.data.base_model is None
    assert "WER (%)" not in card.text and "written without spaces" in card.text
    assert "mini-zoo model `xlsr53`" in card.text


def test_card_says_when_the_data_summary_is_missing(tmp_path):
    run, record = _run(tmp_path)
    paths.prepared_summary_path(tmp_path / "prepared", "pt").unlink()
    assert "prepared.json) was not found" in ModelCard.load(write_model_card(run, record)).text
