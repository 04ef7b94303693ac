"""A small ctypes binding to the libespeak-ng shipped by the `espeakng-loader` wheel.

Text + voice name (+ rate, pitch) -> 22050 Hz mono int16 samples. One engine per process."""

from __future__ import annotations

import _ctypes
import ctypes
import logging
import threading
from dataclasses import dataclass
from functools import cache

import numpy as np

from crossling.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

# Constants of speak_lib.h (eSpeak NG 1.52).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_EE_OK = 0

# int callback(short *wav, int numsamples, espeak_EVENT *events); returning 0 continues synthesis.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Voice:
    """How to speak: an eSpeak voice name (`"de"`, `"de+f2"`), words per minute, pitch and range 0-100."""

    name: str
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50


class Engine:
    """The process's eSpeak NG engine. Use `engine()` rather than constructing one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # kept on self: ctypes must not free it
        self._lib: ctypes.CDLL | None = None
        self.sample_rate = 0
        self.reset()

    def reset(self) -> None:
        """Unload and reload libespeak-ng, returning every static variable to its initial value.

        eSpeak keeps synthesis state (pitch flutter phase, noise generators) in C statics that
        `espeak_Terminate` does not clear, so the same call gives slightly different samples depending on
        what was spoken before. Reloading makes a batch's audio a pure function of the batch."""
        import espeakng_loader

        with self._lock:
            if self._lib is not None:
                self._lib.espeak_Terminate()
                _ctypes.dlclose(self._lib._handle)
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
            self._declare_signatures()
            data_path = espeakng_loader.get_data_path().encode()
            rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
            if rate <= 0:
                raise ModelError(f"libespeak-ng failed to initialise with data at {data_path.decode()}")
            self.sample_rate = rate
            self._lib.espeak_SetSynthCallback(self._callback)
            self._voice = None

    def _declare_signatures(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None

    def _collect(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def set_voice(self, voice: Voice) -> None:
        """Select a voice and its prosody; raises ConfigError if eSpeak does not know the name."""
        if voice.name != (self._voice.name if self._voice else None):
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
                self._voice = None
                raise ConfigError(f"eSpeak NG has no voice {voice.name!r} (see `espeak-ng --voices`)")
        # Selecting a voice resets prosody, so parameters are always set afterwards.
        self._lib.espeak_SetParameter(_PARAM_RATE, int(voice.rate), 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, int(voice.pitch), 0)
        self._lib.espeak_SetParameter(_PARAM_RANGE, int(voice.pitch_range), 0)
        self._voice = voice

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> np.ndarray:
        """Speak `text` with `voice`; returns int16 samples at `self.sample_rate` (possibly empty).

        eSpeak jitters pitch and timing with its own random generator; seeding it per call makes the
        samples a pure function of (text, voice, seed), whatever was spoken before."""
        data = text.encode("utf-8")
        with self._lock:
            self.set_voice(voice)
            self._lib.espeak_ng_SetRandSeed(seed)
            self._chunks = []
            status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if status != _EE_OK:
            raise ModelError(f"eSpeak NG failed (status {status}) on text {text[:60]!r}")
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


@cache
def engine() -> Engine:
    """The one eSpeak NG engine of this process, created on first use."""
    return Engine()


def synthesize(text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak `text` (deterministically for a given seed); returns (int16 samples, sample rate)."""
    eng = engine()
    return eng.synthesize(text, voice, seed), eng.sample_rate
