"""Study files: strict reading, expansion into runs, and run ids that change exactly when results would."""

import dataclasses
import json
from pathlib import Path

import pytest
from grid_factory import write_study

from crossling.errors import ConfigError
from crossling.study import example_study_path, expand_runs, find_study, load_study


def test_reference_study_is_the_864_run_grid():
    study = load_study(example_study_path("reference"))
    runs = expand_runs(study)
    assert len(runs) == study.size == 864
    assert len(study.checkpoints) == 16 and "random-init" in study.checkpoints and "xlsr300m" in study.checkpoints
    assert len(study.languages) == 18 and {"sv-SE", "zh-CN", "th"} <= set(study.languages)
    assert study.seeds == (0, 1, 2)
    recipe = study.recipe
    assert (recipe.learning_rate, recipe.max_steps) == (6e-5, 4000)
    assert (recipe.warmup_fraction, recipe.hold_fraction, recipe.decay_fraction) == (0.1, 0.4, 0.5)
    assert study.data.kind == "common-voice" and study.data.options.prepare.train_hours == 5.0
    assert len({run.run_id for run in runs}) == 864
    assert runs[0].run_id.startswith("lv60-ar-s0-")


def test_run_ids_are_stable_and_readable(tmp_path):
    path = write_study(tmp_path / "s.toml", ["xlsr53", "random-init"], seeds=(0, 1))
    first, second = expand_runs(load_study(path)), expand_runs(load_study(path))
    assert [r.run_id for r in first] == [r.run_id for r in second]
    run = first[0]
    prefix, digest = run.run_id.rsplit("-", 1)
    assert prefix == "xlsr53-aa-s0" and len(digest) == 10
    assert (run.checkpoint, run.model, run.language, run.seed, run.settings) == ("xlsr53", "xlsr53", "aa", 0, ())
    assert run.config.max_steps == 12 and run.config.learning_rate == 1e-3


def ids(path):
    return {(r.checkpoint, r.language, r.seed): r.run_id for r in expand_runs(load_study(path))}


def test_changed_values_give_new_run_ids_and_only_for_affected_runs(tmp_path):
    base = ids(write_study(tmp_path / "a.toml", ["xlsr53"], seeds=(0, 1)))
    other_lr = ids(write_study(tmp_path / "b.toml", ["xlsr53"], seeds=(0, 1), recipe={"learning_rate": 2e-3,
                                                                                      "max_steps": 12,
                                                                                      "checkpoint_every": 2}))
    assert not set(base.values()) & set(other_lr.values())
    # the same resolved recipe written differently (a default spelled out) is the same run
    spelled = ids(write_study(tmp_path / "c.toml", ["xlsr53"], seeds=(0, 1),
                              recipe={"max_steps": 12, "checkpoint_every": 2, "learning_rate": 1e-3,
                                      "schedule": "tri_stage_linear"}))
    assert spelled == base
    more_seeds = ids(write_study(tmp_path / "d.toml", ["xlsr53"], seeds=(0, 1, 2)))
    assert {k: more_seeds[k] for k in base} == base


def test_where_the_weights_come_from_is_part_of_the_run_id(tmp_path, monkeypatch):
    """Re-pointing an alias (zoo-random once loaded fixed weights) must not reuse the old results."""
    import crossling.records
    from crossling.config import TrainConfig
    from crossling.records import run_identity
    from crossling.registry import weights_source

    assert weights_source("zoo-random") == "random:zoo:zoo-random"
    assert weights_source("xlsr53") == "facebook/wav2vec2-large-xlsr-53"
    assert weights_source("/some/dir") == "/some/dir"
    path = write_study(tmp_path / "a.toml", ["xlsr53"], seeds=(0,))
    before = ids(path)
    run_before = run_identity(model="xlsr53", language="aa", seed=0, recipe=TrainConfig(), data={})
    monkeypatch.setattr(crossling.records, "weights_source", lambda model: "zoo:elsewhere")
    assert not set(ids(path).values()) & set(before.values())
    assert run_identity(model="xlsr53", language="aa", seed=0, recipe=TrainConfig(), data={}) != run_before


def test_data_identity_is_part_of_the_run_id(tmp_path):
    def study(options: str) -> set[str]:
        path = tmp_path / "cv.toml"
        path.write_text('checkpoints = ["xlsr53"]\nlanguages = ["pt"]\nseeds = [0]\n'
                        f'[data]\nsource = "common-voice"\nrelease = "cv7"\n{options}')
        return {r.run_id for r in expand_runs(load_study(path))}

    assert study("train_hours = 5.0\n") == study("")  # the default spelled out
    assert study("train_hours = 1.0\n") != study("")
    assert study("seed = 1\n") != study("")
    assert study('out = "elsewhere"\n') == study("")  # where prepared files live does not matter


def test_sweep_expands_and_names_settings(tmp_path):
    path = write_study(tmp_path / "s.toml", ["xlsr53"], languages=("aa",), seeds=(0,),
                       recipe={"max_steps": 12}, sweep={"learning_rate": [6e-5, 1e-4], "max_grad_norm": [1.0, 5]})
    runs = expand_runs(load_study(path))
    assert len(runs) == 4
    assert {r.config.learning_rate for r in runs} == {6e-5, 1e-4}
    assert {r.config.max_grad_norm for r in runs} == {1.0, 5.0}
    assert runs[0].run_id.startswith("xlsr53-aa-s0-lr6e-05-mgn1-")
    assert runs[0].settings == (("learning_rate", 6e-5), ("max_grad_norm", 1.0))
    assert len({r.run_id for r in runs}) == 4


def test_local_and_hub_checkpoints(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    path = write_study(tmp_path / "s.toml", ["models/mine", "someone/wav2vec2-tiny"], languages=("aa",))
    runs = expand_runs(load_study(path))
    assert runs[0].model == str((tmp_path / "models" / "mine").resolve())
    assert runs[0].checkpoint == "models/mine" and runs[0].run_id.startswith("mine-aa-s0-")
    assert runs[1].model == "someone/wav2vec2-tiny" and runs[1].run_id.startswith("someone_wav2vec2-tiny-aa-s0-")


STRICT_CASES = [
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\nlanguage = 'x'\n[data]\nsource = 'prepared'\npath = 'p'\n",
     r"unknown key\(s\) language; valid keys: name, description, checkpoints, languages, seeds, data"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n"
     "[recipe]\nlearning_rat = 1e-3\n", r"\[recipe\]: unknown key\(s\) learning_rat; valid keys:.*learning_rate"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n"
     "[recipe]\nmax_steps = 'many'\n", r"\[recipe\]: max_steps must be int, got str"),
    ("languages = ['aa']\nseeds = ['zero']\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n",
     r"seeds\[0\] must be int"),
    ("languages = []\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n",
     r"languages must not be empty"),
    ("languages = ['aa']\nseeds = [0, 0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n",
     r"seeds: duplicate value"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n",
     r"missing required key\(s\) data"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'huggingface'\n",
     r"\[data\]: source must be one of prepared, common-voice, corpus, synthetic"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\nhours = 1\n",
     r"\[data\] \(source = 'prepared'\): unknown key\(s\) hours; valid keys: path"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'common-voice'\n",
     r"\[data\].*release"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr99']\n[data]\nsource = 'prepared'\npath = 'p'\n",
     r"'xlsr99' \(did you mean 'xlsr53'.*\?\) is neither a registered alias.*registered aliases: lv60.*random-init"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n"
     "[recipe]\nlearning_rate = 1e-3\n[sweep]\nlearning_rate = [1e-3]\n", r"learning_rate set in both"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n"
     "[sweep]\nlr = [1e-3]\n", r"\[sweep\]: unknown key\(s\) lr; valid keys:.*learning_rate"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n"
     "[sweep]\nschedule = ['tri_stage_linear', 'cosine']\n", r"setting schedule=cosine.*tri_stage_exponential"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'prepared'\npath = 'p'\n"
     "[store]\nfolder = 'x'\n", r"\[store\]: unknown key\(s\) folder; valid keys: dir"),
    ("languages = ['aa'\n", r"invalid TOML"),
    ("languages = ['aa']\nseeds = [0]\ncheckpoints = ['xlsr53']\n[data]\nsource = 'synthetic'\nspeakers = [4, 2]\n",
     r"\[data\] \(source = 'synthetic'\): speakers must be a list of 3 values, got 2"),
]


@pytest.mark.parametrize(("text", "message"), STRICT_CASES)
def test_strict_errors_name_the_key_and_the_valid_ones(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_study(path)
    assert str(path) in str(error.value)


def test_store_dir_and_frozen_nouns(tmp_path):
    path = write_study(tmp_path / "s.toml", ["xlsr53"])
    study = load_study(path)
    from crossling.study import default_store

    assert default_store(study) == tmp_path / "s.runs"
    path.write_text(path.read_text() + '\n[store]\ndir = "elsewhere"\n')
    assert default_store(load_study(path)) == tmp_path / "elsewhere"
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.name = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        expand_runs(study)[0].seed = 3


def test_mini_study_is_the_zoo_on_synthetic_data():
    from crossling.registry import get_checkpoint, zoo_checkpoints

    study = find_study("mini")
    runs = expand_runs(study)
    assert len(runs) == study.size == 20
    zoo = {c.alias for c in zoo_checkpoints()}
    assert set(study.checkpoints) <= zoo and "zoo-random" in study.checkpoints
    assert get_checkpoint("zoo-random").pretrain_hours == 0.0
    assert study.data.kind == "synthetic" and study.recipe.learning_rate == 2e-3
    assert study.store_dir.name == "mini.runs" and study.store_dir.parent != example_study_path("mini").parent


# --- run ids of existing stores never change -------------------------------------------------------

FROZEN_RUN_IDS = Path(__file__).parent / "data" / "run_ids.json"


@pytest.mark.parametrize("name", ["demo", "demo-quick", "mini", "reference"])
def test_run_ids_of_the_shipped_studies_are_frozen(tmp_path, name):
    """The shipped study files as they were when the records were typed, and their run ids then: stores
    run with them stay usable (a study file edited since gets new run ids, as it should)."""
    frozen = json.loads(FROZEN_RUN_IDS.read_text())[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(frozen["study"])
    assert [run.run_id for run in expand_runs(load_study(path))] == frozen["run_ids"]


@pytest.mark.parametrize("eval_every", [0, 100, 500])
def test_eval_every_leaves_the_frozen_run_ids_alone(tmp_path, eval_every):
    """Dev CER during training was added after these run ids were recorded: setting it renames no run."""
    frozen = json.loads(FROZEN_RUN_IDS.read_text())["demo"]
    path = tmp_path / "demo.toml"
    path.write_text(frozen["study"].replace("[recipe]\n", f"[recipe]\neval_every = {eval_every}\n"))
    study = load_study(path)
    assert study.recipe.eval_every == eval_every
    assert [run.run_id for run in expand_runs(study)] == frozen["run_ids"]


def test_sweeping_an_observation_only_option_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('checkpoints = ["zoo-es"]\nlanguages = ["pt"]\nseeds = [0]\n[data]\nsource = "synthetic"\n'
                    "[sweep]\neval_every = [10, 20]\n")
    with pytest.raises(ConfigError, match=r"\[sweep\]: eval_every only changes what a run records"):
        load_study(path)


def test_run_ids_of_hand_made_studies_are_frozen_wherever_the_project_lives(tmp_path):
    from run_id_studies import hand_made_studies

    frozen = json.loads(FROZEN_RUN_IDS.read_text())
    for where in (tmp_path / "here", tmp_path / "moved" / "elsewhere"):
        for name, path in hand_made_studies(where).items():
            assert [run.run_id for run in expand_runs(load_study(path))] == frozen[name]["run_ids"], name
