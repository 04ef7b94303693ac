import json

import numpy as np
import pytest
import torch
from tinydata_factory import ALL_MODEL_TYPES, make_prepared, make_tiny_checkpoint

from crossling import paths
from crossling.config import TrainConfig
from crossling.errors import DataError, ModelError
from crossling.evaluate import evaluate
from crossling.finetune import finetune
from crossling.prepared import load_audio, open_prepared

# a few steps only: the fresh random head then emits varied characters, which makes the comparison
# with plain transformers meaningful (a blank-only model would agree trivially)
FEW_STEPS = TrainConfig(learning_rate=1e-4, max_steps=3, batch_seconds=8.0, checkpoint_every=3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    make_prepared(root, "xx", n_train=8, n_dev=4, n_test=10)
    make_prepared(root, "yy", n_train=4, n_dev=2, n_test=2, chars="abcdxyz", seed=1)
    return root


def plain_transformers_transcripts(model_dir, waveforms):
    """What a user gets from the saved directory with transformers alone, two ways."""
    from transformers import AutoModelForCTC, AutoProcessor, pipeline

    asr = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    by_pipeline = [asr({"raw": w, "sampling_rate": 16_000})["text"] for w in waveforms]
    model = AutoModelForCTC.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    by_model = []
    for waveform in waveforms:
        inputs = processor(waveform, sampling_rate=16_000, return_tensors="pt")
        with torch.no_grad():
            ids = model(**inputs).logits.argmax(-1)[0]
        by_model.append(processor.decode(ids))
    return by_pipeline, by_model


@pytest.mark.slow
@pytest.mark.parametrize(("model_type", "norm"), [(t, "layer") for t in ALL_MODEL_TYPES] + [("wav2vec2", "group")])
def test_saved_model_transcribes_the_same_with_plain_transformers(prepared, tmp_path, model_type, norm):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", model_type, feat_extract_norm=norm)
    run = tmp_path / "run"
    finetune(prepared, "xx", str(checkpoint), out=run, config=FEW_STEPS, device="cpu")
    result = evaluate(run, prepared, "xx", splits=("test",), out=tmp_path / "eval", device="cpu")
    rows = [json.loads(line) for line in paths.run_hypotheses_path(tmp_path / "eval", "test").read_text().splitlines()]
    ours = [row["hypothesis"] for row in rows]
    assert sum(bool(h) for h in ours) >= 5, ours
    data = open_prepared(prepared, "xx")
    waveforms = [load_audio(prepared, u) for u in data.split("test")]
    by_pipeline, by_model = plain_transformers_transcripts(paths.run_model_dir(run), waveforms)
    assert ours == by_pipeline == by_model
    assert result.run.steps == 3 and result.scores["test"].utterances == 10
    # the run's own evaluation (in-memory model) agrees with the reloaded one
    run_rows = [json.loads(line) for line in paths.run_hypotheses_path(run, "test").read_text().splitlines()]
    assert [row["hypothesis"] for row in run_rows] == ours
    feature_extractor = json.loads((paths.run_model_dir(run) / "processor_config.json").read_text())
    assert feature_extractor["feature_extractor"]["return_attention_mask"] is (norm == "layer")
    expected = "SeamlessM4TFeatureExtractor" if model_type == "wav2vec2-bert" else "Wav2Vec2FeatureExtractor"
    assert feature_extractor["feature_extractor"]["feature_extractor_type"] == expected


@pytest.mark.slow
def test_scores_are_recomputable_from_the_hypotheses(prepared, tmp_path):
    from crossling.scoring import for_scoring, score

    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    finetune(prepared, "xx", str(checkpoint), out=tmp_path / "run", config=FEW_STEPS, device="cpu")
    result = evaluate(tmp_path / "run" / "model", prepared, "xx", out=tmp_path / "eval", device="cpu")
    for split in ("dev", "test"):
        rows = [json.loads(line) for line in paths.run_hypotheses_path(tmp_path / "eval", split).read_text().splitlines()]
        again = score([r["reference"] for r in rows], [for_scoring(r["hypothesis"]) for r in rows])
        assert again.to_dict() == {k: v for k, v in result.scores[split].to_json().items() if k != "by_gender"}
    on_disk = json.loads(paths.run_scores_path(tmp_path / "eval").read_text())
    assert on_disk == {split: s.to_json() for split, s in result.scores.items()}
    assert result.run is None and result.to_json()["steps"] is None  # a bare model directory has no run record


@pytest.mark.slow
def test_vocabulary_mismatch_is_refused(prepared, tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    finetune(prepared, "xx", str(checkpoint), out=tmp_path / "run", config=FEW_STEPS, device="cpu")
    with pytest.raises(ModelError, match=r"does not match .*yy.*vocab\.json.*\['x', 'y', 'z'\]"):
        evaluate(tmp_path / "run", prepared, "yy", device="cpu")


def test_missing_language_and_model_errors(prepared, tmp_path):
    with pytest.raises(DataError, match=r"'pt' is not prepared.*prepared languages there: xx, yy"):
        evaluate(tmp_path, prepared, "pt")
    with pytest.raises(ModelError, match="neither a finished run directory"):
        evaluate(tmp_path, prepared, "xx")


@pytest.mark.slow
@pytest.mark.parametrize(("model_type", "norm"), [("wav2vec2", "layer"), ("wav2vec2", "group"), ("hubert", "group"),
                                                  ("data2vec-audio", "layer"), ("wav2vec2-conformer", "layer"),
                                                  ("wav2vec2-bert", "layer")])
def test_transcripts_do_not_depend_on_batching(prepared, tmp_path, model_type, norm):
    """Length-sorted batched inference returns the same paths as one utterance at a time, for group-norm
    CNNs too (their features are computed per utterance, the transformer runs batched under a mask)."""
    from crossling.decoding import best_paths, path_to_text
    from crossling.models import load_finetuned

    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", model_type, feat_extract_norm=norm)
    finetune(prepared, "xx", str(checkpoint), out=tmp_path / "run", config=FEW_STEPS, device="cpu")
    model, _, spec = load_finetuned(paths.run_model_dir(tmp_path / "run"))
    assert spec.use_attention_mask is (norm == "layer")
    data = open_prepared(prepared, "xx")
    waveforms = [load_audio(prepared, u) for u in data.split("test")]
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(output.logits.shape[0]))
    batched = best_paths(model, waveforms, spec, batch_seconds=100.0)
    if model_type in ("data2vec-audio", "wav2vec2-conformer", "wav2vec2-bert"):  # padding reaches their last
        # frames (the tiny w2v-BERT has the adapter its fine-tuning recipe adds)
        assert calls == [1] * len(waveforms)
    else:
        assert max(calls) >= 5  # utterances really shared a forward pass
    calls.clear()
    alone = best_paths(model, waveforms, spec, batch_seconds=0.0)
    assert calls == [1] * len(waveforms)
    assert batched == alone
    id_to_token = {i: t for t, i in data.vocab.items()}
    assert sum(bool(path_to_text(p, id_to_token)) for p in alone) >= 5  # not a blank-only model
    assert len({len(w) for w in waveforms}) > 1 and np.isfinite(waveforms[0]).all()


@pytest.mark.slow
def test_cli_evaluate(prepared, tmp_path, capsys):
    from crossling.cli import main

    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "unispeech")
    finetune(prepared, "xx", str(checkpoint), out=tmp_path / "run", config=FEW_STEPS, device="cpu")
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(prepared), "--language", "xx", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 3 and printed["cer"] == printed["scores"]["test"]["cer"]
    assert printed["skipped"]["nonfinite_loss_steps"] == 0
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(prepared), "--language", "xx"]) == 0
    assert "xx test: CER" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(prepared), "--language", "yy"]) == 2
    assert "does not match" in capsys.readouterr().err
