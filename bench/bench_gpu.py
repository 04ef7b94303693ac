"""GPU check: every figure that needs a GPU, measured in one process on one GPU (well under 10 minutes), each
printed with its ceiling. Timers synchronise the GPU; warm-up steps are excluded; the peak is this GPU's
own bf16 (or fp16) matmul rate measured in the same run; the LARGE model trains at the study's batch.

    python -m bench.bench_gpu [--device cuda:0] [--steps 10]

Without a visible CUDA GPU it says so and exits 2 (nothing is measured, nothing is guessed)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BATCH_SECONDS = 200.0  # the reference recipe's batch
CLIP_SECONDS = 5.0  # a typical Common Voice clip
LABELS_PER_CLIP = 60  # about 12 characters per second
VOCAB = 50
WARMUP = 3
LARGE_CONFIG = Path(__file__).resolve().parents[1] / "src" / "crossling" / "data" / "facebook__wav2vec2-xls-r-300m.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps after the warm-up")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible here (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}): nothing was measured. "
              "Run bash bench/gpu_check.sh on a machine with an NVIDIA GPU and a CUDA build of torch.",
              file=sys.stderr)
        return 2
    return measure(args.device, args.steps)


def measure(device: str, steps: int) -> int:
    import torch

    from crossling import devices

    torch.cuda.set_device(device)
    facts = devices.facts_of(device)
    print(f"DEVICE {facts.name}, compute capability {facts.capability}, {facts.memory_mb / 1024:.1f} GiB, driver "
          f"{facts.driver or 'unknown'}, CUDA {facts.cuda}, torch {torch.__version__}")
    precision = devices.choose_precision("auto", device, devices.capability_of(device))
    dtype = getattr(torch, precision.autocast)
    peak = matmul_peak(device, dtype)
    print(f"PEAK {precision.name} matmul: {peak / 1e12:.1f} TFLOP/s (8192^3, best of 10, synchronised; the ceiling "
          f"of MFU below)")
    step = large_step(device, dtype, steps)
    print(f"STEP LARGE (XLS-R 300M config) at a {BATCH_SECONDS:g} s batch of {CLIP_SECONDS:g} s clips, "
          f"{precision.name}: {step['seconds'] * 1e3:.0f} ms per step (median of {steps} after {WARMUP} warm-up; "
          f"ceiling: {step['flops'] / peak * 1e3:.0f} ms at 100 % of the measured peak)")
    print(f"MFU {step['flops'] / step['seconds'] / peak:.1%} of the measured {precision.name} peak (ceiling 100 %)")
    print(f"MEMORY peak {step['allocated'] / 2**30:.2f} GiB allocated, {step['reserved'] / 2**30:.2f} GiB reserved; "
          f"the meta-device estimate crossling plans with: {step['estimate'] / 2**30:.2f} GiB "
          f"(measured / estimate {step['allocated'] / step['estimate']:.2f}; ceiling: the GPU's "
          f"{facts.memory_mb / 1024:.1f} GiB)")
    print(f"CHECKPOINT on-step cost (snapshot to host) {step['snapshot']:.2f} s, background write "
          f"{step['write']:.2f} s, per resume file; ceiling: 250 steps of compute = {250 * step['seconds']:.0f} s")
    print(f"DATA host time to read and pad one {BATCH_SECONDS:g} s batch {step['data'] * 1e3:.0f} ms (prefetched "
          f"off the step; ceiling: the step's {step['seconds'] * 1e3:.0f} ms)")
    print(f"NONDETERMINISM max |gradient difference| between two identical steps: {step['nondeterminism']:.3g} "
          f"(0 would be bit-reproducible; CUDA's CTC backward is not)")
    print(json.dumps({"device": facts.name, "peak_flops": peak, **step}))
    return 0


def matmul_peak(device: str, dtype, size: int = 8192) -> float:
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(10):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def large_learner(device: str, dtype):
    import torch
    from transformers import AutoConfig, AutoModelForCTC

    from crossling.config import TrainConfig
    from crossling.finetune import Learner, make_optimizer
    from crossling.models import InputSpec

    values = json.loads(LARGE_CONFIG.read_text())
    values = {k: v for k, v in values.items() if k not in ("architectures", "transformers_version")}
    config = AutoConfig.for_model(**{**values, "vocab_size": VOCAB, "layerdrop": 0.0, "mask_time_prob": 0.05,
                                     "ctc_loss_reduction": "mean", "pad_token_id": 0})
    model = AutoModelForCTC.from_config(config).to(device)
    model.freeze_feature_encoder()
    recipe = TrainConfig()
    spec = InputSpec(do_normalize=True, use_attention_mask=True, feat_extract_norm=config.feat_extract_norm)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return Learner(model=model.train(), optimizer=make_optimizer(model, recipe), scaler=scaler, spec=spec,
                   device=device, amp_dtype=dtype), recipe, values


def synthetic_batch(device: str, generator) -> dict:
    import torch

    clips = int(BATCH_SECONDS / CLIP_SECONDS)
    samples = int(CLIP_SECONDS * 16_000)
    values = torch.randn(clips, samples, generator=generator)
    labels = torch.randint(1, VOCAB, (clips, LABELS_PER_CLIP), generator=generator)
    frames = [int(CLIP_SECONDS * 50) - 1] * clips  # the CNN's 20 ms frames
    return {"input_values": values.to(device), "attention_mask": torch.ones(clips, samples, dtype=torch.long,
            device=device), "labels": labels.to(device), "frames": frames}


def large_step(device: str, dtype, steps: int) -> dict:
    import statistics

    import numpy as np
    import torch

    from crossling import budget, checkpoints
    from crossling.design import Architecture
    from crossling.finetune import train_step

    learner, recipe, values = large_learner(device, dtype)
    generator = torch.Generator().manual_seed(0)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for index in range(WARMUP + steps):
        batch = synthetic_batch(device, generator)
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_step(learner, batch, 6e-5, recipe)
        torch.cuda.synchronize(device)
        if index >= WARMUP:
            times.append(time.perf_counter() - start)
    allocated, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
    estimate = budget.measure_step_memory(values, vocab_size=VOCAB, clip_seconds=CLIP_SECONDS,
                                          dtype=str(dtype).removeprefix("torch.")).bytes_for(BATCH_SECONDS)
    started = time.perf_counter()
    state = {"model": checkpoints.snapshot(learner.model.state_dict()),
             "optimizer": checkpoints.snapshot(learner.optimizer.state_dict())}
    snapshot_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        writer = checkpoints.CheckpointWriter()
        started = time.perf_counter()
        writer.write(Path(folder) / "resume.pt", state)
        writer.wait()
        write_seconds = time.perf_counter() - started
    flops = Architecture.from_config(values, "bundled").train_step_flops(BATCH_SECONDS, CLIP_SECONDS, VOCAB)
    return {"seconds": statistics.median(times), "flops": flops, "allocated": allocated, "reserved": reserved,
            "estimate": estimate, "snapshot": snapshot_seconds, "write": write_seconds,
            "data": host_batch_seconds(np), "nondeterminism": nondeterminism(learner, device, recipe)}


def host_batch_seconds(np) -> float:
    """Host time to normalise and pad one batch of waveforms (what the prefetcher does off the step)."""
    from crossling.frontend import normalize_waveform, pad_inputs

    rng = np.random.default_rng(0)
    waveforms = [rng.standard_normal(int(CLIP_SECONDS * 16_000)).astype(np.float32)
                 for _ in range(int(BATCH_SECONDS / CLIP_SECONDS))]
    started = time.perf_counter()
    pad_inputs([normalize_waveform(w) for w in waveforms], [len(w) for w in waveforms])
    return time.perf_counter() - started


def nondeterminism(learner, device: str, recipe) -> float:
    """Gradients of one batch computed twice from the same weights (no update in between)."""
    import torch

    from crossling.finetune import _forward

    generator = torch.Generator().manual_seed(1)
    batch = synthetic_batch(device, generator)
    grads = []
    for _ in range(2):
        torch.manual_seed(0)
        learner.optimizer.zero_grad(set_to_none=True)
        loss, _ = _forward(learner, dict(batch))
        loss.backward()
        grads.append([p.grad.detach().float().clone() for p in learner.model.parameters() if p.grad is not None])
    return max(float((a - b).abs().max()) for a, b in zip(*grads, strict=True))


if __name__ == "__main__":
    sys.exit(main())
