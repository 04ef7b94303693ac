"""Device decisions on CPU: visible GPUs, compute capability and memory are inputs (monkeypatched where
crossling asks torch), so every GPU rule is tested on a machine without one."""

import logging
from dataclasses import replace

import pytest
import torch
from grid_factory import make_prepared as make_grid_data
from grid_factory import toy_record, write_study
from tinydata_factory import make_prepared, make_tiny_checkpoint

from crossling import devices, executors
from crossling.config import TrainConfig
from crossling.errors import ConfigError
from crossling.executors import ProcessExecutor, RayExecutor
from crossling.grid import run_study
from crossling.records import DeviceFacts, RunRecord
from crossling.store import Store
from crossling.study import expand_runs, load_study

TINY = TrainConfig(learning_rate=2e-3, max_steps=4, batch_seconds=8.0, checkpoint_every=2)


# --- one GPU per run ---------------------------------------------------------------------------------


def test_each_grid_process_gets_its_own_gpu_and_oversubscription_is_refused():
    assert devices.assign_gpus(2, "auto", ["0", "1", "2"]) == ["0", "1"]
    assert devices.assign_gpus(2, "cuda", ["4", "6"]) == ["4", "6"]
    assert devices.assign_gpus(3, "cpu", ["0", "1"]) == ["", "", ""]  # CPU runs take no GPU memory
    assert devices.assign_gpus(2, "auto", []) == [None, None]  # no GPU exists: CPU, as asked
    assert devices.assign_gpus(1, "cuda:3", ["0", "1", "2", "3"]) == [None]
    with pytest.raises(ConfigError, match="--workers 3 but 2 GPU"):
        devices.assign_gpus(3, "auto", ["0", "1"])
    with pytest.raises(ConfigError, match="would put every run on one GPU"):
        devices.assign_gpus(2, "cuda:1", ["0", "1"])
    with pytest.raises(ConfigError, match="no GPU"):
        devices.assign_gpus(2, "cuda", [])


def test_visible_gpus_respect_the_parents_cuda_visible_devices():
    assert devices.visible_gpu_ids({}, 3) == ["0", "1", "2"]
    assert devices.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "2,5"}, 2) == ["2", "5"]
    assert devices.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": ""}, 0) == []


def test_pinned_grid_processes_see_one_gpu_each_and_ask_for_cuda(tmp_path, monkeypatch):
    """Two grid processes on a machine showing GPUs 3 and 5: each process sees one of them only, and its
    runs ask for 'cuda' (an unusable GPU is then an error, never a silent CPU run)."""
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["3", "5"])
    monkeypatch.setenv("GRID_TOY_STEP_SECONDS", "0.05")
    make_grid_data(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/b"], seeds=(0, 1)))
    summary = run_study(study, executor=ProcessExecutor(workers=2, threads=1),
                        run_function="grid_factory:gpu_finetune")
    assert summary.done == 8
    store = Store(tmp_path / "toy.runs")
    seen = {(store.run_dir(run.run_id) / "gpu.txt").read_text() for run in expand_runs(study)}
    assert seen == {"3 cuda", "5 cuda"}
    with pytest.raises(ConfigError, match="share a GPU"):
        run_study(study, executor=ProcessExecutor(workers=3, threads=1), run_function="grid_factory:gpu_finetune")


class FakeRay:
    """The part of Ray's API `RayExecutor` uses, on a cluster of `resources`; records the task options."""

    def __init__(self, resources):
        self.resources, self.options = resources, {}

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return self.resources

    def remote(self, **options):
        self.options = options
        return lambda function: function


class NoJobs:
    options = executors.ExecOptions(store_root=None, prepared=None)

    def next_job(self):
        return None


def test_ray_gives_each_run_one_gpu_on_a_gpu_cluster_and_refuses_zero(monkeypatch):
    ray = FakeRay({"CPU": 64.0, "GPU": 8.0})
    monkeypatch.setattr(executors, "_import_ray", lambda: ray)
    RayExecutor(workers=8).execute(NoJobs())
    assert ray.options["num_gpus"] == 1.0
    with pytest.raises(ConfigError, match="pile every run on GPU 0"):
        RayExecutor(workers=8, gpus_per_run=0.0).execute(NoJobs())
    cpu_cluster = FakeRay({"CPU": 8.0})
    monkeypatch.setattr(executors, "_import_ray", lambda: cpu_cluster)
    RayExecutor(workers=2).execute(NoJobs())
    assert cpu_cluster.options["num_gpus"] == 0.0


def test_ray_gpu_rules():
    assert devices.ray_gpus_per_run(None, cluster_gpus=4, device="auto") == 1.0
    assert devices.ray_gpus_per_run(None, cluster_gpus=4, device="cpu") == 0.0
    assert devices.ray_gpus_per_run(0.5, cluster_gpus=4, device="auto") == 0.5  # sharing on purpose
    with pytest.raises(ConfigError, match="no run uses"):
        devices.ray_gpus_per_run(1.0, cluster_gpus=4, device="cpu")
    with pytest.raises(ConfigError, match="each task sees only the GPU Ray gave it"):
        devices.ray_gpus_per_run(None, cluster_gpus=4, device="cuda:3")
    assert devices.ray_device("auto", 1.0) == "cuda" and devices.ray_device("auto", 0.0) == "auto"


# --- precision ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "device", "capability", "expected"), [
    ("auto", "cuda", (9, 0), "bf16"),   # H100
    ("auto", "cuda", (8, 0), "bf16"),   # A100
    ("auto", "cuda", (7, 0), "fp16"),   # V100: bf16 only emulated
    ("auto", "cuda", (7, 5), "fp16"),   # T4
    ("auto", "cpu", None, "fp32"),
    ("fp16", "cuda:2", (7, 0), "fp16"),
    ("bf16", "cpu", None, "bf16"),
    ("fp32", "cuda", (9, 0), "fp32"),
])
def test_precision_follows_the_device(precision, device, capability, expected):
    chosen = devices.choose_precision(precision, device, capability)
    assert chosen.name == expected and chosen.scaled == (expected == "fp16")


def test_emulated_bf16_is_refused_and_auto_picks_fp16_on_a_v100(monkeypatch):
    from crossling.finetune import autocast_dtype

    with pytest.raises(ConfigError, match="compute capability 7.0"):
        devices.choose_precision("bf16", "cuda", (7, 0))
    # torch says bf16 is "supported" on a V100 (it counts emulation); crossling asks for the capability
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(devices, "capability_of", lambda device: (7, 0))
    assert autocast_dtype(TrainConfig(), "cuda") == torch.float16
    monkeypatch.setattr(devices, "capability_of", lambda device: (8, 0))
    assert autocast_dtype(TrainConfig(), "cuda") == torch.bfloat16


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


def tiny_learner(prepared, tmp_path, scaler=None, config=TINY, device="cpu"):
    from crossling.batching import training_data
    from crossling.finetune import Learner, make_optimizer
    from crossling.models import load_for_finetuning, load_tokenizer, resolve
    from crossling.prepared import open_prepared

    data = open_prepared(prepared, "xx")
    checkpoint = make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    model, spec = load_for_finetuning(resolve(str(checkpoint)), len(data.vocab), config, seed=0)
    training = training_data(data, load_tokenizer(data.vocab_file), model.config, config, seed=0)
    learner = Learner(model=model, optimizer=make_optimizer(model, config), spec=spec, device=device,
                      scaler=scaler or torch.amp.GradScaler("cpu", enabled=False))
    return learner, training, data, str(checkpoint)


def test_fp16_scaler_overflows_are_counted_apart_from_nonfinite_losses(prepared, tmp_path):
    """Scaled gradients that overflow (as fp16's do under too large a scale; here a hook pushes one past the
    float range): the scaler skips the step and lowers its scale (its normal search); the step counts as an
    overflow, not as a non-finite loss."""
    from crossling.batching import DataPosition, make_batch
    from crossling.finetune import OVERFLOW, StepDone, TrainState, _advance, train_step

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=True)
    learner, training, _, _ = tiny_learner(prepared, tmp_path, scaler=scaler)
    before = [p.detach().clone() for p in learner.model.parameters()]
    learner.model.lm_head.weight.register_hook(lambda grad: grad * 1e38)
    indices, position = training.plan.take(DataPosition())
    batch = make_batch(training, indices, learner.spec, "cpu")
    learner.model.train()
    loss, _, _ = train_step(learner, batch, 1e-3, TINY).read()
    assert loss == OVERFLOW and scaler.get_scale() < 2.0**16
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters(), strict=True))
    state = _advance(TrainState(), StepDone(0, position, loss, False, 1.0, 0.1, overflow=True), TINY)
    assert (state.overflow_steps, state.nonfinite_steps) == (1, 0)
    state = _advance(state, StepDone(1, position, float("nan"), False, 1.0, 0.1), TINY)
    assert (state.overflow_steps, state.nonfinite_steps) == (1, 1)


def test_ctc_loss_is_computed_in_fp32_under_bf16_autocast(prepared, tmp_path):
    from crossling.batching import DataPosition, make_batch

    learner, training, _, _ = tiny_learner(prepared, tmp_path)
    indices, _ = training.plan.take(DataPosition())
    batch = make_batch(training, indices, learner.spec, "cpu")
    batch.pop("frames")
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        output = learner.model(**batch)
    assert output.logits.dtype == torch.bfloat16 and output.loss.dtype == torch.float32


def test_cached_features_are_computed_in_the_runs_precision(prepared, tmp_path):
    """Under bf16 the cache stores what the encoder gives inside the training step's autocast (as the
    uncached path and group-norm models compute it), not fp32 features."""
    from crossling.batching import feature_cache
    from crossling.frontend import model_input
    from crossling.models import feature_encoder
    from crossling.prepared import load_audio

    learner, training, data, _ = tiny_learner(prepared, tmp_path)
    cache = feature_cache(learner.model, learner.spec, TINY, training, torch.bfloat16)
    waveform = model_input(load_audio(data.root, training.utterances[0]), learner.spec)
    cached = cache.features(0, lambda: waveform)
    encoder = feature_encoder(learner.model)
    with torch.no_grad():
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            in_step = encoder(torch.from_numpy(waveform)[None])[0]
        fp32 = encoder(torch.from_numpy(waveform)[None])[0]
    assert torch.equal(cached, in_step) and not torch.equal(cached.float(), fp32)


def test_standalone_evaluation_uses_the_runs_precision():
    from grid_factory import toy_record as record_of

    from crossling.evaluate import run_autocast
    from crossling.records import run_identity

    identity = run_identity(model="m", weights=None, language="xx", seed=0, recipe=replace(TINY, precision="bf16"),
                            data={"source": "prepared", "content": "0"})
    assert run_autocast(record_of(identity, 0.1, steps=4), "cpu") == torch.bfloat16
    assert run_autocast(None, "cpu") is None  # a bare model directory: 'auto', fp32 on CPU


# --- resume on another set of devices ----------------------------------------------------------------


def test_a_resume_file_from_an_eight_gpu_process_resumes_where_one_gpu_is_visible(prepared, tmp_path, monkeypatch):
    """The writer ran as cuda:3 seeing 8 GPUs (earlier versions stored every GPU's RNG state); here one GPU
    is visible: setting an RNG state on GPU 1..7 raises IndexError, as torch does."""
    from crossling.finetune import FinetuneJob, ResumeFile, TrainState, standalone_identity
    from crossling.prepared import open_prepared

    learner, _, data, model = tiny_learner(prepared, tmp_path)
    job = FinetuneJob(standalone_identity(data, model, 0, TINY), model, prepared)
    resume = ResumeFile(tmp_path / "run", job)
    resume.path.parent.mkdir(parents=True)
    resume.save(learner, TrainState(step=2))
    resume.wait()
    checkpoint = torch.load(resume.path, weights_only=True)
    written_on_gpu_3 = torch.zeros(16, dtype=torch.uint8)
    checkpoint["rng"]["cuda"] = [written_on_gpu_3 + k for k in range(8)]
    torch.save(checkpoint, resume.path)

    restored = []

    def set_rng_state(state, device="cuda"):
        index = device if isinstance(device, int) else 0
        if index >= 1:
            raise IndexError("list index out of range")
        restored.append((index, state.clone()))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    state = ResumeFile(tmp_path / "run", job).restore(replace(learner, device="cuda"))
    assert state.step == 2 and len(restored) == 1 and torch.equal(restored[0][1], written_on_gpu_3)
    assert open_prepared(prepared, "xx").language == "xx"


def test_resuming_on_cuda_warns_that_gpu_training_is_not_bit_reproducible(caplog):
    with caplog.at_level(logging.WARNING, logger="crossling.devices"):
        devices.warn_nondeterminism("cpu", resumed=True)
        devices.warn_nondeterminism("cuda:0", resumed=False)
        assert not caplog.records
        devices.warn_nondeterminism("cuda:0", resumed=True)
    assert "not bit-reproducible" in caplog.text


# --- memory and device facts -------------------------------------------------------------------------


def test_peak_memory_is_read_and_reset_on_the_runs_own_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda index: calls.append(("alloc", index)) or 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda index: calls.append(("res", index)) or 4 * 2**30)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda index: calls.append(("reset", index)))
    devices.reset_peak_memory("cuda:3")
    assert devices.peak_memory_mb("cuda:3") == (3072.0, 4096.0)
    assert calls == [("reset", 3), ("alloc", 3), ("res", 3)]


def test_device_facts_name_the_gpu_driver_and_cuda_and_round_trip_in_the_record(monkeypatch):
    class Properties:
        name, total_memory = "NVIDIA A100-SXM4-80GB", 80 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Properties)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (8, 0))
    monkeypatch.setattr(devices, "_driver_version", lambda: "550.54.15")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    facts = devices.facts_of("cuda:0")
    assert facts == DeviceFacts(device="cuda:0", name="NVIDIA A100-SXM4-80GB", capability="8.0",
                                memory_mb=81920.0, driver="550.54.15", cuda="12.4", visible="5")
    from crossling.records import run_identity

    identity = run_identity(model="m", weights=None, language="xx", seed=0, recipe=TINY,
                            data={"source": "prepared", "content": "0"})
    record = toy_record(identity, 0.1, steps=4)
    record = replace(record, cost=replace(record.cost, facts=facts, peak_reserved_mb=4096.0))
    assert RunRecord.from_json(record.to_json(), "result.json") == record


# --- a GPU left unusable -------------------------------------------------------------------------------


def test_sticky_cuda_errors_are_told_from_out_of_memory():
    assert devices.is_sticky_cuda_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert devices.is_sticky_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not devices.is_sticky_cuda_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not devices.is_sticky_cuda_error(ValueError("label too long"))


def test_a_grid_process_whose_gpu_is_lost_is_replaced_and_the_grid_goes_on(tmp_path):
    """One grid process; the second run poisons its GPU: that run fails, the process ends, a fresh one
    runs the rest. In this process (no --workers) the grid stops with a clear error instead."""
    from crossling.executors import DeviceLost

    make_grid_data(tmp_path / "prepared", counts=(1, 1, 1))
    study = load_study(write_study(tmp_path / "toy.toml", ["toy/a", "toy/bad", "toy/c", "toy/d"], languages=("aa",)))
    summary = run_study(study, executor=ProcessExecutor(workers=1, threads=1),
                        run_function="grid_factory:sticky_finetune")
    assert (summary.done, summary.failed) == (3, 1)
    store = Store(tmp_path / "toy.runs")
    pids = {(store.run_dir(run.run_id) / "pid.txt").read_text() for run in expand_runs(study)}
    assert len(pids) == 2  # the process after the bad run is a new one
    other = load_study(write_study(tmp_path / "other.toml", ["toy/bad", "toy/e"], languages=("aa",)))
    with pytest.raises(DeviceLost, match="left the GPU unusable"):
        run_study(other, run_function="grid_factory:sticky_finetune")


def test_a_ray_worker_whose_gpu_is_lost_ends_itself_so_ray_retries(monkeypatch):
    from crossling.executors import Outcome, ray_run

    ended = []
    monkeypatch.setattr(executors.os, "_exit", ended.append)
    monkeypatch.setattr(executors, "execute_run", lambda *a: Outcome("r", "failed", 1.0, "CUDA error", device_lost=True))
    ray_run(None, "t", None)
    assert ended == [70]
    monkeypatch.setattr(executors, "execute_run", lambda *a: Outcome("r", "failed", 1.0, "ValueError"))
    assert ray_run(None, "t", None).status == "failed" and ended == [70]


def test_pretraining_takes_a_device_and_refuses_a_missing_gpu(tmp_path):
    from crossling.pretrain import pretrain

    with pytest.raises(ConfigError, match="no CUDA device is available"):
        pretrain(tmp_path, ["xx"], None, out=tmp_path / "out", device="cuda")
