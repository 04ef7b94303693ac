"""Decoding to 16 kHz mono, decoded (not header) lengths, the cache index, parallel workers, bad clips."""

import os
from itertools import islice

import cvfactory
import numpy as np
import pytest
import soundfile as sf

from crossling.audio import CORRUPT, EMPTY, ClipCache, ClipJob, decode_file, decode_stream
from crossling.paths import audio_cache_index_path


def _clips(folder, seconds=(1.0, 1.25, 0.5, 2.0), suffix=".mp3"):
    paths = []
    for i, s in enumerate(seconds):
        path = folder / f"clip{i}{suffix}"
        cvfactory.write_clip(path, cvfactory.FakeClip(path.name, s, "x"), seed=i)
        paths.append(path)
    return paths


def _jobs(paths):
    return [ClipJob(p.name, p, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def test_mp3_48k_decodes_to_16k_mono_with_exact_length(tmp_path):
    (path,) = _clips(tmp_path, (1.25,))
    samples = decode_file(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == 20_000  # 1.25 s * 16 kHz
    assert 0.1 < np.abs(samples).max() < 1.0


@pytest.mark.parametrize("rate,channels,fmt", [(44_100, 2, "WAV"), (22_050, 1, "FLAC"), (16_000, 1, "WAV")])
def test_wav_and_flac_any_rate_and_channels(tmp_path, rate, channels, fmt):
    path = tmp_path / f"c.{fmt.lower()}"
    x = 0.2 * np.sin(np.linspace(0, 300, rate * 2 * channels)).reshape(-1, channels)
    sf.write(str(path), x, rate, format=fmt)
    assert abs(len(decode_file(path)) - 32_000) <= 1


def test_lengths_come_from_decoding_not_headers(tmp_path, monkeypatch):
    paths = _clips(tmp_path / "src", (1.0, 0.5))

    def no_header(*args, **kwargs):
        raise AssertionError("header-based duration used")

    monkeypatch.setattr(sf, "info", no_header)
    cache = ClipCache(tmp_path / "out", "pt")
    outcomes = list(decode_stream(_jobs(paths), cache, workers=1))
    assert [o.num_samples for o in outcomes] == [16_000, 8_000]
    for outcome in outcomes:  # the cached WAV holds exactly the recorded samples
        data, rate = sf.read(str(cache.wav_path(outcome.clip)), dtype="int16")
        assert rate == 16_000 and len(data) == outcome.num_samples


def test_corrupt_and_empty_clips_are_reported_not_raised(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "empty.mp3").write_bytes(b"")
    (folder / "junk.mp3").write_bytes(b"not audio " * 100)
    sf.write(str(folder / "zero.wav"), np.zeros(0, dtype=np.float32), 48_000)
    good = _clips(folder, (0.5,))
    paths = [folder / "empty.mp3", folder / "junk.mp3", folder / "zero.wav", *good]
    outcomes = list(decode_stream(_jobs(paths), ClipCache(tmp_path / "out", "pt"), workers=1))
    assert [o.error for o in outcomes] == [EMPTY, CORRUPT, EMPTY, ""]
    assert outcomes[1].detail  # says what libsndfile complained about


def test_rerun_reuses_cache_without_decoding(tmp_path, monkeypatch):
    paths = _clips(tmp_path / "src")
    (tmp_path / "src" / "junk.mp3").write_bytes(b"junk" * 50)
    paths.append(tmp_path / "src" / "junk.mp3")
    calls = cvfactory.count_decodes(monkeypatch)
    out = tmp_path / "out"
    cache = ClipCache(out, "pt")
    first = list(decode_stream(_jobs(paths), cache, workers=1))
    cache.save()
    assert len(calls) == 5 and cache.decoded == 5
    wav_mtimes = {o.clip: cache.wav_path(o.clip).stat().st_mtime_ns for o in first if not o.error}

    again = ClipCache(out, "pt")  # a new process would load the index from disk
    second = list(decode_stream(_jobs(paths), again, workers=1))
    assert len(calls) == 5, "re-run decoded again"
    assert (again.decoded, again.reused) == (0, 5)
    assert [(o.clip, o.num_samples, o.error) for o in second] == [(o.clip, o.num_samples, o.error) for o in first]
    assert wav_mtimes == {c: again.wav_path(c).stat().st_mtime_ns for c in wav_mtimes}
    assert audio_cache_index_path(out, "pt").is_file()


def test_changed_source_is_decoded_again(tmp_path, monkeypatch):
    paths = _clips(tmp_path / "src", (1.0, 0.5))
    out = tmp_path / "out"
    cache = ClipCache(out, "pt")
    list(decode_stream(_jobs(paths), cache, workers=1))
    cache.save()
    cvfactory.write_clip(paths[0], cvfactory.FakeClip(paths[0].name, 1.5, "x"))  # new content, new size
    os.utime(paths[0], ns=(1, 1))
    calls = cvfactory.count_decodes(monkeypatch)
    cache = ClipCache(out, "pt")
    outcomes = list(decode_stream(_jobs(paths), cache, workers=1))
    assert calls == [str(paths[0])]
    assert outcomes[0].num_samples == 24_000


def test_deleted_cache_wav_is_decoded_again(tmp_path):
    paths = _clips(tmp_path / "src", (0.5,))
    cache = ClipCache(tmp_path / "out", "pt")
    list(decode_stream(_jobs(paths), cache, workers=1))
    cache.save()
    cache.wav_path(paths[0].name).unlink()
    cache = ClipCache(tmp_path / "out", "pt")
    list(decode_stream(_jobs(paths), cache, workers=1))
    assert cache.decoded == 1 and cache.wav_path(paths[0].name).is_file()


def test_parallel_workers_same_results_in_order(tmp_path):
    paths = _clips(tmp_path / "src", (0.5, 1.0, 0.75, 0.25, 1.25, 0.5))
    serial = list(decode_stream(_jobs(paths), ClipCache(tmp_path / "a", "pt"), workers=1))
    parallel_cache = ClipCache(tmp_path / "b", "pt")
    parallel = list(decode_stream(_jobs(paths), parallel_cache, workers=2))
    assert [(o.clip, o.num_samples) for o in parallel] == [(o.clip, o.num_samples) for o in serial]
    assert parallel_cache.decoded == len(paths)


def test_stream_is_lazy(tmp_path):
    paths = _clips(tmp_path / "src", (0.25,) * 30)
    cache = ClipCache(tmp_path / "out", "pt")
    stream = decode_stream(_jobs(paths), cache, workers=1)
    first_two = list(islice(stream, 2))
    stream.close()
    assert len(first_two) == 2
    assert len(cache.entries) < len(paths)


def test_stereo_is_mixed_down_to_mono(tmp_path):
    path = tmp_path / "stereo.wav"
    left = 0.5 * np.sin(np.linspace(0, 200, 16_000))
    sf.write(str(path), np.stack([left, np.zeros_like(left)], axis=1), 16_000, subtype="FLOAT")
    assert np.allclose(decode_file(path), left / 2, atol=1e-6)


def test_unreadable_index_means_decode_again_not_crash(tmp_path, caplog):
    paths = _clips(tmp_path / "src", (0.5,))
    cache = ClipCache(tmp_path / "out", "pt")
    list(decode_stream(_jobs(paths), cache, workers=1))
    cache.save()
    audio_cache_index_path(tmp_path / "out", "pt").write_text('{"clip": "x", "bogus": 1}\n{not json\n')
    cache = ClipCache(tmp_path / "out", "pt")
    assert "unreadable decode-cache index" in caplog.text
    list(decode_stream(_jobs(paths), cache, workers=1))
    assert cache.decoded == 1
