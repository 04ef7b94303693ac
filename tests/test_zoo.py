"""The bundled mini-zoo: registry facts, every checkpoint loads for CTC fine-tuning, the recipe matches
what was built, and `build_zoo` rebuilds a (tiny) zoo from a recipe."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from crossling import paths
from crossling.errors import ConfigError
from crossling.registry import find_checkpoint, get_checkpoint, zoo_checkpoints
from crossling.zoo import MODEL_FILES, read_recipe, zoo_dir


def pretrained():
    return [c for c in zoo_checkpoints() if c.pretrain_hours > 0]


def test_registry_holds_the_zoo_with_its_facts():
    zoo = zoo_checkpoints()
    recipe = read_recipe()
    assert [c.alias for c in zoo] == [m.alias for m in recipe.models]
    random = {m.alias for m in recipe.models if m.random}
    for checkpoint in zoo:
        assert checkpoint.source == ("random:" if checkpoint.alias in random else "") + f"zoo:{checkpoint.alias}"
        assert checkpoint.is_random_init is (checkpoint.alias in random)
        assert get_checkpoint(checkpoint.alias) == checkpoint
        assert checkpoint.model_type == "wav2vec2" and checkpoint.size == "micro"
        assert "pretrain_families" in checkpoint.extra
    mono = [c for c in pretrained() if not c.multilingual]
    mono_families = {c.extra["pretrain_families"][0] for c in mono}
    assert len(mono_families) >= 2, "monolingual models of two subgroups"
    multi = [c for c in pretrained() if c.multilingual]
    diverse = max(multi, key=lambda c: len(set(c.extra["pretrain_families"])))
    homogeneous = [c for c in multi if len(set(c.extra["pretrain_families"])) == 1]
    assert len(set(diverse.extra["pretrain_families"])) >= 3
    assert homogeneous and homogeneous[0].pretrain_hours > diverse.pretrain_hours
    assert any(c.pretrain_hours == 0 and not c.pretrain_languages for c in zoo), "a random-init baseline"


def test_every_model_was_built_with_the_same_recipe_and_budget():
    recipe = read_recipe()
    records = {c.alias: json.loads(paths.pretrain_record_path(zoo_dir() / c.alias).read_text()) for c in pretrained()}
    assert len({json.dumps(r["recipe"], sort_keys=True) for r in records.values()}) == 1
    for alias, record in records.items():
        model = next(m for m in recipe.models if m.alias == alias)
        assert record["steps"] == recipe.pretrain["steps"]
        assert record["architecture"] == recipe.pretrain["architecture"]
        assert list(record["hours"]) == list(model.languages)
        for hours, wanted in zip(record["hours"].values(), model.hours_per_language, strict=True):
            assert wanted <= hours < wanted + 0.01
        assert record["final"]["accuracy"] > record["initial"]["accuracy"] + 0.05


def test_zoo_is_small():
    sizes = {c.alias: sum(p.stat().st_size for p in (zoo_dir() / c.alias).iterdir()) for c in zoo_checkpoints()}
    assert all(size < 5e6 for size in sizes.values()), sizes
    assert sum(sizes.values()) < 30e6


def test_each_zoo_model_loads_for_ctc_fine_tuning():
    torch = pytest.importorskip("torch")
    from crossling.config import TrainConfig
    from crossling.models import load_for_finetuning, resolve

    for checkpoint in zoo_checkpoints():
        source = resolve(checkpoint.alias)
        if checkpoint.is_random_init:  # drawn per run from the architecture in its folder
            assert source.kind == "random" and source.location == str(zoo_dir() / checkpoint.alias / "config.json")
        else:
            assert source.kind == "zoo" and {p.name for p in Path(source.location).iterdir()} >= set(MODEL_FILES)
        model, spec = load_for_finetuning(source, vocab_size=9, config=TrainConfig(), seed=0)
        assert spec.use_attention_mask and spec.do_normalize
        logits = model(torch.randn(1, 16000), attention_mask=torch.ones(1, 16000, dtype=torch.long)).logits
        assert logits.shape[-1] == 9 and torch.isfinite(logits).all()


def test_the_random_baseline_is_drawn_per_seed_with_the_zoo_architecture():
    torch = pytest.importorskip("torch")
    from crossling.config import TrainConfig
    from crossling.models import load_for_finetuning, resolve

    random_alias = next(c.alias for c in zoo_checkpoints() if c.is_random_init)
    pretrained_alias = next(c.alias for c in pretrained())

    def weights(alias, seed):
        model, spec = load_for_finetuning(resolve(alias), vocab_size=9, config=TrainConfig(), seed=seed)
        return model.state_dict(), spec

    (seed0, spec), (again, _), (seed1, _) = weights(random_alias, 0), weights(random_alias, 0), weights(random_alias, 1)
    key = "wav2vec2.encoder.layers.0.attention.q_proj.weight"
    assert torch.equal(seed0[key], again[key]) and not torch.equal(seed0[key], seed1[key])
    shapes = {name: tensor.shape for name, tensor in weights(pretrained_alias, 0)[0].items()}
    assert {name: tensor.shape for name, tensor in seed0.items()} == shapes
    assert spec.use_attention_mask and spec.do_normalize


def test_pretrained_models_differ_from_their_random_start():
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    random_alias = next(c.alias for c in zoo_checkpoints() if c.pretrain_hours == 0)
    start = load_file(zoo_dir() / random_alias / "model.safetensors")
    for checkpoint in pretrained():
        weights = load_file(zoo_dir() / checkpoint.alias / "model.safetensors")
        key = "wav2vec2.encoder.layers.0.attention.q_proj.weight"
        assert not torch.equal(weights[key], start[key]), checkpoint.alias


TINY_RECIPE = """
[corpus]
languages = ["es", "fi"]
hours = 0.006
seed = 0
dev_fraction = 0.1
test_fraction = 0.1

[prepare]
train_hours = 0.005
seed = 0

[pretrain]
architecture = "micro"
seed = 0
threads = 1
steps = 4
learning_rate = 2e-3
batch_size = 2
crop_seconds = 1.0
checkpoint_every = 2
log_every = 1

[[model]]
alias = "t-es"
languages = ["es"]
hours_per_language = [0.004]
families = ["Indo-European > Romance"]

[[model]]
alias = "t-mix"
languages = ["es", "fi"]
hours_per_language = [0.002]
families = ["Indo-European > Romance", "Uralic > Finnic"]

[[model]]
alias = "t-random"
random = true
"""


@pytest.mark.slow
def test_build_zoo_from_a_recipe(tmp_path):
    from safetensors.torch import load_file

    from crossling.zoo import build_zoo

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(TINY_RECIPE)
    records = build_zoo(tmp_path / "work", tmp_path / "zoo", recipe, workers=2)
    assert [r["steps"] for r in records] == [4, 4, 0]
    entries = tomllib.loads((tmp_path / "zoo" / "zoo.toml").read_text())["checkpoint"]
    assert [e["alias"] for e in entries] == ["t-es", "t-mix", "t-random"]
    assert entries[1]["pretrain_languages"] == ["es", "fi"] and entries[2]["pretrain_hours"] == 0
    assert [e["source"] for e in entries] == ["zoo:t-es", "zoo:t-mix", "random:zoo:t-random"]
    for entry in entries:
        assert {p.name for p in (tmp_path / "zoo" / entry["alias"]).iterdir()} >= set(MODEL_FILES)
    # Rebuilding (pre-training again from scratch) gives identical weights.
    (tmp_path / "work" / "pretrain" / "t-es" / "pretrain.json").unlink()
    build_zoo(tmp_path / "work", tmp_path / "zoo2", recipe, workers=1)
    a = load_file(tmp_path / "zoo" / "t-es" / "model.safetensors")
    b = load_file(tmp_path / "zoo2" / "t-es" / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    assert find_checkpoint("t-es") is None  # a zoo built elsewhere does not touch the registry


def test_recipe_model_errors_name_the_entry(tmp_path):
    text = (zoo_dir() / "recipe.toml").read_text(encoding="utf-8")
    broken = tmp_path / "recipe.toml"
    broken.write_text(text + '\n[[model]]\nlanguages = ["es"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[\[model\]\] #\d+: missing required key\(s\) alias"):
        read_recipe(broken)
    broken.write_text(text + '\n[[model]]\nalias = "x"\nhours_per_language = "half"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"hours_per_language must be a list"):
        read_recipe(broken)
