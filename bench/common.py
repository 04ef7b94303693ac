"""Shared benchmark helpers: synthetic Common Voice-like data (MP3 48 kHz clips, prepared languages),
random wav2vec2 checkpoints (tiny and BASE), architecture FLOP counts, child processes that report JSON,
interleaved A/B repetitions and median ratios."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
CLIP_RATE = 48_000
RATE = 16_000
LANGUAGE = "xx"
CHARS = "abcdefghijklmnop"

# Architectures benchmarked (random weights; nothing can be downloaded here). "tiny" is the config that
# trained in OFFLINE-FACTS; "base" is wav2vec2-base (95M parameters, group-norm CNN, post-LN encoder).
ARCHITECTURES = {
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                 conv_dim=[64] * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4,
                 feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    # the demo's mini-zoo models (crossling/zoo/*/config.json)
    "micro": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                  conv_dim=[32] * 7, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=8,
                  feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 conv_dim=[512] * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                 feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
}


# --- machine and measurement --------------------------------------------------------------------------


def machine() -> dict:
    """What the numbers were measured on, including how loaded the machine was."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0], "python": platform.python_version(),
            "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_mb(device: str) -> float:
    """Peak memory of the device the run used: CUDA allocator peak on GPU, peak RSS on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(systems: dict[str, Callable[[int], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run each system once per repetition, alternating (A B A B …), so load on a shared machine hits
    both alike. Each callable gets the repetition index and returns a measurement dict."""
    results: dict[str, list[dict]] = {name: [] for name in systems}
    for rep in range(repeats):
        names = list(systems) if rep % 2 == 0 else list(reversed(systems))
        for name in names:
            results[name].append(systems[name](rep))
    return results


def median_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """Median of per-repetition ratios ours/theirs (pairs measured next to each other)."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


# OpenMP's wait settings removed from a child's environment (`run_child` env): it then waits as OpenMP
# does by default, unless it sets its own, as crossling does before torch loads.
OPENMP_DEFAULT_WAITS = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}


def run_child(module: str, args: Sequence[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Run `python -m bench.<module> <args>` in a fresh process (fair peak memory, no shared caches);
    it prints one JSON object on its last stdout line. `env` adds variables (None removes one)."""
    command = [sys.executable, "-m", f"bench.{module}", *args]
    merged = {key: value for key, value in {**os.environ, **(env or {})}.items() if value is not None}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=merged)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def emit(result: dict) -> None:
    """A child's answer to `run_child`."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def line(name: str, value: float, unit: str = "x", target: float | None = None, note: str = "") -> str:
    verdict = "" if target is None else f"  [target >= {target:g}x: {'met' if value >= target else 'MISSED'}]"
    return f"RATIO {name}: {value:.2f}{unit}{verdict}{('  ' + note) if note else ''}"


# --- synthetic data ------------------------------------------------------------------------------------


def speechlike(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced-speech stand-in: syllable-rate amplitude modulation of a few harmonics with a drifting
    pitch, plus breath noise (enough spectral structure for MP3 and a CNN to do real work)."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    pitch = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t) ** 2
    audio = 0.2 * envelope * voiced + 0.01 * rng.standard_normal(n)
    return audio.astype(np.float32)


def durations(count: int, low: float, high: float, seed: int) -> list[float]:
    """Clip lengths spread like Common Voice's (most short, a tail of long ones), within [low, high]."""
    rng = np.random.default_rng(seed)
    values = low + (high - low) * rng.beta(2.0, 3.0, size=count)
    return [round(float(v), 3) for v in values]


def write_cv_clips(folder: Path, count: int, low: float = 3.0, high: float = 8.0, seed: int = 0) -> list[Path]:
    """`count` Common Voice-like MP3 clips (48 kHz mono) -> their paths; reused if already there."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for i, seconds in enumerate(durations(count, low, high, seed)):
        path = folder / f"common_voice_{LANGUAGE}_{i:05d}.mp3"
        if not path.is_file():
            soundfile.write(path, speechlike(seconds, CLIP_RATE, rng), CLIP_RATE, format="MP3")
        clips.append(path)
    return clips


def random_text(rng: np.random.Generator, seconds: float) -> str:
    """About 8 characters per second of audio, in words of 2-6 characters."""
    words, length = [], 0
    while length < 8 * seconds:
        word = "".join(rng.choice(list(CHARS), size=int(rng.integers(2, 7))))
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def make_prepared(root: Path, counts: dict[str, int], low: float, high: float, seed: int = 0) -> Path:
    """A complete prepared language `xx` (crossling's on-disk contract: 16 kHz PCM-16 WAVs, manifests,
    vocab.json, prepared.json last) with clip lengths in [low, high] seconds. Returns `root`."""
    from crossling import paths
    from crossling.atomic import write_json_atomic
    from crossling.manifest import Utterance, write_manifest
    from crossling.records import PreparedSummary

    if paths.prepared_summary_path(root, LANGUAGE).is_file():
        return root
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        utterances = []
        for i, seconds in enumerate(durations(count, low, high, seed + len(split))):
            audio = speechlike(seconds, RATE, rng)
            wav = paths.audio_cache_path(root, LANGUAGE, f"{split}{i:05d}")
            wav.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(wav, audio, RATE, subtype="PCM_16")
            text = random_text(rng, seconds)
            utterances.append(Utterance(id=f"{split}{i:05d}", audio=str(wav.relative_to(root)),
                                        num_samples=len(audio), text=text, sentence=text,
                                        speaker=f"spk{i % 5}", gender=("female", "male")[i % 2]))
        write_manifest(paths.manifest_path(root, LANGUAGE, split), utterances)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: 3 + i for i, c in enumerate(sorted(CHARS))}}
    write_json_atomic(paths.vocab_path(root, LANGUAGE), vocab)
    summary = PreparedSummary(language=LANGUAGE, source="bench", seed=seed, train_hours=0.0,
                              train_utterances=counts["train"], dev_utterances=counts["dev"],
                              test_utterances=counts["test"], vocab=sorted(CHARS), vocab_threshold=0.0, char_map={},
                              oov_rate={"dev": 0.0, "test": 0.0}, skipped={}, normalization={})
    write_json_atomic(paths.prepared_summary_path(root, LANGUAGE), summary.to_json())
    return root


def model_config(size: str):
    """The transformers config of architecture `size` (dropouts off, as the crossling recipe sets them)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(**ARCHITECTURES[size], hidden_dropout=0.0, attention_dropout=0.0,
                          activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


def make_checkpoint(directory: Path, size: str, seed: int = 0) -> Path:
    """A randomly initialised base model saved like a pre-trained hub checkpoint (no CTC head)."""
    import torch
    from transformers import Wav2Vec2Model

    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(seed)
    Wav2Vec2Model(model_config(size)).save_pretrained(directory)
    return directory


# --- FLOPs from the architecture -------------------------------------------------------------------------


def conv_frames(config, samples: int) -> list[int]:
    """Output length of each CNN layer for `samples` input samples."""
    lengths, length = [], samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        length = max((length - kernel) // stride + 1, 0)
        lengths.append(length)
    return lengths


def cnn_flops(config, samples: int) -> float:
    """Multiply-adds x 2 of the convolutional feature encoder for one utterance."""
    total, channels_in = 0.0, 1
    for frames, kernel, channels in zip(conv_frames(config, samples), config.conv_kernel, config.conv_dim,
                                        strict=True):
        total += 2.0 * frames * kernel * channels_in * channels
        channels_in = channels
    return total


def encoder_flops(config, frames: int, vocab_size: int) -> float:
    """Matmul FLOPs of feature projection, positional conv, transformer layers and CTC head for one
    utterance of `frames` frames (attention scores and weighted sums included)."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    projection = 2.0 * frames * config.conv_dim[-1] * h
    positional = 2.0 * frames * h * (h // config.num_conv_pos_embedding_groups) * config.num_conv_pos_embeddings
    per_layer = 2.0 * frames * (4 * h * h + 2 * h * ffn) + 2.0 * 2 * frames * frames * h
    head = 2.0 * frames * h * vocab_size
    return projection + positional + layers * per_layer + head


def train_step_flops(config, lengths: Sequence[int], vocab_size: int, frozen_cnn: bool = True) -> float:
    """Model FLOPs of one training step over a padded batch of these sample lengths: 3x forward for
    forward+backward of the trainable part; a frozen CNN costs its forward only."""
    longest = max(lengths)
    frames = conv_frames(config, longest)[-1]
    cnn = cnn_flops(config, longest) * len(lengths)
    encoder = encoder_flops(config, frames, vocab_size) * len(lengths)
    return (1.0 if frozen_cnn else 3.0) * cnn + 3.0 * encoder


def useful_train_flops(config, lengths: Sequence[int], vocab_size: int, frozen_cnn: bool = True) -> float:
    """Like `train_step_flops` but without padding: the work the data itself needs."""
    total = 0.0
    for n in lengths:
        frames = conv_frames(config, n)[-1]
        total += (1.0 if frozen_cnn else 3.0) * cnn_flops(config, n) + 3.0 * encoder_flops(config, frames, vocab_size)
    return total


def matmul_peak_flops(size: int = 2048, repeats: int = 5, threads: int | None = None) -> float:
    """Best measured fp32 FLOP/s of `torch.matmul` on square matrices of `size` (the machine's practical peak)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
