"""Benchmarks 1 and 6: training throughput (audio seconds trained per wall second), dev loss after the same
number of steps, and peak memory of `crossling.finetune` vs a Hugging Face `Trainer` set up as the
transformers speech-recognition CTC example does (group_by_length, per-device batch 8, CNN frozen).

Each run is a fresh subprocess (fair peak RSS); the two systems alternate (A B B A …) and the median of
the paired ratios is reported. Device is auto-detected: on a GPU both train in bf16 autocast. Throughput
is timed over the steps after `warmup` warm-up steps (first-call allocations, lazy initialisation and
thread start-up left out), from the end of the last warm-up step to the end of the last step, the device
synchronised at both marks; each system counts the audio of the timed steps only.

    .venv/bin/python -m bench.bench_train [--quick] [--sizes tiny,base]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import common
from crossling import OPENMP_SPIN_COUNT

SETTINGS = {  # per size: utterance lengths (s), train/dev counts, steps (warm-up included); "quick" shrinks them
    "tiny": dict(low=1.5, high=4.0, train=32, dev=12, steps=40, warmup=3, repeats=3, lr=2e-3),
    # 2 warm-up steps (the first step of a process takes 2-3x a later one), then 12 timed: with per-step
    # times varying ~15 % (batch lengths differ), the mean of 12 has a standard error of ~4 %, below the
    # spread between repetitions on this shared machine; each timed step costs ~2-4 s here
    "base": dict(low=1.0, high=2.5, train=16, dev=4, steps=14, warmup=2, repeats=1, lr=3e-4),
}
QUICK = {"tiny": dict(train=24, steps=24, repeats=2), "base": dict(train=8, steps=4, warmup=1, repeats=1, dev=2)}
BATCH_UTTERANCES = 8


# --- the children ------------------------------------------------------------------------------------


def dev_loss(model, prepared: Path, use_mask: bool) -> float:
    """Mean CTC loss ('mean' reduction) over dev utterances, one at a time in eval mode: the same
    measurement for both systems' final models."""
    import soundfile
    import torch

    from crossling.frontend import normalize_waveform
    from crossling.models import load_tokenizer
    from crossling.prepared import open_prepared

    data = open_prepared(prepared, common.LANGUAGE)
    tokenizer = load_tokenizer(data.vocab_file)
    device = next(model.parameters()).device
    model.eval()
    losses = []
    with torch.no_grad():
        for u in data.split("dev"):
            audio, _ = soundfile.read(prepared / u.audio, dtype="float32")
            values = torch.from_numpy(normalize_waveform(audio))[None].to(device)
            labels = torch.tensor([tokenizer(u.text).input_ids], device=device)
            mask = torch.ones_like(values, dtype=torch.long) if use_mask else None
            losses.append(float(model(values.float(), attention_mask=mask, labels=labels).loss))
    return statistics.fmean(losses)


def openmp_waits() -> str:
    """The OpenMP wait setting this process ran with."""
    import os

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if name in os.environ:
            return f"{name}={os.environ[name]}"
    return "OpenMP default"


def timed(module, name: str, clock: dict, sign: int) -> None:
    """Replace `module.name` by a wrapper that adds (sign x) its wall and CPU seconds to `clock`."""
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            clock["wall"] += sign * (time.perf_counter() - wall)
            clock["cpu"] += sign * (time.process_time() - cpu)

    setattr(module, name, wrapper)


class StepWindow:
    """Wall and CPU time from the end of warm-up step `warmup` to `stop()`, with the audio of the steps
    after the warm-up; the device is synchronised at both marks (queued GPU work is waited for)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps, self.audio = warmup, 0, 0.0
        self.begin = self.cpu_begin = self.end = self.cpu_end = None
        self.marks: list[float] = []

    def step_done(self, audio_seconds: float) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            _synchronize()
            self.begin, self.cpu_begin = time.perf_counter(), time.process_time()
            self.marks = [self.begin]
        elif self.steps > self.warmup:
            self.audio += audio_seconds
            self.marks.append(time.perf_counter())  # unsynchronised: per-step spread on CPU only

    def stop(self) -> None:
        _synchronize()
        self.end, self.cpu_end = time.perf_counter(), time.process_time()

    def result(self) -> dict:
        return {"audio_seconds": self.audio, "train_seconds": self.end - self.begin,
                "cpu_seconds": self.cpu_end - self.cpu_begin, "timed_steps": self.steps - self.warmup,
                "step_seconds": [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]}


def child_crossling(args) -> dict:
    from crossling import finetune as module
    from crossling import paths
    from crossling.config import TrainConfig
    from crossling.finetune import finetune
    from crossling.models import load_finetuned

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    window = StepWindow(args.warmup)
    # timed to the end of the training loop, with the on-step cost of its resume file (a snapshot: the file
    # itself is written off the step) -- the baseline writes none, so crossling pays this in the comparison
    fitting_step, train = module.fitting_step, module.train

    def counted_step(learner, training, indices, *rest, **kwargs):
        result = fitting_step(learner, training, indices, *rest, **kwargs)
        window.step_done(sum(training.utterances[i].duration for i in indices))
        return result

    def timed_train(*a, **k):
        try:
            return train(*a, **k)
        finally:
            window.stop()

    module.fitting_step, module.train = counted_step, timed_train
    config = TrainConfig(learning_rate=args.lr, max_steps=args.steps, batch_seconds=args.batch_seconds,
                         precision=args.precision,
                         checkpoint_every=args.steps, eval_batch_seconds=args.batch_seconds,
                         collapse_patience=10**6)
    record = finetune(Path(args.prepared), common.LANGUAGE, args.checkpoint, seed=args.seed, out=out, config=config,
                      device="auto")
    cost = record.cost
    model, _, spec = load_finetuned(paths.run_model_dir(out))
    return {**window.result(), "steps": record.steps,
            "dev_loss": dev_loss(model.to(cost.device), Path(args.prepared), spec.use_attention_mask),
            "peak_mb": cost.peak_memory_mb, "device": cost.device, "threads": cost.threads,
            "openmp_waits": openmp_waits()}


def child_hf(args) -> dict:
    """The transformers example's recipe, condensed: preprocess into memory, DataCollatorCTCWithPadding,
    Trainer(group_by_length, batch 8, same optimizer values, no checkpoints)."""
    import soundfile
    import torch
    from transformers import (
        AutoModelForCTC,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        set_seed,
    )

    from crossling.config import TrainConfig
    from crossling.prepared import open_prepared
    from crossling.schedule import stages as schedule_stages

    set_seed(args.seed)
    prepared = Path(args.prepared)
    data = open_prepared(prepared, common.LANGUAGE)
    tokenizer = Wav2Vec2CTCTokenizer(str(data.vocab_file), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|", bos_token=None, eos_token=None)
    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    use_mask = config["feat_extract_norm"] == "layer"  # as the example: wav2vec2-base gets no mask
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=use_mask)
    model = AutoModelForCTC.from_pretrained(
        args.checkpoint, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        ctc_loss_reduction="mean", ctc_zero_infinity=False, mask_time_prob=0.05, mask_time_length=10,
        layerdrop=0.0, hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0,
        feat_proj_dropout=0.0, final_dropout=0.0)
    model.freeze_feature_encoder()

    def features(u) -> dict:  # the example's `prepare_dataset` (run by datasets.map before training)
        audio, _ = soundfile.read(prepared / u.audio, dtype="float32")
        values = extractor(audio, sampling_rate=16000).input_values[0]
        return {"input_values": values, "input_length": len(values), "labels": tokenizer(u.text).input_ids}

    train = [features(u) for u in data.split("train")]
    seconds_per_batch: list[float] = []

    def collate(items):  # the example's DataCollatorCTCWithPadding
        seconds_per_batch.append(sum(len(i["input_values"]) for i in items) / 16000)
        batch = extractor.pad([{"input_values": i["input_values"]} for i in items], padding=True,
                              return_tensors="pt")
        labels = tokenizer.pad([{"input_ids": i["labels"]} for i in items], padding=True, return_tensors="pt")
        batch["labels"] = labels["input_ids"].masked_fill(labels.attention_mask.ne(1), -100)
        if "attention_mask" in batch:
            batch["attention_mask"] = batch["attention_mask"].to(torch.long)
        return batch

    window = StepWindow(args.warmup)

    class Clock(TrainerCallback):
        """The `StepWindow` of the Trainer's steps (the audio of step k is its k-th collated batch)."""

        def on_step_end(self, arguments, state, control, **k):
            window.step_done(seconds_per_batch[state.global_step - 1])
            if state.global_step == args.steps:
                window.stop()

    on_gpu = torch.cuda.is_available()
    # the same tri-stage schedule as crossling's recipe (warm-up, hold, linear decay to 0), so that the
    # losses compare the systems, not two schedules
    stages = schedule_stages(TrainConfig(learning_rate=args.lr, max_steps=args.steps))
    training_args = TrainingArguments(
        output_dir=args.out, train_sampling_strategy="group_by_length", length_column_name="input_length",
        per_device_train_batch_size=BATCH_UTTERANCES, max_steps=args.steps, learning_rate=args.lr,
        lr_scheduler_type="warmup_stable_decay", warmup_steps=stages.warmup,
        lr_scheduler_kwargs={"num_stable_steps": stages.hold, "num_decay_steps": stages.decay,
                             "decay_type": "linear", "min_lr_ratio": 0.0},
        adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-8, weight_decay=0.0,
        max_grad_norm=1.0, bf16=args.precision == "bf16" or (on_gpu and args.precision == "auto"),
        save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, seed=args.seed, dataloader_num_workers=0, use_cpu=not on_gpu)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=collate,
                      processing_class=extractor, callbacks=[Clock()])
    trainer.train()
    device = "cuda" if on_gpu else "cpu"
    peak = common.device_peak_mb(device)
    return {**window.result(), "steps": args.steps, "dev_loss": dev_loss(trainer.model, prepared, use_mask), "peak_mb": peak,
            "device": device, "threads": torch.get_num_threads(), "openmp_waits": openmp_waits()}


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def one_gpu() -> dict[str, str]:
    """Both systems on the first visible GPU only (the HF Trainer would otherwise wrap every visible GPU in
    DataParallel: 8 GPUs against crossling's one); nothing where there is no GPU."""
    import torch

    from crossling.devices import visible_gpu_ids

    gpus = visible_gpu_ids(os.environ, torch.cuda.device_count())
    return {"CUDA_VISIBLE_DEVICES": gpus[0]} if gpus else {}


# --- the parent --------------------------------------------------------------------------------------


def spread(step_seconds: list[float]) -> str:
    """How steady the timed steps were: their coefficient of variation and the standard error of their mean."""
    if len(step_seconds) < 2:
        return "one timed step"
    cv = statistics.stdev(step_seconds) / statistics.fmean(step_seconds)
    return f"step time CV {cv:.0%}, standard error of the mean {cv / len(step_seconds) ** 0.5:.1%}"



def settings(size: str, quick: bool) -> dict:
    values = dict(SETTINGS[size])
    if quick:
        values.update(QUICK[size])
    return values


def batch_seconds_for(prepared: Path, s: dict) -> float:
    """crossling batches by padded seconds, the baseline by 8 utterances: the smallest `batch_seconds`
    whose length-sorted batches hold at least as much audio per step as 8 average utterances."""
    from crossling.batching import length_sorted_batches
    from crossling.prepared import open_prepared

    seconds = [u.duration for u in open_prepared(prepared, common.LANGUAGE).split("train")]
    wanted = BATCH_UTTERANCES * statistics.fmean(seconds)
    budget = wanted
    while True:
        batches = length_sorted_batches(seconds, budget)
        if sum(seconds) / len(batches) >= wanted or len(batches) == 1:
            return round(budget, 3)
        budget *= 1.02


def bench_size(size: str, work: Path, quick: bool, seed: int, baseline_same_threads: bool = False,
               precision: str = "auto") -> dict:
    """Both systems on one architecture, interleaved; -> summary with the ratios."""
    s = settings(size, quick)
    prepared = common.make_prepared(work / f"prepared-{size}-{s['train']}",
                                    {"train": s["train"], "dev": s["dev"], "test": 2}, s["low"], s["high"], seed)
    checkpoint = common.make_checkpoint(work / f"checkpoint-{size}", size, seed)
    batch_seconds = batch_seconds_for(prepared, s)

    peaks: list[float] = []  # the machine's matmul peak, measured next to every run (load varies)

    def runner(system: str):
        def run(rep: int) -> dict:
            peaks.append(common.matmul_peak_flops(2048))
            args = ["--child", system, "--prepared", str(prepared), "--checkpoint", str(checkpoint),
                    "--steps", str(s["steps"]), "--batch-seconds", str(batch_seconds), "--seed", str(seed),
                    "--lr", str(s["lr"]), "--precision", precision, "--warmup", str(s["warmup"]),
                    "--out", str(work / f"run-{size}-{system}-{rep}")]
            # the baseline runs as users run the example: OpenMP's default waits unless asked otherwise;
            # crossling sets its own (`crossling.short_openmp_spin`) unless the user chose a policy
            env = {**common.OPENMP_DEFAULT_WAITS, **one_gpu()}
            if system == "hf" and baseline_same_threads:
                env["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
            result = common.run_child("bench_train", args, env=env)
            result["throughput"] = result["audio_seconds"] / result["train_seconds"]
            result["cpu_throughput"] = result["audio_seconds"] / result["cpu_seconds"]
            print(f"  {size} rep {rep} {system:9s}: {result['timed_steps']} timed steps after {s['warmup']} warm-up "
                  f"({spread(result['step_seconds'])}), "
                  f"{result['throughput']:7.2f} audio s/s, "
                  f"{result['cpu_throughput']:7.2f} audio s/CPU s, {result['audio_seconds'] / result['steps']:5.1f} audio s/step, dev loss {result['dev_loss']:.4f}, "
                  f"peak {result['peak_mb']:.0f} MB, {result['openmp_waits']}", flush=True)
            return result
        return run

    results = common.interleaved({"crossling": runner("crossling"), "hf": runner("hf")}, s["repeats"])
    ours, theirs = results["crossling"], results["hf"]
    return {
        "size": size, "precision": precision, "prepared": str(prepared), "steps": s["steps"], "warmup": s["warmup"],
        "lr": s["lr"], "repeats": s["repeats"], "train_utterances": s["train"],
        "batch_seconds": batch_seconds,
        "throughput_ratio": common.median_ratio([r["throughput"] for r in ours], [r["throughput"] for r in theirs]),
        "cpu_time_ratio": common.median_ratio([r["cpu_throughput"] for r in ours],
                                              [r["cpu_throughput"] for r in theirs]),
        "crossling_throughput": statistics.median(r["throughput"] for r in ours),
        "hf_throughput": statistics.median(r["throughput"] for r in theirs),
        "crossling_dev_loss": statistics.median(r["dev_loss"] for r in ours),
        "hf_dev_loss": statistics.median(r["dev_loss"] for r in theirs),
        "memory_ratio": common.median_ratio([r["peak_mb"] for r in ours], [r["peak_mb"] for r in theirs]),
        "crossling_peak_mb": statistics.median(r["peak_mb"] for r in ours),
        "hf_peak_mb": statistics.median(r["peak_mb"] for r in theirs),
        "device": ours[0]["device"], "peak_flops": max(peaks),
    }


def report(summary: dict) -> list[str]:
    size = summary["size"] if summary["precision"] == "auto" else f"{summary['size']} {summary['precision']}"
    ours, theirs = summary["crossling_dev_loss"], summary["hf_dev_loss"]
    verdict = ("better" if ours < theirs * 0.99 else "equal within 1%" if ours <= theirs * 1.01
               else f"WORSE by {ours / theirs - 1:.1%}")
    return [
        common.line(f"train throughput {size} (crossling / HF Trainer)", summary["throughput_ratio"], target=2.0,
                    note=f"{summary['crossling_throughput']:.2f} vs {summary['hf_throughput']:.2f} audio s per s, "
                         f"{summary['steps'] - summary['warmup']} timed steps after {summary['warmup']} warm-up"),
        common.line(f"train audio seconds per CPU second {size} (crossling / HF Trainer)", summary["cpu_time_ratio"],
                    note="less sensitive to other processes on a shared machine"),
        f"LOSS {size} dev CTC loss after {summary['steps']} steps: crossling {summary['crossling_dev_loss']:.4f}, "
        f"HF {summary['hf_dev_loss']:.4f} ({verdict}; same tri-stage schedule, lr {summary['lr']:g})",
        common.line(f"train peak memory {size} (crossling / HF Trainer)", summary["memory_ratio"],
                    note=f"{summary['crossling_peak_mb']:.0f} vs {summary['hf_peak_mb']:.0f} MB; lower is better"),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--sizes", default="tiny,base", help="comma-separated: tiny, base")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "crossling-bench"), help="scratch folder for data, checkpoints and runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the summaries here")
    parser.add_argument("--baseline-same-threads", action="store_true",
                        help="give the HF baseline crossling's OpenMP setting too (GOMP_SPINCOUNT)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="both systems: auto = bf16 autocast on a GPU, fp32 on CPU; bf16 also on CPU "
                             "(fast where the CPU has native bf16, e.g. AVX512-BF16 or AMX)")
    parser.add_argument("--child", choices=("crossling", "hf"), help=argparse.SUPPRESS)
    for name in ("--prepared", "--checkpoint", "--out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        common.emit((child_crossling if args.child == "crossling" else child_hf)(args))
        return 0
    print("machine:", json.dumps(common.machine()), flush=True)
    summaries = []
    for size in args.sizes.split(","):
        summary = bench_size(size, Path(args.work), args.quick, args.seed, args.baseline_same_threads, args.precision)
        summaries.append(summary)
        print("\n".join(report(summary)), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
