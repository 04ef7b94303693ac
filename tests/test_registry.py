"""Registry facts of today's checkpoints and the architectures packaged for them."""

import json
import re

import pytest
import torch

from crossling.cli import main
from crossling.errors import ModelError
from crossling.models import MODEL_TYPES, random_init_config, resolve
from crossling.registry import TODAY_CHECKPOINTS, Checkpoint, all_checkpoints

FIELDS = set(Checkpoint.__dataclass_fields__)


@pytest.mark.parametrize("checkpoint", TODAY_CHECKPOINTS, ids=lambda c: c.alias)
def test_today_checkpoints_have_facts_sources_and_structured_uncertainty(checkpoint):
    assert checkpoint.pretrain_hours > 0 and checkpoint.domain and checkpoint.licence and checkpoint.sources
    assert checkpoint.model_type in MODEL_TYPES
    assert checkpoint.pretrain_language_count >= len(checkpoint.pretrain_languages) >= 1
    assert set(checkpoint.uncertain_fields) <= FIELDS and all(why for _, why in checkpoint.uncertain)
    if not checkpoint.parameters_millions:
        assert "parameters_millions" in checkpoint.uncertain_fields  # unstated is said, not left blank


@pytest.mark.parametrize("checkpoint", TODAY_CHECKPOINTS, ids=lambda c: c.alias)
def test_packaged_architecture_has_the_stated_size(checkpoint):
    """The config values packaged for each checkpoint build its model type with the parameter count its card
    or paper states (within 8 %: cards round, and pre-training heads are not part of a CTC model); where no
    count is stated, the count the registry quotes as measured is the architecture's."""
    from transformers import AutoModelForCTC

    config = random_init_config(resolve(f"random:{checkpoint.alias}").location)
    config.vocab_size = 40
    assert config.model_type == checkpoint.model_type
    with torch.device("meta"):
        model = AutoModelForCTC.from_config(config)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    if checkpoint.parameters_millions:
        assert abs(millions - checkpoint.parameters_millions) / checkpoint.parameters_millions < 0.08, millions
    else:
        quoted = re.search(r"counts (\d+)M", dict(checkpoint.uncertain)["parameters_millions"])
        assert quoted and int(quoted.group(1)) == round(millions), millions


def test_packaged_configs_record_their_provenance():
    for checkpoint in TODAY_CHECKPOINTS:
        values = json.loads(open(resolve(f"random:{checkpoint.alias}").location, encoding="utf-8").read())
        assert values["_source"] and "_not_seen" in values and "_preprocessor_config" in values


def test_random_architecture_of_an_alias_and_its_errors():
    source = resolve("random:w2v-bert-2")
    assert source.kind == "random" and source.location.endswith("facebook__w2v-bert-2.0.json")
    assert resolve("random-init").location.endswith("xls-r-300m.json")  # the reference baseline is unchanged
    with pytest.raises(ModelError, match=r"no packaged architecture for 'lv60'.*random:xlsr-1b"):
        resolve("random:lv60")


def test_models_command_lists_todays_checkpoints_with_facts(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["alias"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {c.alias for c in all_checkpoints()} == set(rows)
    bert = rows["w2v-bert-2"]
    assert (bert["model_type"], bert["pretrain_hours"], bert["licence"]) == ("wav2vec2-bert", 4_500_000, "mit")
    assert bert["parameters_millions"] == 600 and "more than 143" in bert["uncertain"]["pretrain_language_count"]
    assert rows["mms-1b"]["licence"] == "cc-by-nc-4.0" and rows["xlsr-2b"]["parameters_millions"] == 2000
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "mms-300m" in table and "1,400 languages?" in table and "cc-by-nc-4.0" in table


def test_a_study_may_name_a_random_architecture(tmp_path):
    from crossling.errors import ConfigError
    from crossling.study import expand_runs, load_study

    path = tmp_path / "s.toml"
    path.write_text('checkpoints = ["random:w2v-bert-2", "mms-1b"]\nlanguages = ["sw"]\nseeds = [0]\n'
                    '[data]\nsource = "prepared"\npath = "p"\n')
    runs = expand_runs(load_study(path))
    assert [r.model for r in runs] == ["random:w2v-bert-2", "mms-1b"]
    path.write_text(path.read_text().replace("random:w2v-bert-2", "random:nothing"))
    with pytest.raises(ConfigError, match=r"checkpoints: --model 'random:nothing': no packaged architecture"):
        load_study(path)
