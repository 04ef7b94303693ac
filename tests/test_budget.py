"""The memory budget on CPU: meta-device measurements (checked against the same count on real tensors),
caps from a GPU's memory given as a number, and accumulation equal to the whole batch's step."""

import json
import math
from pathlib import Path

import pytest
import torch
from tinydata_factory import cpu_learner, make_prepared, make_tiny_checkpoint, tiny_config

from crossling import budget, devices
from crossling.batching import DataPosition, make_batch
from crossling.budget import RunOptions
from crossling.config import TrainConfig
from crossling.errors import ConfigError
from crossling.finetune import fitting_step, train_step
from crossling.models import load_tokenizer
from crossling.prepared import open_prepared

# no SpecAugment, dropout or layer drop: a step's randomness would differ between one pass and several
EXACT = TrainConfig(learning_rate=1e-3, max_steps=4, batch_seconds=8.0, checkpoint_every=2, mask_time_prob=0.0)
LARGE = json.loads((Path(budget.__file__).parent / "data" / "facebook__wav2vec2-xls-r-300m.json").read_text())


def test_micro_batches_keep_order_and_the_cap():
    assert budget.micro_batches([3.0, 2.0, 4.0, 1.0], math.inf) == [[0, 1, 2, 3]]
    assert budget.micro_batches([3.0, 2.0, 4.0, 1.0], 5.0) == [[0, 1], [2, 3]]
    assert budget.micro_batches([6.0, 2.0], 5.0) == [[0], [1]]  # a longer utterance goes alone


def test_meta_measurement_counts_what_real_tensors_save():
    """The saved-for-backward bytes on the meta device equal the same count on real CPU tensors."""
    from transformers import AutoModelForCTC

    config = tiny_config("wav2vec2")
    config.update({"vocab_size": 12, "mask_time_prob": 0.0, "layerdrop": 0.0})
    real = AutoModelForCTC.from_config(config).train()
    real.freeze_feature_encoder()
    meta = budget._meta_model(config.to_dict(), 12, "float32", checkpointing=False)
    meta.freeze_feature_encoder()
    samples = budget.MEASURED_CLIPS, 2 * budget.SAMPLE_RATE
    on_cpu = budget._saved_bytes(real, {"input_values": torch.zeros(samples)})
    assert on_cpu > 0 and budget._saved_bytes(meta, {"input_values": torch.zeros(samples, device="meta")}) == on_cpu


def test_large_model_budget_needs_accumulation_on_24_gb_and_not_on_80_gb():
    """XLS-R 300M with 30 s clips (meta device: nothing is allocated): a 16 GiB card (V100, T4: fp16) gets
    passes shorter than the recipe's 200 s batch, an 80 GiB card the whole batch; checkpointing saves
    activations; a card too small for one clip is refused."""
    memory = budget.measure_step_memory(LARGE, vocab_size=50, clip_seconds=30.0, dtype="float16")
    assert 300e6 * 16 < memory.state < 330e6 * 18  # fp32 weights, gradients and Adam moments + an fp16 copy
    small = budget.step_audio_cap(memory, 16 * 2**30, longest_clip=30.0)
    assert 30.0 <= small < 200.0
    assert budget.step_audio_cap(memory, 80 * 2**30, longest_clip=30.0) > 200.0
    checkpointed = budget.measure_step_memory(LARGE, vocab_size=50, clip_seconds=30.0, dtype="float16",
                                              checkpointing=True)
    assert checkpointed.activations_per_second < memory.activations_per_second / 3
    with pytest.raises(ConfigError, match="turn on gradient checkpointing"):
        budget.step_audio_cap(memory, 8 * 2**30, longest_clip=30.0)


def test_the_cap_is_the_users_else_the_gpus_else_none():
    options = RunOptions(max_step_seconds=50.0)
    common = {"model_config": LARGE, "vocab_size": 50, "longest_clip": 30.0, "dtype": "float16"}
    assert budget.automatic_cap(options, device_bytes=24 * 2**30, **common) == 50.0
    assert budget.automatic_cap(RunOptions(), device_bytes=None, **common) == math.inf
    assert 30.0 <= budget.automatic_cap(RunOptions(), device_bytes=16 * 2**30, **common) < 200.0
    with pytest.raises(ConfigError, match="positive number of seconds"):
        RunOptions(max_step_seconds=0.0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), "wav2vec2"))


def learner_of(prepared, checkpoint, config=EXACT, step_seconds=math.inf):
    _, learner, training = cpu_learner(prepared, checkpoint, config, step_seconds=step_seconds)
    learner.model.train()
    return learner, training


def gradients(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_accumulated_passes_give_the_whole_batchs_loss_and_gradients(prepared, checkpoint):
    whole, training = learner_of(prepared, checkpoint)
    indices, _ = training.plan.take(DataPosition())
    loss, _, _ = train_step(whole, make_batch(training, indices, whole.spec, "cpu"), 1e-3, EXACT).read()
    split, _ = learner_of(prepared, checkpoint, step_seconds=EXACT.batch_seconds / 3)
    passes = budget.micro_batches([training.utterances[i].duration for i in indices], split.step_seconds)
    assert len(passes) >= 3
    outcome, _ = fitting_step(split, training, indices, 1e-3, EXACT)
    accumulated = outcome.read()[0]
    assert accumulated == pytest.approx(loss, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in
               zip(gradients(whole.model), gradients(split.model), strict=True))


def test_without_a_cap_the_step_is_bit_identical_to_one_pass(prepared, checkpoint):
    """On CPU (no cap) `fitting_step` is the old single-pass step: same loss and weights, bit for bit."""
    one, training = learner_of(prepared, checkpoint)
    other, _ = learner_of(prepared, checkpoint)
    position = DataPosition()
    for _ in range(3):
        indices, position = training.plan.take(position)
        loss_a, _, _ = train_step(one, make_batch(training, indices, one.spec, "cpu"), 1e-3, EXACT).read()
        outcome, _ = fitting_step(other, training, indices, 1e-3, EXACT)
        assert loss_a == outcome.read()[0]
    assert all(torch.equal(a, b) for a, b in zip(one.model.parameters(), other.model.parameters(), strict=True))


def test_gradient_checkpointing_gives_the_same_gradients(prepared, checkpoint):
    from crossling.finetune import step_seconds

    plain, training = learner_of(prepared, checkpoint)
    checkpointed, _ = learner_of(prepared, checkpoint)
    assert step_seconds(checkpointed.model, EXACT, "cpu", RunOptions(gradient_checkpointing=True), None) == math.inf
    assert budget.is_checkpointing(checkpointed.model) and not budget.is_checkpointing(plain.model)
    indices, _ = training.plan.take(DataPosition())
    loss_a, _, _ = train_step(plain, make_batch(training, indices, plain.spec, "cpu"), 1e-3, EXACT).read()
    loss_b, _, _ = train_step(checkpointed, make_batch(training, indices, plain.spec, "cpu"), 1e-3, EXACT).read()
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in
               zip(gradients(plain.model), gradients(checkpointed.model), strict=True))


def test_out_of_memory_is_retried_with_smaller_passes(prepared, checkpoint, monkeypatch):
    """A device that fits two utterances per pass (a forward of more raises torch's OutOfMemoryError): the
    step succeeds with more passes, the whole batch's loss, and a lower cap for the following steps."""
    whole, training = learner_of(prepared, checkpoint)
    indices, _ = training.plan.take(DataPosition())
    loss, _, _ = train_step(whole, make_batch(training, indices, whole.spec, "cpu"), 1e-3, EXACT).read()
    learner, _ = learner_of(prepared, checkpoint)
    forward = learner.model.forward

    def small_device(**batch):
        if batch["input_values"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(**batch)

    monkeypatch.setattr(learner.model, "forward", small_device)
    released = []
    monkeypatch.setattr(devices, "release_cached_memory", released.append)
    outcome, after = fitting_step(learner, training, indices, 1e-3, EXACT)
    retried = outcome.read()[0]
    assert retried == pytest.approx(loss, rel=1e-5) and released
    assert after.step_seconds < sum(training.utterances[i].duration for i in indices)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in
               zip(gradients(whole.model), gradients(learner.model), strict=True))


def test_an_out_of_memory_error_with_one_utterance_per_pass_is_refused():
    with pytest.raises(ConfigError, match="one 4 s utterance per micro-batch"):
        budget.smaller_cap(4.0, 12.0, 4.0)
    assert budget.smaller_cap(math.inf, 12.0, 4.0) == 6.0



def test_memory_options_reach_every_run_of_a_grid_and_come_from_the_command_line(tmp_path):
    from grid_factory import make_prepared as make_grid_data
    from grid_factory import write_study

    from crossling.cli import _run_options, build_parser
    from crossling.grid import run_study
    from crossling.store import Store
    from crossling.study import expand_runs, load_study

    make_grid_data(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a"], languages=("aa",)))
    options = RunOptions(max_step_seconds=7.0, gradient_checkpointing=True)
    assert run_study(study, run_function="grid_factory:memory_finetune", run_options=options).done == 1
    run_dir = Store(tmp_path / "toy.runs").run_dir(expand_runs(study)[0].run_id)
    assert (run_dir / "memory.txt").read_text() == repr(options)
    args = build_parser().parse_args(["study", "run", "mini", "--max-step-seconds", "7", "--gradient-checkpointing"])
    assert _run_options(args) == options
    assert _run_options(build_parser().parse_args(["study", "run", "mini"])) is None
    args = build_parser().parse_args(["finetune", "--data", "d", "--language", "xx", "--model", "m", "--out", "o",
                                      "--half-precision-model"])
    assert _run_options(args) == RunOptions(half_precision_model=True)


def test_a_half_precision_final_model_takes_half_the_disk_and_loads(prepared, checkpoint, tmp_path):
    from safetensors.torch import load_file

    from crossling.finetune import final_weights, save_hf
    from crossling.models import build_processor, load_finetuned

    learner, _ = learner_of(prepared, checkpoint)
    tokenizer = load_tokenizer(open_prepared(prepared, "xx").vocab_file)
    processor = build_processor(tokenizer, learner.spec)
    assert final_weights(learner.model, RunOptions(), None) is learner.model
    save_hf(final_weights(learner.model, RunOptions(), None), processor, tmp_path / "full")
    save_hf(final_weights(learner.model, RunOptions(half_precision_model=True), None), processor, tmp_path / "half")
    full, half = (tmp_path / "full" / "model.safetensors"), (tmp_path / "half" / "model.safetensors")
    assert {t.dtype for t in load_file(half).values() if t.is_floating_point()} == {torch.bfloat16}
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model, _, _ = load_finetuned(tmp_path / "half")
    assert next(model.parameters()).dtype == torch.float32  # crossling evaluates in the run's precision
