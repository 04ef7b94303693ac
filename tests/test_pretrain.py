"""Self-supervised pre-training: the loss falls, the mix is controlled, a killed run resumes exactly,
and the saved model loads for CTC fine-tuning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pretrain_factory import make_prepared

from crossling import paths
from crossling.errors import ConfigError, DataError

torch = pytest.importorskip("torch")

ARCH = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": [16] * 7, "num_codevectors_per_group": 16, "codevector_dim": 32, "proj_codevector_dim": 32,
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
CONFIG = {"architecture": ARCH, "batch_size": 4, "crop_seconds": 1.0, "checkpoint_every": 10, "log_every": 5}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared"), {"aa": 200.0, "bb": 300.0})


def run_pretrain(prepared: Path, out: Path, steps: int) -> dict:
    from crossling.pretrain import pretrain

    torch.set_num_threads(1)
    return pretrain(prepared, ["aa", "bb"], [0.003], config=CONFIG, out=out, steps=steps, seed=3)


@pytest.mark.slow
def test_loss_decreases_and_model_loads_for_ctc(prepared, tmp_path):
    from transformers import AutoModelForCTC

    record = run_pretrain(prepared, tmp_path / "pt", steps=120)
    assert record["final"]["contrastive_loss"] < record["initial"]["contrastive_loss"] - 0.15
    assert record["final"]["accuracy"] > record["initial"]["accuracy"]
    assert set(record["hours"]) == {"aa", "bb"} and record["steps"] == 120
    assert json.loads(paths.pretrain_record_path(tmp_path / "pt").read_text())["final"] == record["final"]
    model_dir = paths.pretrain_model_dir(tmp_path / "pt")
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in model_dir.iterdir()}
    model = AutoModelForCTC.from_pretrained(model_dir, vocab_size=7, pad_token_id=0)
    logits = model(torch.zeros(1, 16000)).logits
    assert logits.shape[-1] == 7 and torch.isfinite(logits).all()
    assert not paths.pretrain_resume_path(tmp_path / "pt").exists()


_CHILD = """
import sys; sys.path.insert(0, {tests!r})
from pathlib import Path
import test_pretrain
test_pretrain.run_pretrain(Path({prepared!r}), Path({out!r}), steps={steps})
"""


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(prepared, tmp_path):
    from safetensors.torch import load_file

    steps, killed = 60, tmp_path / "killed"
    code = _CHILD.format(tests=str(Path(__file__).parent), prepared=str(prepared), out=str(killed), steps=steps)
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not paths.pretrain_resume_path(killed).exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the child finished before it could be killed"
    assert not paths.pretrain_record_path(killed).exists()
    interrupted_at = torch.load(paths.pretrain_resume_path(killed), weights_only=True)["step"]
    assert 0 < interrupted_at < steps
    # resumed under the name earlier versions gave the file: it is read, and takes the new name
    os.replace(paths.pretrain_resume_path(killed), paths.pretrain_legacy_resume_path(killed))
    resumed = run_pretrain(prepared, killed, steps=steps)
    straight = run_pretrain(prepared, tmp_path / "straight", steps=steps)
    assert resumed["final"] == straight["final"]
    a = load_file(paths.pretrain_model_dir(killed) / "model.safetensors")
    b = load_file(paths.pretrain_model_dir(tmp_path / "straight") / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not paths.pretrain_resume_path(killed).exists() and not paths.pretrain_legacy_resume_path(killed).exists()


def test_mix_selects_seeded_hours_per_language(prepared):
    from crossling.pretrain import select_utterances

    chosen = select_utterances(prepared, ["aa", "bb"], [0.001, 0.002], seed=1)
    hours = {lang: sum(u.duration for u in us) / 3600 for lang, us in chosen.items()}
    assert 0.001 <= hours["aa"] < 0.002 and 0.002 <= hours["bb"] < 0.003
    assert chosen == select_utterances(prepared, ["aa", "bb"], [0.001, 0.002], seed=1)
    assert chosen != select_utterances(prepared, ["aa", "bb"], [0.001, 0.002], seed=2)
    everything = select_utterances(prepared, ["aa"], None, seed=1)["aa"]
    assert len(everything) == 12


def test_bad_mixes_and_configs_are_errors_for_people(prepared, tmp_path):
    from crossling.pretrain import pretrain, select_utterances

    with pytest.raises(DataError, match="train split holds only"):
        select_utterances(prepared, ["aa"], [5.0], seed=0)
    with pytest.raises(ConfigError, match="one per language"):
        select_utterances(prepared, ["aa", "bb"], [0.001, 0.001, 0.001], seed=0)
    with pytest.raises(ConfigError, match="micro, tiny"):
        pretrain(prepared, ["aa"], None, config="huge", out=tmp_path / "x", steps=1)
    with pytest.raises(ConfigError, match="valid keys"):
        pretrain(prepared, ["aa"], None, config={"architecture": ARCH, "colour": 1}, out=tmp_path / "y")
    with pytest.raises(DataError, match="prepare"):
        pretrain(prepared, ["zz"], None, config="micro", out=tmp_path / "z")


@pytest.mark.slow
def test_cli_pretrain_prints_the_record(prepared, tmp_path, capsys):
    from crossling.cli import main

    out = tmp_path / "cli"
    assert main(["pretrain", "--data", str(prepared), "--languages", "aa", "bb", "--hours-per-language", "0.002",
                 "--config", "micro", "--out", str(out), "--steps", "3", "--seed", "1", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    record = json.loads(paths.pretrain_record_path(out).read_text())
    assert record["steps"] == 3 and record["architecture"] == "micro" and set(record["hours"]) == {"aa", "bb"}
    assert "pre-trained 3 steps" in printed and str(out / "model") in printed
    assert main(["pretrain", "--data", str(prepared), "--languages", "aa", "--config", "huge",
                 "--out", str(tmp_path / "bad")]) == 2


def test_config_from_a_toml_file(tmp_path):
    from crossling.pretrain import PretrainConfig, resolve_recipe

    path = tmp_path / "pt.toml"
    path.write_text('learning_rate = 1e-3\nbatch_size = 4\n[architecture]\nhidden_size = 32\nnum_hidden_layers = 1\n')
    architecture, recipe = resolve_recipe(str(path), steps=7, overrides=None)
    assert architecture == {"hidden_size": 32, "num_hidden_layers": 1}
    assert recipe == PretrainConfig(learning_rate=1e-3, batch_size=4, steps=7)


@pytest.mark.parametrize("values", [{"learning_rate": float("nan")}, {"crop_seconds": float("nan")},
                                    {"learning_rate": 0.0}])
def test_recipe_bounds_refuse_nan(values):
    from crossling.pretrain import PretrainConfig

    with pytest.raises(ConfigError, match="learning_rate and crop_seconds must be > 0"):
        PretrainConfig(**values)


class _Payload:
    """Unpickling this calls `Path.touch` on a marker: what a crafted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("where", [paths.pretrain_resume_path, paths.pretrain_legacy_resume_path])
def test_a_crafted_resume_file_is_refused_without_running_its_code(prepared, tmp_path, where):
    out, marker = tmp_path / "pt", tmp_path / "code-ran"
    out.mkdir()
    name = where(out).name
    torch.save({"step": 5, "payload": _Payload(marker)}, where(out))
    with pytest.raises(ConfigError, match=rf"{name}: refused to load: it holds more than tensors"):
        run_pretrain(prepared, out, steps=20)
    assert not marker.exists()
    where(out).write_bytes(b"\x80\x02truncated")
    with pytest.raises(ConfigError, match=rf"{name}: (cannot read this resume file|refused to load)"):
        run_pretrain(prepared, out, steps=20)


def test_a_model_folder_it_did_not_write_is_refused_before_training_and_kept(prepared, tmp_path):
    from crossling.errors import OutputError

    theirs = paths.pretrain_model_dir(tmp_path / "pt")
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("somebody's model")
    with pytest.raises(OutputError, match=r"model: a folder this pre-training did not write \(it holds notes.txt\)"):
        run_pretrain(prepared, tmp_path / "pt", steps=2)
    assert (theirs / "notes.txt").read_text() == "somebody's model"
    assert not paths.pretrain_resume_path(tmp_path / "pt").exists()  # refused before any step


@pytest.mark.slow
def test_the_model_is_staged_under_crossling_s_mark_and_a_lookalike_folder_is_left_alone(prepared, tmp_path):
    lookalike = tmp_path / "pt" / ".model.tmp"  # the name an earlier version staged into, and deleted
    lookalike.mkdir(parents=True)
    (lookalike / "keep.txt").write_text("not crossling's")
    run_pretrain(prepared, tmp_path / "pt", steps=2)
    assert (lookalike / "keep.txt").read_text() == "not crossling's"
    assert (paths.pretrain_model_dir(tmp_path / "pt") / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "pt").iterdir() if p.name.startswith(".")) == [".model.tmp"]
