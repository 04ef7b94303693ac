import json
from dataclasses import replace

import pytest
import torch
from tinydata_factory import ALL_MODEL_TYPES, make_prepared, make_tiny_checkpoint

from crossling import paths
from crossling.batching import make_batch, training_data
from crossling.config import TrainConfig
from crossling.errors import ConfigError
from crossling.finetune import finetune
from crossling.models import input_spec, load_finetuned, load_for_finetuning, load_tokenizer, resolve
from crossling.prepared import open_prepared
from crossling.records import RunRecord

TINY = TrainConfig(learning_rate=2e-3, max_steps=40, batch_seconds=8.0, checkpoint_every=20, collapse_patience=30)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"), too_long=2)


def corpus_loss(model, data, config):
    """Mean CTC loss over the (filtered) training set in eval mode, in one padded batch."""
    tokenizer = load_tokenizer(data.vocab_file)
    training = training_data(data, tokenizer, model.config, config, seed=0)
    spec = input_spec(model.config, {})
    batch = make_batch(training, list(range(len(training.utterances))), spec, "cpu")
    batch.pop("frames")
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_training_lowers_the_loss_for_each_model_type(prepared, tmp_path, model_type):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", model_type)
    data = open_prepared(prepared, "xx")
    initial, _ = load_for_finetuning(resolve(str(checkpoint)), len(data.vocab), TINY, seed=0)
    before = corpus_loss(initial, data, TINY)
    record = finetune(prepared, "xx", str(checkpoint), seed=0, out=tmp_path / "run", config=TINY, device="cpu")
    after = corpus_loss(load_finetuned(paths.run_model_dir(tmp_path / "run"))[0], data, TINY)
    assert after < 0.7 * before, (before, after)
    assert record.steps == TINY.max_steps and record.status == "done"


@pytest.mark.slow
def test_result_record_contract(prepared, tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    out = tmp_path / "run"
    record = finetune(prepared, "xx", str(checkpoint), seed=3, out=out, config=TINY, device="cpu")
    assert json.loads(paths.run_result_path(out).read_text()) == record.to_json()
    assert RunRecord.read(paths.run_result_path(out)) == record  # the typed record round-trips
    assert record.identity.seed == 3 and record.identity.recipe.learning_rate == 2e-3
    assert "linear" in record.schedule and record.resumed_from == ()
    assert record.skipped == {"label_too_long": 2, "audio_too_long": 0, "nonfinite_loss_steps": 0,
                              "fp16_overflow_steps": 0}
    for split in ("dev", "test"):
        s = record.scores[split]
        assert set(s.by_gender) == {"female", "male"}
        assert sum(g.chars for g in s.by_gender.values()) == s.chars
        assert s.cer == pytest.approx(s.char_edits / s.chars)
    assert record.scores["test"].utterances == 8
    cost = record.cost
    assert cost.wall_seconds > 0 and cost.audio_seconds_trained > 0 and cost.peak_memory_mb > 0
    assert cost.threads == torch.get_num_threads() and cost.device == "cpu"
    assert cost.facts.device == "cpu" and cost.facts.name and cost.peak_reserved_mb >= cost.peak_memory_mb
    assert 0.0 <= record.collapse.blank_only_fraction <= 1.0
    # software versions and where the run ran (the commit only when crossling runs from a git checkout)
    assert {"crossling", "torch", "transformers", "python", "platform", "processor"} <= set(record.versions)
    assert set(record.versions) <= {"crossling", "torch", "transformers", "python", "platform", "processor", "commit"}
    config = json.loads(paths.run_config_path(out).read_text())
    assert config["input"]["use_attention_mask"] is True and config["input"]["feat_extract_norm"] == "layer"
    assert "step 0" in paths.run_log_path(out).read_text()
    hyps = [json.loads(line) for line in paths.run_hypotheses_path(out, "test").read_text().splitlines()]
    assert len(hyps) == 8 and {"id", "reference", "hypothesis"} <= set(hyps[0])
    # a finished run returns its record without training again
    assert finetune(prepared, "xx", str(checkpoint), seed=3, out=out, config=TINY, device="cpu") == record


RUNNER = """
import sys, torch
torch.set_num_threads(1)
from crossling.config import TrainConfig
from crossling.errors import ConfigError
from crossling.finetune import finetune
config = TrainConfig(learning_rate=2e-3, max_steps=60, batch_seconds=6.0, checkpoint_every=10, eval_every=25,
                     mask_time_prob=0.2, mask_time_length=3, hidden_dropout=0.1, layerdrop=0.2)
finetune(sys.argv[1], "xx", sys.argv[2], seed=7, out=sys.argv[3], config=config, device="cpu")
"""


def _start(prepared, checkpoint, out):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", RUNNER, str(prepared), str(checkpoint), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_and_resume_reaches_the_same_result(prepared, tmp_path):
    """SpecAugment, dropout and layerdrop are on, so every RNG stream matters for equality."""
    import os
    import signal
    import time

    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    victim = _start(prepared, checkpoint, killed)
    reference = _start(prepared, checkpoint, straight)
    deadline = time.monotonic() + 120
    while not paths.run_resume_path(killed).exists() and victim.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not paths.run_result_path(killed).exists(), "the run finished before it could be killed"
    interrupted_at = torch.load(paths.run_resume_path(killed), weights_only=True)["state"]["step"]
    assert 0 < interrupted_at < 60
    (killed / ".resume.pt.crossling-k3j4h5g6.tmp").write_bytes(b"x")  # as a kill during a save leaves them
    (killed / ".checkpoint.pt.k3j4h5g6.tmp").write_bytes(b"x")  # (an earlier version's name)
    (killed / ".model.crossling-a1b2c3d4").mkdir()
    resumed = _start(prepared, checkpoint, killed)
    for process in (resumed, reference):
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    a, b = (RunRecord.read(paths.run_result_path(d)) for d in (killed, straight))
    assert a.scores == b.scores and a.steps == b.steps == 60
    assert a.cost.audio_seconds_trained == pytest.approx(b.cost.audio_seconds_trained)
    assert a.resumed_from == (interrupted_at,) and b.resumed_from == ()
    from safetensors.torch import load_file

    weights_a, weights_b = (load_file(paths.run_model_dir(d) / "model.safetensors") for d in (killed, straight))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert "resumed from" in paths.run_log_path(killed).read_text()
    from crossling.metrics import read_metrics  # every step once, as the uninterrupted run wrote them

    metrics_a, metrics_b = (read_metrics(d).drop(columns="seconds") for d in (killed, straight))
    assert metrics_a["step"].tolist().count(interrupted_at) == 1 and metrics_a.equals(metrics_b)
    assert list(killed.glob(".*")) == [], "stale temporaries (or the run's lock file) were left behind"


def crash_in_evaluation(monkeypatch, prepared, checkpoint, out, config: TrainConfig) -> None:
    """Run seed 0 of `config` into `out` until its final evaluation, which crashes: training is done and
    its resume file written, no result."""
    import crossling.finetune as module

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash during evaluation")

    with monkeypatch.context() as patch:
        patch.setattr(module, "evaluate_model", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            finetune(prepared, "xx", str(checkpoint), seed=0, out=out, config=config, device="cpu")


@pytest.mark.slow
def test_crash_after_training_resumes_without_retraining_and_foreign_runs_are_refused(
        prepared, tmp_path, monkeypatch):
    from crossling.errors import ConfigError

    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    short = TrainConfig(learning_rate=2e-3, max_steps=2, batch_seconds=8.0, checkpoint_every=100)
    out = tmp_path / "run"
    crash_in_evaluation(monkeypatch, prepared, checkpoint, out, short)
    assert paths.run_resume_path(out).exists() and not paths.run_result_path(out).exists()
    with pytest.raises(ConfigError, match="different run"):
        finetune(prepared, "xx", str(checkpoint), seed=1, out=out, config=short, device="cpu")
    record = finetune(prepared, "xx", str(checkpoint), seed=0, out=out, config=short, device="cpu")
    assert record.steps == 2 and "resumed from" in paths.run_log_path(out).read_text()
    assert not paths.run_resume_path(out).exists()  # a finished run keeps no optimizer state
    with pytest.raises(ConfigError, match="finished run of another"):
        finetune(prepared, "xx", str(checkpoint), seed=0, out=out, config=replace(short, learning_rate=1e-3), device="cpu")


@pytest.mark.slow
def test_eval_every_is_not_part_of_the_run_identity(prepared, tmp_path, monkeypatch):
    """A run resumes, and a finished run is returned, whatever eval_every it is called with now."""
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    recipe = TrainConfig(learning_rate=2e-3, max_steps=2, batch_seconds=8.0, checkpoint_every=100, eval_every=0)
    out = tmp_path / "run"
    crash_in_evaluation(monkeypatch, prepared, checkpoint, out, recipe)
    record = finetune(prepared, "xx", str(checkpoint), seed=0, out=out, config=replace(recipe, eval_every=1),
                      device="cpu")
    assert record.steps == 2 and "resumed from" in paths.run_log_path(out).read_text()
    again = finetune(prepared, "xx", str(checkpoint), seed=0, out=out, config=replace(recipe, eval_every=7),
                     device="cpu")
    assert again == record


@pytest.mark.slow
def test_large_random_init_architecture_trains_one_step_and_evaluates(tmp_path):
    """The real LARGE architecture (XLS-R 300M's config values) with random weights, on CPU."""
    prepared = make_prepared(tmp_path / "prepared", n_train=2, n_dev=1, n_test=2)
    config = TrainConfig(max_steps=1, batch_seconds=4.0, checkpoint_every=1000)
    record = finetune(prepared, "xx", "random-init", seed=0, out=tmp_path / "run", config=config, device="cpu")
    assert record.steps == 1 and record.identity.model == "random-init"
    assert record.scores["test"].utterances == 2 and record.skipped["nonfinite_loss_steps"] == 0
    saved = json.loads((paths.run_model_dir(tmp_path / "run") / "config.json").read_text())
    assert (saved["hidden_size"], saved["num_hidden_layers"], saved["intermediate_size"]) == (1024, 24, 4096)
    assert saved["vocab_size"] == 10 and saved["feat_extract_norm"] == "layer"
    assert not paths.run_resume_path(tmp_path / "run").exists()
    size = (paths.run_model_dir(tmp_path / "run") / "model.safetensors").stat().st_size
    assert 1.15e9 < size < 1.35e9  # ~315 M fp32 parameters, as the hub checkpoint


@pytest.mark.slow
def test_cli_finetune_json_and_errors(prepared, tmp_path, capsys):
    from crossling.cli import main

    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "hubert")
    (tmp_path / "run.toml").write_text("[recipe]\nbatch_seconds = 8.0\nmax_steps = 50\ncheckpoint_every = 100\n")
    argv = ["finetune", "--data", str(prepared), "--language", "xx", "--model", str(checkpoint), "--seed", "2",
            "--out", str(tmp_path / "run"), "--steps", "3", "--lr", "1e-3", "--config", str(tmp_path / "run.toml"),
            "--device", "cpu", "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 3 and printed["run"]["recipe"]["batch_seconds"] == 8.0
    assert printed["run"]["recipe"]["learning_rate"] == 1e-3 and printed["schema"] == 1
    assert printed["cer"] == printed["scores"]["test"]["cer"] and "label_too_long" in printed["skipped"]
    assert main(argv[:-1]) == 0 and "test CER" in capsys.readouterr().out
    bad = ["finetune", "--data", str(prepared), "--language", "xx", "--model", "nope", "--out", str(tmp_path / "x")]
    assert main(bad) == 2
    assert "registered aliases: lv60" in capsys.readouterr().err
    missing = ["finetune", "--data", str(prepared), "--language", "pt", "--model", "xlsr300m", "--out", str(tmp_path)]
    assert main(missing) == 2
    assert "'pt' is not prepared" in capsys.readouterr().err


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_cached_cnn_features_give_the_same_loss_and_gradients(prepared, tmp_path, model_type):
    """Replaying the frozen encoder's per-utterance outputs (or w2v-BERT's log-mel rows) equals computing
    them for the padded batch, with SpecAugment and dropout on (same seed), for every model type."""
    from contextlib import nullcontext

    from crossling.batching import DataPosition
    from crossling.finetune import seed_everything
    from crossling.models import FrozenFeatureCache

    config = replace(TINY, mask_time_prob=0.3, mask_time_length=3, hidden_dropout=0.1, attention_dropout=0.1)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", model_type)
    data = open_prepared(prepared, "xx")
    model, spec = load_for_finetuning(resolve(str(checkpoint)), len(data.vocab), config, seed=0)
    training = training_data(data, load_tokenizer(data.vocab_file), model.config, config, seed=0)
    indices, _ = training.plan.take(DataPosition())
    assert len({training.utterances[i].num_samples for i in indices}) > 1  # padding is involved
    cache = FrozenFeatureCache(model, spec)
    assert FrozenFeatureCache.applies(model, spec, config)
    model.train()
    results = []
    for use in (None, cache, cache):  # the second use replays stored features
        seed_everything(1)
        batch = make_batch(training, indices, spec, "cpu", use)
        features, _ = batch.pop("features", None), batch.pop("frames")
        model.zero_grad()
        with use.replay(features) if use else nullcontext():
            loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert len(cache.store) == len(indices)
    (loss_a, grads_a), (loss_b, grads_b), (loss_c, grads_c) = results
    assert torch.allclose(loss_a, loss_b, rtol=1e-5) and torch.equal(loss_b, loss_c)
    assert len(grads_a) == len(grads_b) > 0
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads_a, grads_b, strict=True))
    # and the encoder runs normally again afterwards
    assert cache.encoder is None if spec.features == "log-mel" else "forward" not in vars(cache.encoder)


@pytest.mark.slow
def test_non_finite_losses_skip_the_step_and_are_counted(prepared, tmp_path, monkeypatch):
    """Let the two impossible utterances (20 labels in 0.15 s) through the filter: their batches give an
    infinite CTC loss, which must leave the weights untouched and be counted."""
    import crossling.batching as batching

    def keep_everything(utterances, labels, frames_of, max_seconds):
        return list(range(len(utterances))), {"label_too_long": 0, "audio_too_long": 0}

    monkeypatch.setattr(batching, "filter_for_ctc", keep_everything)
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    record = finetune(prepared, "xx", str(checkpoint), seed=0, out=tmp_path / "run", config=TINY, device="cpu")
    assert record.skipped["nonfinite_loss_steps"] > 0
    assert record.steps == TINY.max_steps
    from safetensors.torch import load_file

    weights = load_file(paths.run_model_dir(tmp_path / "run") / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert "non-finite loss" in paths.run_log_path(tmp_path / "run").read_text()


def test_collapse_watchdog_warns_once_after_the_patience(caplog):
    from crossling.batching import DataPosition
    from crossling.finetune import StepDone, TrainState, _advance

    config = TrainConfig(collapse_patience=3, max_steps=100)
    state = TrainState()
    blank_pattern = [True, True, False, True, True, True, True, True]
    warned_at = []
    for step, blank in enumerate(blank_pattern):
        done = StepDone(step, DataPosition(0, step + 1), 1.0, blank, audio_seconds=1.0, seconds=0.01)
        state = _advance(state, done, config)
        warned_at.append(state.collapse_warned)
    assert warned_at == [False, False, False, False, False, True, True, True]  # the streak restarted at step 2
    assert state.blank_streak == 5 and state.audio_seconds == pytest.approx(8.0)
    assert sum("blank-only for 3 steps" in r.getMessage() for r in caplog.records) == 1


_DEFAULT_SPIN = ({}, {"GOMP_SPINCOUNT": "3000", "OMP_WAIT_POLICY": None})


@pytest.mark.parametrize(("module", "given", "expected"), [
    *((module, *case) for module in ("crossling.finetune", "crossling.evaluate") for case in (
        _DEFAULT_SPIN,
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": "ACTIVE"}),
        ({"GOMP_SPINCOUNT": "10"}, {"GOMP_SPINCOUNT": "10", "OMP_WAIT_POLICY": None}),
    )),
    ("crossling.pretrain", *_DEFAULT_SPIN),
])
def test_openmp_spin_is_set_before_torch_loads_unless_the_user_chose(module, given, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | given
    code = ("import sys, os, crossling; setting = crossling.short_openmp_spin; "
            "crossling.short_openmp_spin = lambda: (print('torch' in sys.modules), setting()); "
            f"import {module}; import torch; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    *torch_loaded_at_each_call, final = out.strip().splitlines()
    assert torch_loaded_at_each_call and set(torch_loaded_at_each_call) == {"False"}
    assert final.split() == [str(expected["GOMP_SPINCOUNT"]), str(expected["OMP_WAIT_POLICY"])]


@pytest.mark.slow
def test_a_run_started_by_hand_resumes_after_its_folders_are_moved(tmp_path, monkeypatch):
    """`crossling finetune` names its data and a local checkpoint by their content, not their place."""
    import os
    import shutil

    import crossling.finetune as module

    project = tmp_path / "project"
    prepared = make_prepared(project / "prepared", n_train=6, n_dev=2, n_test=2)
    checkpoint = make_tiny_checkpoint(project / "ckpt", "wav2vec2")
    short = TrainConfig(learning_rate=2e-3, max_steps=2, batch_seconds=8.0, checkpoint_every=100)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash during evaluation")

    with monkeypatch.context() as patch:
        patch.setattr(module, "evaluate_model", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            finetune(prepared, "xx", str(checkpoint), out=project / "run", config=short, device="cpu")
    moved = tmp_path / "moved"
    os.rename(project, moved)
    record = finetune(moved / "prepared", "xx", str(moved / "ckpt"), out=moved / "run", config=short, device="cpu")
    assert record.resumed_from == (2,) and record.identity.data["source"] == "prepared"
    assert record.identity.model == "ckpt" and record.identity.weights.startswith("local:")
    # other weights in the same place are another run
    shutil.rmtree(moved / "ckpt")
    make_tiny_checkpoint(moved / "ckpt", "wav2vec2", seed=5)
    with pytest.raises(ConfigError, match="finished run of another"):
        finetune(moved / "prepared", "xx", str(moved / "ckpt"), out=moved / "run", config=short, device="cpu")
