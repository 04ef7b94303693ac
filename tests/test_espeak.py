"""The ctypes binding to libespeak-ng: audio comes out, voices differ, and output is deterministic."""

import numpy as np
import pytest

from crossling.errors import ConfigError
from crossling.espeak import Voice, engine, synthesize


def _median_pitch(samples: np.ndarray, rate: int) -> float:
    """Median F0 (Hz) of the loudest 40 ms frames, from the autocorrelation peak between 60 and 400 Hz."""
    x = samples.astype(np.float64)
    frame = int(0.04 * rate)
    frames = [x[i: i + frame] for i in range(0, x.size - frame, frame)]
    loud = sorted(frames, key=lambda f: -np.abs(f).sum())[: max(len(frames) // 3, 1)]
    pitches = []
    for f in loud:
        f = f - f.mean()
        corr = np.correlate(f, f, mode="full")[frame - 1:]
        low, high = rate // 400, rate // 60
        pitches.append(rate / (low + int(np.argmax(corr[low:high]))))
    return float(np.median(pitches))


def test_speaks_utf8_text_at_22050_hz():
    samples, rate = synthesize("Qué tal, señor Muñoz", Voice("es"))
    assert rate == 22050
    assert samples.dtype == np.int16
    assert 0.5 < samples.size / rate < 5.0
    assert np.abs(samples).max() > 1000  # not silence


def test_faster_rate_gives_shorter_audio():
    text = "una frase bastante larga para medir la velocidad"
    slow, _ = synthesize(text, Voice("es", rate=120))
    fast, _ = synthesize(text, Voice("es", rate=300))
    assert fast.size < 0.7 * slow.size


def test_female_variant_has_higher_pitch_than_male():
    text = "hallo wie geht es dir heute"
    male, rate = synthesize(text, Voice("de+m3"))
    female, _ = synthesize(text, Voice("de+f2"))
    assert _median_pitch(female, rate) > 1.3 * _median_pitch(male, rate)


def test_reset_makes_output_independent_of_what_was_spoken_before():
    eng = engine()
    voice = Voice("es+m3", rate=150, pitch=40)
    eng.reset()
    first = eng.synthesize("hola que tal amigo", voice, seed=1)
    for word in ("otra", "frase", "distinta"):
        eng.synthesize(word, Voice("es+f2", rate=220))
    eng.reset()
    again = eng.synthesize("hola que tal amigo", voice, seed=1)
    np.testing.assert_array_equal(first, again)


def test_unknown_voice_is_a_config_error():
    with pytest.raises(ConfigError, match="no voice 'zz-nonexistent'"):
        synthesize("hello", Voice("zz-nonexistent"))
    samples, _ = synthesize("hello", Voice("en-us"))  # the engine still works afterwards
    assert samples.size > 0
