import json

import pytest
import torch
from tinydata_factory import MODEL_TYPES, make_tiny_checkpoint

from crossling.config import TrainConfig
from crossling.errors import ModelError
from crossling.models import (
    frames_for_samples,
    load_for_finetuning,
    load_tokenizer,
    random_init_config,
    resolve,
)

RECIPE = TrainConfig(mask_time_prob=0.3, hidden_dropout=0.05)


def test_unknown_name_lists_the_registered_aliases():
    with pytest.raises(ModelError, match=r"not a registered alias.*registered aliases: .*xlsr300m.*random-init"):
        resolve("no-such-model")
    with pytest.raises(ModelError, match="mini-zoo checkpoint 'nothing-here' not found"):
        resolve("zoo:nothing-here")


def test_resolve_alias_hub_id_local_dir_and_random(tmp_path):
    alias = resolve("xlsr300m")
    assert (alias.kind, alias.location, alias.alias) == ("hub", "facebook/wav2vec2-xls-r-300m", "xlsr300m")
    assert resolve("facebook/wav2vec2-large-xlsr-53").alias == "xlsr53"
    assert resolve("someone/their-model").kind == "hub"
    assert resolve(str(tmp_path)) .kind == "local"
    random = resolve("random-init")
    assert random.kind == "random" and random.location.endswith("xls-r-300m.json")


def test_random_init_is_the_large_xls_r_architecture():
    config = random_init_config(resolve("random-init").location)
    assert config.model_type == "wav2vec2"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1024, 24, 16)
    assert config.intermediate_size == 4096 and config.conv_dim == (512,) * 7 or config.conv_dim == [512] * 7
    assert config.feat_extract_norm == "layer" and config.do_stable_layer_norm


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_type_loads_with_a_fresh_head_and_frozen_encoder(tmp_path, model_type):
    checkpoint = make_tiny_checkpoint(tmp_path, model_type)
    model, spec = load_for_finetuning(resolve(str(checkpoint)), vocab_size=11, config=RECIPE, seed=0)
    assert model.config.model_type == model_type and model.lm_head.out_features == 11
    assert model.config.mask_time_prob == 0.3 and model.config.hidden_dropout == 0.05
    encoder_params = [p for name, p in model.named_parameters() if ".feature_extractor." in name]
    assert encoder_params and not any(p.requires_grad for p in encoder_params)
    assert all(p.requires_grad for name, p in model.named_parameters() if name.startswith("lm_head"))
    assert spec.use_attention_mask and spec.do_normalize and spec.feat_extract_norm == "layer"
    again, _ = load_for_finetuning(resolve(str(checkpoint)), vocab_size=11, config=RECIPE, seed=0)
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)  # the head is seeded


def test_group_norm_gets_no_attention_mask_and_preprocessor_is_respected(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path, "wav2vec2", feat_extract_norm="group",
                                      preprocessor={"do_normalize": False, "return_attention_mask": False})
    _, spec = load_for_finetuning(resolve(str(checkpoint)), vocab_size=7, config=RECIPE, seed=0)
    assert not spec.use_attention_mask and not spec.do_normalize and spec.feat_extract_norm == "group"


def test_frame_count_matches_transformers(tmp_path):
    model, _ = load_for_finetuning(resolve(str(make_tiny_checkpoint(tmp_path))), 7, RECIPE, 0)
    for samples in (400, 401, 16_000, 23_456):
        assert frames_for_samples(model.config, samples) == int(model._get_feat_extract_output_lengths(samples))


def test_checkpoint_code_is_never_executed(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "code-ran"
    (checkpoint / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nclass Evil: pass\n")
    config = json.loads((checkpoint / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Evil", "AutoModelForCTC": "evil.Evil"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    try:
        load_for_finetuning(resolve(str(checkpoint)), 7, RECIPE, 0)
    except ModelError:
        pass
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_are_loaded_without_running_code(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt")
    (checkpoint / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    torch.save({"weight": _Payload(str(marker))}, checkpoint / "pytorch_model.bin")
    with pytest.raises(ModelError):
        load_for_finetuning(resolve(str(checkpoint)), 7, RECIPE, 0)
    assert not marker.exists()


def test_directory_without_weights_is_refused(tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt")
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no model weights"):
        load_for_finetuning(resolve(str(checkpoint)), 7, RECIPE, 0)


def test_tokenizer_length_equals_the_vocabulary(tmp_path):
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = load_tokenizer(tmp_path / "vocab.json")
    assert len(tokenizer) == 5 and tokenizer("ab ba").input_ids == [3, 4, 2, 4, 3]
    assert tokenizer("aq").input_ids == [3, 1]


def test_zoo_sources_resolve_to_the_bundled_directory(tmp_path, monkeypatch):
    import crossling.models as models

    package = tmp_path / "crossling"
    make_tiny_checkpoint(package / "zoo" / "tiny-es", "wav2vec2")
    monkeypatch.setattr(models.resources, "files", lambda name: package)
    source = resolve("zoo:tiny-es")
    assert (source.kind, source.location) == ("zoo", str(package / "zoo" / "tiny-es"))
    model, spec = load_for_finetuning(source, 9, RECIPE, 0)
    assert model.lm_head.out_features == 9 and spec.use_attention_mask
