"""GPU check: every figure that needs a GPU, measured on one GPU (well under 10 minutes), each printed with
its ceiling. Timers synchronise the GPU; warm-up steps are excluded; the peak is this GPU's own bf16 (or
fp16) matmul rate measured in the same run; the LARGE model trains at the study's batch. The baseline, a
Hugging Face `Trainer` training the same model on the same batches in the same precision, runs in a child
process pinned to the same GPU by CUDA_VISIBLE_DEVICES (else the Trainer wraps every visible GPU in
DataParallel), timed the same way (synchronised, from each step's start to its end, warm-up excluded).

    python -m bench.bench_gpu [--device cuda:0] [--steps 10] [--no-baseline]

Without a visible CUDA GPU it says so and exits 2 (nothing is measured, nothing is guessed)."""

from __future__ import annotations

import argparse
import json
import os
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


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0", help="the GPU to measure: cuda or cuda:K (default cuda:0)")
    parser.add_argument("--steps", type=positive, default=10, help="timed training steps after the warm-up")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the HF Trainer baseline")
    parser.add_argument("--child", choices=("hf",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device != "cuda" and not args.device.startswith("cuda:"):
        print(f"gpu_check: --device {args.device}: it measures a CUDA GPU, give cuda or cuda:K", file=sys.stderr)
        return 2
    import torch

    if args.child:  # the baseline, in a process that sees only the measured GPU (as cuda:0)
        from bench import common

        precision = devices_precision("cuda:0")
        common.emit(hf_step("cuda:0", getattr(torch, precision.autocast), args.steps))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible here (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}): nothing was measured. "
              "Run bash bench/gpu_check.sh on a machine with an NVIDIA GPU and a CUDA build of torch.",
              file=sys.stderr)
        return 2
    return measure(args.device, args.steps, baseline=not args.no_baseline)


def devices_precision(device: str):
    from crossling import devices

    return devices.choose_precision("auto", device, devices.capability_of(device))


def measure(device: str, steps: int, baseline: bool = True) -> int:
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
    hf = baseline_step(device, steps) if baseline else None
    if hf is not None:
        print(baseline_lines(hf, step, peak, precision.name))
    print(json.dumps({"device": facts.name, "peak_flops": peak, **step, "hf": hf}))
    return 0


def pinned_env(device: str, environ, count: int) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES that shows a child only the GPU `device` names in this process (where
    CUDA_VISIBLE_DEVICES may already renumber them)."""
    from crossling.devices import visible_gpu_ids

    _, _, index = device.partition(":")
    gpus = visible_gpu_ids(environ, count)
    return {"CUDA_VISIBLE_DEVICES": gpus[int(index or 0)]}


def baseline_step(device: str, steps: int) -> dict:
    """`hf_step` in a child process pinned to `device`'s GPU."""
    import torch

    from bench import common

    env = pinned_env(device, os.environ, torch.cuda.device_count())
    result = common.run_child("bench_gpu", ["--child", "hf", "--steps", str(steps)], env=env, timeout=540)
    return {**result, "pinned": env["CUDA_VISIBLE_DEVICES"]}


def baseline_lines(hf: dict, step: dict, peak: float, precision: str) -> str:
    from bench import common

    ceiling = step["flops"] / peak
    return "\n".join([
        f"BASELINE HF Trainer (transformers {hf['transformers']}, pinned to GPU {hf['pinned']} by CUDA_VISIBLE_DEVICES, "
        f"the same LARGE model, batch and {precision}): {hf['seconds'] * 1e3:.0f} ms per step (median of "
        f"{hf['steps']} after {WARMUP} warm-up, synchronised), MFU {step['flops'] / hf['seconds'] / peak:.1%}",
        common.line("LARGE step, HF Trainer time / crossling time", hf["seconds"] / step["seconds"],
                    note=f"ceiling {hf['seconds'] / ceiling:.2f}x (crossling at 100 % of the measured peak)"),
    ])


def synchronised_clock(base: type, device: str):
    """A Trainer callback (of class `base`) that times each step from its start to its end, the device
    synchronised at both (queued GPU work is waited for, or the clock would stop before the work did)."""
    import torch

    class Clock(base):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.started = 0.0

        def on_step_begin(self, *a, **k):
            torch.cuda.synchronize(device)
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            torch.cuda.synchronize(device)
            self.times.append(time.perf_counter() - self.started)

    return Clock()


def hf_step(device: str, dtype, steps: int) -> dict:
    """Median seconds per step of a Hugging Face Trainer training `large_learner`'s model on `synthetic_batch`
    batches (`WARMUP` + `steps` of them) in `dtype`; each step timed from its start to its end with the
    device synchronised at both (the batch is already collated: the data path is not in the window)."""
    import statistics

    import torch
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments  # the Trainer needs accelerate

    learner, recipe, _ = large_learner(device, dtype)
    generator = torch.Generator().manual_seed(0)
    batches = [synthetic_batch("cpu", generator) for _ in range(WARMUP + steps)]
    clips = len(batches[0]["frames"])
    rows = [{key: batch[key][row] for key in ("input_values", "attention_mask", "labels")}
            for batch in batches for row in range(clips)]
    clock = synchronised_clock(TrainerCallback, device)
    with tempfile.TemporaryDirectory() as folder:
        arguments = TrainingArguments(
            output_dir=folder, per_device_train_batch_size=clips, max_steps=WARMUP + steps,
            learning_rate=recipe.learning_rate, adam_beta1=recipe.adam_beta1, adam_beta2=recipe.adam_beta2,
            adam_epsilon=recipe.adam_epsilon, max_grad_norm=recipe.max_grad_norm, lr_scheduler_type="constant",
            bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, save_strategy="no", eval_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0,
            use_cpu=device == "cpu")
        trainer = Trainer(model=learner.model, args=arguments, train_dataset=rows, callbacks=[clock],
                          data_collator=lambda items: {key: torch.stack([i[key] for i in items]) for key in items[0]})
        trainer.train()
    return {"seconds": statistics.median(clock.times[WARMUP:]), "steps": len(clock.times) - WARMUP,
            "transformers": transformers.__version__}


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
