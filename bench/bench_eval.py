"""Benchmark 4: evaluation throughput of crossling's batched, length-sorted greedy CTC decoding
(`crossling.decoding.transcribe`) vs `transformers.pipeline("automatic-speech-recognition")` called one
utterance at a time, same model directory and clips; checks that the transcripts are identical. Also
times crossling one utterance at a time, to show what batching itself brings on this device.

    .venv/bin/python -m bench.bench_eval [--quick] [--sizes tiny,base]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench import common

SETTINGS = {"tiny": dict(clips=120, low=2.0, high=8.0, repeats=3), "base": dict(clips=10, low=2.0, high=6.0, repeats=2)}
QUICK = {"tiny": dict(clips=40, repeats=2), "base": dict(clips=4, repeats=1)}


def make_model_dir(work: Path, size: str, prepared: Path) -> Path:
    """A CTC model (random weights, head sized to the vocabulary) saved with its processor, as a
    finished crossling run leaves it."""
    import torch
    from transformers import Wav2Vec2ForCTC

    from crossling.models import InputSpec, build_processor, load_tokenizer
    from crossling.prepared import open_prepared

    target = work / f"ctc-model-{size}"
    if (target / "config.json").is_file():
        return target
    data = open_prepared(prepared, common.LANGUAGE)
    config = common.model_config(size)
    config.vocab_size, config.pad_token_id = len(data.vocab), 0
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(config)
    norm = config.feat_extract_norm
    spec = InputSpec(do_normalize=True, use_attention_mask=norm == "layer", feat_extract_norm=norm)
    model.save_pretrained(target)
    build_processor(load_tokenizer(data.vocab_file), spec).save_pretrained(target)
    return target


def waveforms_of(prepared: Path) -> list:
    from crossling.prepared import load_audio, open_prepared

    data = open_prepared(prepared, common.LANGUAGE)
    return [load_audio(prepared, u) for u in data.split("test")]


def crossling_decode(model_dir: Path, waveforms: list, device: str, batch_seconds: float = 400.0):
    from crossling.decoding import transcribe
    from crossling.models import load_finetuned
    from crossling.prepared import open_prepared  # noqa: F401 - same import cost for both sides

    model, processor, spec = load_finetuned(model_dir)
    model.to(device)
    id_to_token = {i: t for t, i in processor.tokenizer.get_vocab().items()}

    def run() -> list[str]:
        return transcribe(model, waveforms, spec, id_to_token, device=device, batch_seconds=batch_seconds)

    return run


def pipeline_decode(model_dir: Path, waveforms: list, device: str):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(model_dir), device=device)

    def run() -> list[str]:
        return [asr({"raw": w, "sampling_rate": 16000})["text"] for w in waveforms]

    return run


def inference_flops(model_dir: Path, waveforms: list) -> float:
    """Model FLOPs of one forward pass over every waveform, unpadded (CNN + encoder + CTC head)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return sum(common.cnn_flops(config, len(w))
               + common.encoder_flops(config, common.conv_frames(config, len(w))[-1], config.vocab_size)
               for w in waveforms)


def ceiling_line(s: dict) -> str:
    """How much faster than the pipeline any decoder of the same model FLOPs could be on this machine."""
    utilisation = s["pipeline_flops_per_second"] / s["peak_flops"]
    return (f"CEILING eval {s['size']}: the pipeline runs the model at {s['pipeline_flops_per_second'] / 1e9:.1f} "
            f"GFLOP/s, {utilisation:.0%} of the measured matmul peak ({s['peak_flops'] / 1e9:.0f} GFLOP/s); the same "
            f"FLOPs at the peak would be at most {1 / utilisation:.2f}x faster")


def bench_size(size: str, work: Path, quick: bool, device: str) -> dict:
    s = dict(SETTINGS[size], **(QUICK[size] if quick else {}))
    prepared = common.make_prepared(work / f"prepared-eval-{size}-{s['clips']}",
                                    {"train": 2, "dev": 2, "test": s["clips"]}, s["low"], s["high"])
    model_dir = make_model_dir(work, size, prepared)
    waveforms = waveforms_of(prepared)
    audio_seconds = sum(len(w) for w in waveforms) / common.RATE
    ours, theirs = crossling_decode(model_dir, waveforms, device), pipeline_decode(model_dir, waveforms, device)
    alone = crossling_decode(model_dir, waveforms, device, batch_seconds=0.0)  # what batching itself brings
    ours(), theirs(), alone()  # warm-up (first-call allocations, oneDNN kernels)
    outputs: dict[str, list[str]] = {}

    def timer(name, fn):
        def run(rep: int) -> dict:
            start = time.perf_counter()
            outputs[name] = fn()
            seconds = time.perf_counter() - start
            print(f"  {size} rep {rep} {name:9s}: {audio_seconds / seconds:8.1f}x real time", flush=True)
            return {"seconds": seconds}
        return run

    results = common.interleaved({"crossling": timer("crossling", ours), "pipeline": timer("pipeline", theirs),
                                  "one-by-one": timer("one-by-one", alone)}, s["repeats"])
    same = sum(a == b for a, b in zip(outputs["crossling"], outputs["pipeline"], strict=True))
    flops = inference_flops(model_dir, waveforms)
    pipeline_seconds = min(r["seconds"] for r in results["pipeline"])
    return {"size": size, "clips": s["clips"], "audio_seconds": audio_seconds, "device": device,
            "flops": flops, "pipeline_flops_per_second": flops / pipeline_seconds,
            "peak_flops": common.matmul_peak_flops(2048),
            "ratio": common.median_ratio([r["seconds"] for r in results["pipeline"]],
                                         [r["seconds"] for r in results["crossling"]]),
            "batching_ratio": common.median_ratio([r["seconds"] for r in results["one-by-one"]],
                                                  [r["seconds"] for r in results["crossling"]]),
            "batching_identical": outputs["one-by-one"] == outputs["crossling"],
            "crossling_x_realtime": audio_seconds / min(r["seconds"] for r in results["crossling"]),
            "pipeline_x_realtime": audio_seconds / min(r["seconds"] for r in results["pipeline"]),
            "identical_transcripts": same, "nonempty": sum(bool(t) for t in outputs["crossling"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="tiny,base")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "crossling-bench"))
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torch

    from crossling.models import quiet_transformers

    quiet_transformers()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("machine:", json.dumps(common.machine()), flush=True)
    summaries = []
    for size in args.sizes.split(","):
        s = bench_size(size, Path(args.work), args.quick, device)
        summaries.append(s)
        print(common.line(f"eval throughput {size} (crossling / pipeline one at a time)", s["ratio"], target=3.0,
                          note=f"{s['crossling_x_realtime']:.0f}x vs {s['pipeline_x_realtime']:.0f}x real time, "
                               f"{s['clips']} clips"), flush=True)
        print(ceiling_line(s), flush=True)
        print(common.line(f"eval batching {size} (crossling batched / crossling one utterance at a time)",
                          s["batching_ratio"], note=f"identical transcripts: {s['batching_identical']}"), flush=True)
        print(f"TRANSCRIPTS {size}: {s['identical_transcripts']}/{s['clips']} identical "
              f"({s['nonempty']} non-empty)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
