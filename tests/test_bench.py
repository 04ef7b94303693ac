"""The benchmark helpers that turn measurements into reported figures: FLOP counts, interleaving, ratios."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import common  # noqa: E402
from crossling.models import frames_for_samples  # noqa: E402


@pytest.fixture(scope="module")
def base():
    return common.model_config("base")


@pytest.mark.parametrize("samples", [400, 16_000, 16_000 * 5 + 123])
def test_conv_frames_agree_with_the_models_frame_count(base, samples):
    assert common.conv_frames(base, samples)[-1] == frames_for_samples(base, samples)


def test_cnn_flops_of_the_first_layer_by_hand(base):
    frames = common.conv_frames(base, 16_000)
    first_layer = 2.0 * frames[0] * 10 * 1 * 512
    second_layer = 2.0 * frames[1] * 3 * 512 * 512
    assert common.cnn_flops(base, 16_000) > first_layer + second_layer
    # wav2vec2-base's CNN costs about 4-5 GFLOP per second of audio
    assert 3e9 < common.cnn_flops(base, 16_000) < 6e9


def test_encoder_flops_grow_with_layers_and_frames(base):
    one = common.encoder_flops(base, 50, 32)
    assert common.encoder_flops(base, 100, 32) > 2 * one  # attention is quadratic in frames
    # 12 layers of 4h^2 + 2h*ffn multiply-adds per frame dominate: ~85M parameters x 2 FLOPs x frames
    assert 0.8 * 2 * 85e6 * 50 < one < 1.3 * 2 * 85e6 * 50


def test_train_step_counts_frozen_cnn_forward_once_and_encoder_three_times(base):
    lengths = [16_000, 32_000]
    frames = common.conv_frames(base, 32_000)[-1]
    expected = 2 * common.cnn_flops(base, 32_000) + 3 * 2 * common.encoder_flops(base, frames, 32)
    assert common.train_step_flops(base, lengths, 32) == pytest.approx(expected)
    unfrozen = common.train_step_flops(base, lengths, 32, frozen_cnn=False)
    assert unfrozen == pytest.approx(expected + 4 * common.cnn_flops(base, 32_000))
    assert common.useful_train_flops(base, lengths, 32) < common.train_step_flops(base, lengths, 32)


def test_interleaved_alternates_the_order_and_keeps_results_per_system():
    calls = []
    results = common.interleaved({"a": lambda rep: calls.append(("a", rep)) or {"rep": rep},
                                  "b": lambda rep: calls.append(("b", rep)) or {"rep": rep}}, 3)
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert [r["rep"] for r in results["b"]] == [0, 1, 2]


def test_median_ratio_pairs_repetitions():
    assert common.median_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 1.0]) == 3.0
    assert "MISSED" in common.line("x", 1.5, target=2.0) and "met" in common.line("x", 2.5, target=2.0)


def test_ceilings_are_the_inverse_of_the_baselines_utilisation():
    from bench import bench_eval, bench_mfu

    line = bench_mfu.ceiling_line("base", {"mfu": 0.5, "mfu_without_cnn": 0.4})
    assert "at most 2.00x" in line and "2.50x" in line and "50% MFU" in line
    line = bench_eval.ceiling_line({"size": "base", "pipeline_flops_per_second": 150e9, "peak_flops": 200e9})
    assert "75% of the measured matmul peak" in line and "at most 1.33x faster" in line


def test_busy_processes_run_only_inside_the_block():
    import multiprocessing

    from bench.bench_threads import busy_processes

    before = set(multiprocessing.active_children())
    with busy_processes(2):
        started = set(multiprocessing.active_children()) - before
        assert len(started) == 2 and all(p.is_alive() for p in started)
    assert not any(p.is_alive() for p in started)


def test_demo_phase_clock_counts_each_phase_exclusively(monkeypatch):
    from bench import bench_demo

    now = [0.0]
    monkeypatch.setattr(bench_demo.time, "perf_counter", lambda: now[0])
    clock = bench_demo.PhaseClock()

    def read():
        now[0] += 2.0

    def train():
        now[0] += 1.0
        clock.wrap("audio read", read)()
        now[0] += 3.0

    clock.wrap("training steps", train)()
    now[0] += 5.0  # outside every phase: counted nowhere
    assert clock.take() == {"training steps": 4.0, "audio read": 2.0}


def test_demo_fixed_share_spreads_process_imports_over_runs():
    from bench import bench_demo

    rows = [{"kind": "process", "pid": 1, "phases": {bench_demo.IMPORTS: 10.0}},
            {"kind": "run", "pid": 1, "wall": 45.0, "phases": {"model load": 4.0, "training steps": 40.0, "saving": 1.0}},
            {"kind": "run", "pid": 1, "wall": 45.0, "phases": {"model load": 0.5, "training steps": 44.0, "saving": 0.5}}]
    assert bench_demo.fixed_share(rows) == pytest.approx((10.0 + 4.0 + 1.0 + 0.5 + 0.5) / 100.0)
    assert bench_demo.model_loads(rows) == (4.0, 0.5)
    assert bench_demo.phase_totals(rows)["training steps"] == 84.0


def test_gpu_check_says_there_is_no_gpu_and_exits_non_zero():
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(root / "src")}
    done = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "no CUDA GPU is visible here" in done.stderr and "nothing was measured" in done.stderr


def test_gpu_check_measurements_run_on_a_stand_in_device(tmp_path, monkeypatch):
    """The GPU measurements on CPU with CUDA's timers and memory counters stubbed, a tiny architecture and a
    short batch: every figure is computed (on a GPU the same code runs with the real counters)."""
    import json

    import torch
    from tinydata_factory import tiny_config

    from bench import bench_gpu

    config = tiny_config("wav2vec2").to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(bench_gpu, "LARGE_CONFIG", tmp_path / "config.json")
    monkeypatch.setattr(bench_gpu, "BATCH_SECONDS", 4.0)
    monkeypatch.setattr(bench_gpu, "CLIP_SECONDS", 1.0)
    monkeypatch.setattr(bench_gpu, "LABELS_PER_CLIP", 5)
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    for name in ("max_memory_allocated", "max_memory_reserved"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: 2**20)
    step = bench_gpu.large_step("cpu", torch.bfloat16, steps=1)
    assert step["seconds"] > 0 and step["flops"] > 0 and step["estimate"] > 0 and step["data"] > 0
    assert step["snapshot"] >= 0 and step["write"] > 0 and step["nondeterminism"] >= 0.0
    assert bench_gpu.matmul_peak("cpu", torch.float32, size=64) > 0


def test_gpu_benchmarks_pin_one_gpu_and_refuse_a_cpu_peak(monkeypatch, capsys):
    import torch

    from bench import bench_mfu, bench_train

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert bench_train.one_gpu() == {"CUDA_VISIBLE_DEVICES": "0"}  # not DataParallel over 8 GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    assert bench_train.one_gpu() == {"CUDA_VISIBLE_DEVICES": "3"}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert bench_train.one_gpu() == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench_mfu.main([]) == 2 and "bench/gpu_check.sh" in capsys.readouterr().err


def test_data_path_bench_times_both_paths_on_the_same_batches():
    from bench import profile_step

    result = profile_step.data_path(minutes=2.0, batch_seconds=20.0, epochs=1)
    assert result["batches"] == result["per_epoch"] > 1  # the warm-up epoch is left out
    assert result["repadded"] > 0 and result["padded once"] > 0 and result["ratio"] > 0


def test_train_bench_times_only_the_steps_after_the_warm_up(monkeypatch):
    from bench import bench_train

    now, synced = [0.0], []
    monkeypatch.setattr(bench_train.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(bench_train, "_synchronize", lambda: synced.append(now[0]))
    window = bench_train.StepWindow(warmup=2)
    for seconds, audio in [(9.0, 1.0), (5.0, 2.0), (1.0, 3.0), (1.5, 4.0), (1.0, 5.0)]:
        now[0] += seconds
        window.step_done(audio)
    now[0] += 0.5  # the end of the loop (the last resume file's snapshot)
    window.stop()
    result = window.result()
    assert result["timed_steps"] == 3 and result["audio_seconds"] == 12.0
    assert result["train_seconds"] == 4.0 and synced == [14.0, 18.0]  # synchronised at both marks
    assert result["step_seconds"] == [1.0, 1.5, 1.0]
    assert bench_train.spread(result["step_seconds"]) == "step time CV 25%, standard error of the mean 14.3%"


def test_gpu_check_refuses_a_device_that_is_no_gpu_and_a_step_count_below_one(capsys):
    from bench import bench_gpu

    assert bench_gpu.main(["--device", "cpu"]) == 2
    assert "it measures a CUDA GPU" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        bench_gpu.main(["--steps", "0"])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_gpu_check_baseline_is_pinned_to_the_measured_gpu(monkeypatch):
    import torch

    from bench import bench_gpu, common

    assert bench_gpu.pinned_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "2,5"}, 2) == {"CUDA_VISIBLE_DEVICES": "5"}
    assert bench_gpu.pinned_env("cuda", {}, 8) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert bench_gpu.pinned_env("cuda:3", {}, 8) == {"CUDA_VISIBLE_DEVICES": "3"}
    children = []
    monkeypatch.setattr(common, "run_child", lambda module, args, env=None, timeout=0: children.append(
        (module, args, env)) or {"seconds": 0.2, "steps": 4, "transformers": "5"})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    hf = bench_gpu.baseline_step("cuda:1", 4)
    assert children == [("bench_gpu", ["--child", "hf", "--steps", "4"], {"CUDA_VISIBLE_DEVICES": "5"})]
    lines = bench_gpu.baseline_lines(hf, {"seconds": 0.1, "flops": 5e12}, 1e14, "bf16")
    assert "pinned to GPU 5" in lines and "RATIO LARGE step, HF Trainer time / crossling time: 2.00x" in lines
    assert "ceiling 4.00x" in lines  # 0.2 s against 5e12 / 1e14 = 0.05 s at the peak


def test_gpu_check_baseline_clock_synchronises_the_measured_device(monkeypatch):
    import torch

    from bench import bench_gpu

    now, synced = [0.0], []
    monkeypatch.setattr(bench_gpu.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append((device, now[0])))
    clock = bench_gpu.synchronised_clock(object, "cuda:0")
    for seconds in (3.0, 1.0):
        clock.on_step_begin()
        now[0] += seconds  # the queued work: the clock stops only after synchronising
        clock.on_step_end()
        now[0] += 0.5  # the data of the next step: outside the window
    assert clock.times == [3.0, 1.0] and synced == [("cuda:0", 0.0), ("cuda:0", 3.0), ("cuda:0", 3.5),
                                                    ("cuda:0", 4.5)]


def test_gpu_check_baseline_times_synchronised_steps_after_the_warm_up(tmp_path, monkeypatch):
    """The HF Trainer baseline on CPU with CUDA's synchronize stubbed (recording its calls), a tiny
    architecture and a short batch: each step is timed between two synchronisations of the device."""
    import json

    pytest.importorskip("accelerate")  # the Trainer needs it (in the dev extra, so CI runs this test)
    import torch
    from tinydata_factory import tiny_config

    from bench import bench_gpu

    (tmp_path / "config.json").write_text(json.dumps(tiny_config("wav2vec2").to_dict()))
    monkeypatch.setattr(bench_gpu, "LARGE_CONFIG", tmp_path / "config.json")
    monkeypatch.setattr(bench_gpu, "BATCH_SECONDS", 2.0)
    monkeypatch.setattr(bench_gpu, "CLIP_SECONDS", 1.0)
    monkeypatch.setattr(bench_gpu, "LABELS_PER_CLIP", 5)
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    result = bench_gpu.hf_step("cpu", torch.float32, steps=2)
    assert result["steps"] == 2 and result["seconds"] > 0
    assert synced == ["cpu"] * 2 * (bench_gpu.WARMUP + 2)
