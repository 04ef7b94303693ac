"""Benchmark 3: decoding + resampling Common Voice-like MP3 (48 kHz mono) to 16 kHz: crossling's audio
path (`crossling.audio`, which also writes the PCM-16 WAV cache) vs `librosa.load(path, sr=16000)` per clip,
on one core and with all cores; prints ratios and real-time factors.

    .venv/bin/python -m bench.bench_prepare [--quick] [--clips N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile

from bench import common


def librosa_one(path: str) -> int:
    import librosa

    return len(librosa.load(path, sr=16000)[0])


def librosa_sequential(clips: list[Path]) -> int:
    return sum(librosa_one(str(c)) for c in clips)


def librosa_parallel(clips: list[Path], workers: int) -> int:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(librosa_one, [str(c) for c in clips], chunksize=4))


def crossling_sequential(clips: list[Path], target: Path) -> int:
    """`crossling.audio.decode_to_wav` per clip: decode, resample (soxr HQ), write the WAV cache."""
    from crossling.audio import decode_to_wav

    target.mkdir(parents=True, exist_ok=True)
    return sum(decode_to_wav(str(c), str(target / f"{c.stem}.wav"))[0] for c in clips)


def crossling_decode_only(clips: list[Path]) -> int:
    """`crossling.audio.decode_file` per clip: the same work as `librosa.load` (decode + resample, no write)."""
    from crossling.audio import decode_file

    return sum(len(decode_file(c)) for c in clips)


def decoder_only(clips: list[Path]) -> int:
    """libsndfile's MP3 decoding alone (48 kHz float, no resampling, no writing): the floor under both
    `librosa.load` and crossling, which decode with it."""
    return sum(len(soundfile.read(str(c), dtype="float32")[0]) for c in clips)


def other_decoders() -> dict:
    """Other MP3 decoders from PyPI, if installed (`pip install av miniaudio pedalboard`): name -> a
    function decoding one clip to 48 kHz float samples."""
    import importlib.util

    import numpy as np

    def with_av(path: Path):
        import av

        with av.open(str(path)) as container:
            return np.concatenate([frame.to_ndarray()[0] for frame in container.decode(audio=0)])

    def with_miniaudio(path: Path):
        import miniaudio

        return miniaudio.mp3_read_file_f32(str(path)).samples

    def with_pedalboard(path: Path):
        from pedalboard.io import AudioFile

        with AudioFile(str(path)) as audio:
            return audio.read(audio.frames)[0]

    candidates = {"av (FFmpeg)": ("av", with_av), "miniaudio (dr_mp3)": ("miniaudio", with_miniaudio),
                  "pedalboard (JUCE)": ("pedalboard", with_pedalboard)}
    return {name: fn for name, (module, fn) in candidates.items() if importlib.util.find_spec(module)}


def crossling_parallel(clips: list[Path], root: Path, workers: int) -> int:
    """The path `crossling prepare` takes: `decode_stream` over an empty cache with `workers` processes."""
    from crossling.audio import ClipCache, ClipJob, decode_stream

    shutil.rmtree(root, ignore_errors=True)
    cache = ClipCache(root, common.LANGUAGE)
    jobs = [ClipJob(c.name, c, c.stat().st_size, c.stat().st_mtime_ns) for c in clips]
    return sum(outcome.num_samples for outcome in decode_stream(jobs, cache, workers))


def timed(fn) -> dict:
    start = time.perf_counter()
    samples = fn()
    return {"seconds": time.perf_counter() - start, "samples": samples}


def check_same_audio(clips: list[Path], target: Path) -> float:
    """Largest sample difference between crossling's cached WAV and librosa's output (PCM-16 rounding
    is expected: ~1.5e-5), and equal lengths."""
    import librosa
    import numpy as np

    worst = 0.0
    for clip in clips[:5]:
        ours, _ = soundfile.read(target / f"{clip.stem}.wav", dtype="float32")
        theirs, _ = librosa.load(str(clip), sr=16000)
        if len(ours) != len(theirs):
            raise SystemExit(f"{clip}: crossling decoded {len(ours)} samples, librosa {len(theirs)}")
        worst = max(worst, float(np.max(np.abs(ours - theirs))))
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clips", type=int, help="number of clips (default 600, quick 200; with fewer, process "
                                                  "start-up dominates the all-cores figures)")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (default 3, quick 2)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "crossling-bench"))
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    count = args.clips or (200 if args.quick else 600)
    repeats = args.repeats or (2 if args.quick else 3)
    cores = os.cpu_count() or 1
    work = Path(args.work)
    clips = common.write_cv_clips(work / "cv-clips", count)
    audio_seconds = sum(soundfile.info(str(c)).duration for c in clips)
    print("machine:", json.dumps(common.machine()), flush=True)
    print(f"{count} MP3 clips, 48 kHz mono, {audio_seconds / 60:.1f} min of audio", flush=True)
    librosa_one(str(clips[0]))  # imports and JIT warm-up outside the timing
    target = work / "bench-prepare-wavs"
    systems = {
        "crossling_1core": lambda rep: timed(lambda: crossling_sequential(clips, target)),
        "librosa_1core": lambda rep: timed(lambda: librosa_sequential(clips)),
        "crossling_decode": lambda rep: timed(lambda: crossling_decode_only(clips)),
        "crossling_all": lambda rep: timed(lambda: crossling_parallel(clips, work / "bench-prepare-cache", cores)),
        "librosa_all": lambda rep: timed(lambda: librosa_parallel(clips, cores)),
        "decoder_only": lambda rep: timed(lambda: decoder_only(clips)),
    }
    decoders = other_decoders()
    for name, decode in decoders.items():
        systems[name] = lambda rep, decode=decode: timed(lambda: sum(len(decode(c)) for c in clips))
    results = common.interleaved(systems, repeats)
    for name, runs in results.items():
        rates = [audio_seconds / r["seconds"] for r in runs]
        print(f"  {name:16s} " + "  ".join(f"{r:6.0f}x real time" for r in rates), flush=True)
    seconds = {name: [r["seconds"] for r in runs] for name, runs in results.items()}
    per_core = common.median_ratio(seconds["librosa_1core"], seconds["crossling_1core"])
    decode_only = common.median_ratio(seconds["librosa_1core"], seconds["crossling_decode"])
    all_cores = common.median_ratio(seconds["librosa_all"], seconds["crossling_all"])
    vs_sequential = common.median_ratio(seconds["librosa_1core"], seconds["crossling_all"])
    rtf = {name: sorted(values)[len(values) // 2] / audio_seconds for name, values in seconds.items()}
    summary = {"clips": count, "audio_seconds": audio_seconds, "cores": cores, "per_core_ratio": per_core,
               "decode_only_ratio": decode_only,
               "all_cores_ratio": all_cores, "all_cores_vs_librosa_loop": vs_sequential, "rtf": rtf,
               "max_abs_difference": check_same_audio(clips, target)}
    print(common.line("prepare 1 core (crossling / librosa.load)", per_core, target=3.0,
                      note=f"RTF crossling {rtf['crossling_1core']:.5f}, librosa {rtf['librosa_1core']:.5f} "
                           "(crossling also writes the WAV cache)"))
    print(common.line("decode + resample only, 1 core (crossling.audio.decode_file / librosa.load)", decode_only,
                      target=3.0, note=f"RTF crossling {rtf['crossling_decode']:.5f} (same libsndfile/mpg123 "
                                       "decoder and soxr HQ resampler as librosa)"))
    print(common.line(f"prepare {cores} cores (crossling / librosa.load in a {cores}-process pool)", all_cores,
                      target=3.0, note=f"RTF crossling {rtf['crossling_all']:.5f}, librosa {rtf['librosa_all']:.5f}"))
    print(common.line(f"prepare {cores} cores crossling / librosa.load loop", vs_sequential))
    floor = common.median_ratio(seconds["librosa_1core"], seconds["decoder_only"])
    print(f"CEILING prepare 1 core: libsndfile's MP3 decoding alone (no resampling, no writing) is "
          f"{floor:.2f}x faster than librosa.load, so no path through this decoder can be faster than that")
    for name in decoders:
        print(common.line(f"other decoder {name} / libsndfile, decoding only",
                          common.median_ratio(seconds["decoder_only"], seconds[name])))
    summary["decoder_floor_ratio"] = floor
    print(f"SAME AUDIO: same lengths, max |difference| {summary['max_abs_difference']:.2e} (PCM-16 rounding)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
