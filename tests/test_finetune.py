import json

import pytest
import torch
from tinydata_factory import MODEL_TYPES, make_prepared, make_tiny_checkpoint

from crossling import paths
from crossling.batching import open_prepared
from crossling.config import TrainConfig
from crossling.finetune import finetune, make_batch, training_data
from crossling.models import InputSpec, load_finetuned, load_for_finetuning, load_tokenizer, resolve

TINY = TrainConfig(learning_rate=2e-3, max_steps=40, batch_seconds=8.0, checkpoint_every=20, collapse_patience=30)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"), too_long=2)


def corpus_loss(model, data, config):
    """Mean CTC loss over the (filtered) training set in eval mode, in one padded batch."""
    tokenizer = load_tokenizer(data.vocab_file)
    training = training_data(data, tokenizer, model.config, config, seed=0)
    norm = model.config.feat_extract_norm
    spec = InputSpec(do_normalize=True, use_attention_mask=norm == "layer", feat_extract_norm=norm)
    batch = make_batch(training, list(range(len(training.utterances))), spec, "cpu")
    batch.pop("frames")
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_training_lowers_the_loss_for_each_model_type(prepared, tmp_path, model_type):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", model_type)
    data = open_prepared(prepared, "xx")
    initial, _ = load_for_finetuning(resolve(str(checkpoint)), len(data.vocab), TINY, seed=0)
    before = corpus_loss(initial, data, TINY)
    record = finetune(prepared, "xx", str(checkpoint), 0, tmp_path / "run", TINY, device="cpu")
    after = corpus_loss(load_finetuned(paths.run_model_dir(tmp_path / "run"))[0], data, TINY)
    assert after < 0.7 * before, (before, after)
    assert record["steps"] == TINY.max_steps and record["status"] == "done"


def test_result_record_contract(prepared, tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    out = tmp_path / "run"
    record = finetune(prepared, "xx", str(checkpoint), 3, out, TINY, device="cpu")
    assert json.loads(paths.run_result_path(out).read_text()) == record
    assert record["run"]["seed"] == 3 and record["run"]["config"]["learning_rate"] == 2e-3
    assert "linear" in record["run"]["schedule"]
    assert record["skipped"] == {"label_too_long": 2, "audio_too_long": 0, "nonfinite_loss_steps": 0}
    for split in ("dev", "test"):
        s = record["scores"][split]
        assert {"cer", "wer", "char_edits", "chars", "word_edits", "words", "utterances", "by_gender"} <= set(s)
        assert set(s["by_gender"]) == {"female", "male"}
        assert sum(g["chars"] for g in s["by_gender"].values()) == s["chars"]
        assert s["cer"] == pytest.approx(s["char_edits"] / s["chars"])
    assert record["scores"]["test"]["utterances"] == 8
    cost = record["cost"]
    assert cost["wall_seconds"] > 0 and cost["audio_seconds_trained"] > 0 and cost["peak_memory_mb"] > 0
    assert cost["threads"] == torch.get_num_threads() and cost["device"] == "cpu"
    assert set(record["collapse"]) == {"blank_only_fraction", "warned"}
    assert set(record["versions"]) == {"crossling", "torch", "transformers"}
    config = json.loads(paths.run_config_path(out).read_text())
    assert config["input"]["use_attention_mask"] is True and config["input"]["feat_extract_norm"] == "layer"
    assert "step 0" in paths.run_log_path(out).read_text()
    hyps = [json.loads(line) for line in paths.run_hypotheses_path(out, "test").read_text().splitlines()]
    assert len(hyps) == 8 and {"id", "reference", "hypothesis"} <= set(hyps[0])
    # a finished run returns its record without training again
    assert finetune(prepared, "xx", str(checkpoint), 3, out, TINY, device="cpu") == record
