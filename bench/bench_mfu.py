"""Benchmark 2: model FLOPs utilisation of training. FLOPs per step come from the architecture (CNN and
transformer matmuls; forward + backward = 3x forward for the trainable part, the frozen CNN forward only),
achieved FLOP/s from a real `crossling.finetune` run (and the HF Trainer baseline) in child processes, and
the machine's peak from `torch.matmul` on large fp32 matrices measured in this same script.

    .venv/bin/python -m bench.bench_mfu [--quick] [--sizes tiny,base]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench import bench_train, common


def flops_per_audio_second(size: str, prepared: Path, vocab_size: int) -> dict:
    """Model FLOPs per second of training audio over the train split (unpadded), split into the frozen
    CNN's forward and the trainable part's forward + backward."""
    from crossling.prepared import open_prepared

    config = common.model_config(size)
    lengths = [u.num_samples for u in open_prepared(prepared, common.LANGUAGE).split("train")]
    audio = sum(lengths) / common.RATE
    cnn = sum(common.cnn_flops(config, n) for n in lengths)
    encoder = 3.0 * sum(common.encoder_flops(config, common.conv_frames(config, n)[-1], vocab_size) for n in lengths)
    return {"cnn_forward": cnn / audio, "encoder_fwd_bwd": encoder / audio, "total": (cnn + encoder) / audio}


def from_train_summary(summary: dict, peak: float) -> dict:
    """MFU of both systems from a `bench_train --json` summary (its median throughputs)."""
    prepared = Path(summary["prepared"])
    vocab_size = len(json.loads((prepared / common.LANGUAGE / "vocab.json").read_text()))
    per_second = flops_per_audio_second(summary["size"], prepared, vocab_size)
    out = {"size": summary["size"], "peak_flops": peak, "flops_per_audio_second": per_second,
           "example_step_flops": _example_step(summary["size"], vocab_size), "threads": _threads(),
           "source": "bench_train medians"}
    for system in ("crossling", "hf"):
        out[system] = _utilisation(summary[f"{system}_throughput"], per_second, peak)
    return out


def _example_step(size: str, vocab_size: int) -> float:
    s = bench_train.SETTINGS[size]
    example = [int(common.RATE * d) for d in common.durations(bench_train.BATCH_UTTERANCES, s["low"], s["high"], 1)]
    return common.train_step_flops(common.model_config(size), example, vocab_size)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _utilisation(throughput: float, per_second: dict, peak: float) -> dict:
    achieved = throughput * per_second["total"]
    return {"audio_seconds_per_second": throughput, "model_flops_per_second": achieved, "mfu": achieved / peak,
            "mfu_without_cnn": throughput * per_second["encoder_fwd_bwd"] / peak}


def ceiling_line(size: str, baseline: dict) -> str:
    """The most any training loop could gain over the baseline on this machine: doing the same model FLOPs
    at 100 % of the measured matmul peak (1 / the baseline's MFU), or also skipping the frozen CNN."""
    return (f"CEILING train {size}: at the measured peak, the same model FLOPs would run at most "
            f"{1 / baseline['mfu']:.2f}x the HF Trainer's speed; with the frozen CNN's forward skipped too, "
            f"{1 / baseline['mfu_without_cnn']:.2f}x (the HF Trainer reaches {baseline['mfu']:.0%} MFU)")


def measure(size: str, work: Path, quick: bool, seed: int, peak: float) -> dict:
    s = bench_train.settings(size, quick)
    prepared = common.make_prepared(work / f"prepared-{size}-{s['train']}",
                                    {"train": s["train"], "dev": s["dev"], "test": 2}, s["low"], s["high"], seed)
    checkpoint = common.make_checkpoint(work / f"checkpoint-{size}", size, seed)
    batch_seconds = bench_train.batch_seconds_for(prepared, s)
    vocab_size = len(json.loads((prepared / common.LANGUAGE / "vocab.json").read_text()))
    per_second = flops_per_audio_second(size, prepared, vocab_size)
    out = {"size": size, "peak_flops": peak, "flops_per_audio_second": per_second,
           "example_step_flops": _example_step(size, vocab_size), "threads": _threads(), "source": "runs here"}
    for system in ("crossling", "hf"):
        result = common.run_child("bench_train", [
            "--child", system, "--prepared", str(prepared), "--checkpoint", str(checkpoint),
            "--steps", str(s["steps"]), "--batch-seconds", str(batch_seconds), "--seed", str(seed), "--lr", str(s["lr"]),
            "--out", str(work / f"mfu-{size}-{system}")])
        out[system] = _utilisation(result["audio_seconds"] / result["train_seconds"], per_second, peak)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="tiny,base")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "crossling-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--train-json", help="use the throughputs of a `bench_train --json` file instead of new runs")
    args = parser.parse_args(argv)
    import torch

    if torch.cuda.is_available():  # the runs would train on the GPU and be divided by the CPU's fp32 peak
        print("bench_mfu measures CPU training against the CPU's own matmul peak; on a GPU machine run "
              "bash bench/gpu_check.sh (MFU against the GPU's bf16 peak measured in the same run)", file=sys.stderr)
        return 2
    print("machine:", json.dumps(common.machine()), flush=True)
    summaries = []
    trained = {s["size"]: s for s in json.loads(Path(args.train_json).read_text())} if args.train_json else {}
    for size in args.sizes.split(","):
        # peak measured right before and after the runs (the machine is shared): the best of both
        before = common.matmul_peak_flops(2048, threads=torch.get_num_threads())
        if size in trained:  # its runs had their own peak measured next to them
            before = max(before, trained[size].get("peak_flops", 0.0))
            summary = from_train_summary(trained[size], before)
        else:
            summary = measure(size, Path(args.work), args.quick, args.seed, before)
        after = common.matmul_peak_flops(2048)
        peak = max(before, after)
        for system in ("crossling", "hf"):
            flops = summary[system]
            flops["mfu"] = flops["model_flops_per_second"] / peak
            flops["mfu_without_cnn"] *= before / peak
        summary["peak_flops"] = peak
        summaries.append(summary)
        ours, theirs = summary["crossling"], summary["hf"]
        share = summary["flops_per_audio_second"]["cnn_forward"] / summary["flops_per_audio_second"]["total"]
        print(f"PEAK fp32 matmul (2048^3, {summary['threads']} threads): {peak / 1e9:.1f} GFLOP/s "
              f"(before {before / 1e9:.1f}, after {after / 1e9:.1f})")
        print(f"FLOPS {size}: {summary['flops_per_audio_second']['total'] / 1e9:.3f} GFLOP per trained audio second "
              f"(frozen CNN forward {share:.0%}); a batch of 8 utterances: "
              f"{summary['example_step_flops'] / 1e9:.1f} GFLOP per step")
        print(f"MFU {size}: crossling {ours['mfu']:.1%} ({ours['model_flops_per_second'] / 1e9:.2f} GFLOP/s), "
              f"HF Trainer {theirs['mfu']:.1%} ({theirs['model_flops_per_second'] / 1e9:.2f} GFLOP/s); "
              f"counting only the trainable part (what is left when the CNN is cached; crossling caches it for layer-norm CNNs only): crossling {ours['mfu_without_cnn']:.1%}, "
              f"HF {theirs['mfu_without_cnn']:.1%}")
        print(common.line(f"MFU {size} (crossling / HF Trainer)", ours["mfu"] / theirs["mfu"]), flush=True)
        print(ceiling_line(size, theirs), flush=True)
    print("note: peak and runs share the machine with other processes; both are measured in this run")
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
