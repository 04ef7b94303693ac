"""Synthetic sentences: a language's most frequent wordfreq words -> a seeded, endless stream of distinct
sentences, each assigned to train, dev or test by a hash of its words (the text half of `crossling synth`)."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from crossling.errors import ConfigError, DataError

_CORE_WORDS = 1000         # a language's letters are those of its most frequent words
_STRAY_LETTER_RANK = 300   # one-letter "words" beyond this rank are abbreviations or noise
_MIN_WORDS = 50            # a word list with fewer usable words than this (or than asked) is broken
_FLATTEN = 0.5             # sample words by frequency**0.5: frequent words stay frequent, more variety


# --- languages -----------------------------------------------------------------------------------

_LATIN = ("LATIN",)
_CYRILLIC = ("CYRILLIC",)
_ARABIC = ("ARABIC",)


@dataclass(frozen=True)
class SynthLanguage:
    """A language crossling can synthesize: its eSpeak NG voice, wordfreq list and writing system.

    `scripts` are prefixes of Unicode character names a word's letters must start with."""

    code: str
    name: str
    espeak: str
    wordfreq: str
    scripts: tuple[str, ...]
    separator: str = " "
    terminator: str = "."


def _lang(code, name, espeak, wordfreq, scripts, separator=" ", terminator="."):
    return SynthLanguage(code=code, name=name, espeak=espeak, wordfreq=wordfreq, scripts=scripts, separator=separator,
                         terminator=terminator)


LANGUAGES: dict[str, SynthLanguage] = {lang.code: lang for lang in (
    _lang("ar", "Arabic", "ar", "ar", _ARABIC),
    _lang("bg", "Bulgarian", "bg", "bg", _CYRILLIC),
    _lang("bn", "Bengali", "bn", "bn", ("BENGALI",), terminator="।"),
    _lang("ca", "Catalan", "ca", "ca", _LATIN),
    _lang("cs", "Czech", "cs", "cs", _LATIN),
    _lang("da", "Danish", "da", "da", _LATIN),
    _lang("de", "German", "de", "de", _LATIN),
    _lang("el", "Greek", "el", "el", ("GREEK",)),
    _lang("en", "English", "en-us", "en", _LATIN),
    _lang("es", "Spanish", "es", "es", _LATIN),
    _lang("fa", "Persian", "fa", "fa", _ARABIC),
    _lang("fi", "Finnish", "fi", "fi", _LATIN),
    _lang("fr", "French", "fr", "fr", _LATIN),
    _lang("he", "Hebrew", "he", "he", ("HEBREW",)),
    _lang("hi", "Hindi", "hi", "hi", ("DEVANAGARI",), terminator="।"),
    _lang("hu", "Hungarian", "hu", "hu", _LATIN),
    _lang("id", "Indonesian", "id", "id", _LATIN),
    _lang("is", "Icelandic", "is", "is", _LATIN),
    _lang("it", "Italian", "it", "it", _LATIN),
    # eSpeak reads kana but not kanji, so Japanese sentences are written in kana only.
    _lang("ja", "Japanese", "ja", "ja", ("HIRAGANA", "KATAKANA"), separator="", terminator="。"),
    _lang("ko", "Korean", "ko", "ko", ("HANGUL",)),
    _lang("lt", "Lithuanian", "lt", "lt", _LATIN),
    _lang("lv", "Latvian", "lv", "lv", _LATIN),
    _lang("mk", "Macedonian", "mk", "mk", _CYRILLIC),
    _lang("ms", "Malay", "ms", "ms", _LATIN),
    _lang("nl", "Dutch", "nl", "nl", _LATIN),
    _lang("pl", "Polish", "pl", "pl", _LATIN),
    _lang("pt", "Portuguese", "pt-br", "pt", _LATIN),
    _lang("ro", "Romanian", "ro", "ro", _LATIN),
    _lang("ru", "Russian", "ru", "ru", _CYRILLIC),
    _lang("sk", "Slovak", "sk", "sk", _LATIN),
    _lang("sl", "Slovenian", "sl", "sl", _LATIN),
    _lang("sv-SE", "Swedish", "sv", "sv", _LATIN),
    _lang("ta", "Tamil", "ta", "ta", ("TAMIL",)),
    _lang("tr", "Turkish", "tr", "tr", _LATIN),
    _lang("uk", "Ukrainian", "uk", "uk", _CYRILLIC),
    _lang("ur", "Urdu", "ur", "ur", _ARABIC),
    _lang("vi", "Vietnamese", "vi", "vi", _LATIN),
    _lang("zh-CN", "Chinese (Mandarin)", "cmn", "zh", ("CJK UNIFIED IDEOGRAPH",), separator="",
          terminator="。"),
)}

# eSpeak speaks these, but wordfreq has no word list for them (it would silently use a neighbour's).
_NO_WORD_LIST = {"et": "Estonian", "th": "Thai", "eu": "Basque", "cy": "Welsh", "ga-IE": "Irish",
                 "ka": "Georgian", "hy-AM": "Armenian", "sw": "Swahili", "mt": "Maltese", "kk": "Kazakh"}


def synth_language(code: str) -> SynthLanguage:
    """The synthesis facts of a crossling language code; ConfigError listing the valid codes otherwise."""
    if code in LANGUAGES:
        _check_wordfreq(LANGUAGES[code])
        return LANGUAGES[code]
    supported = ", ".join(sorted(LANGUAGES))
    if code in _NO_WORD_LIST:
        raise ConfigError(f"cannot synthesize {code!r} ({_NO_WORD_LIST[code]}): the installed wordfreq has no "
                          f"word list for it (it would silently substitute another language's words); "
                          f"supported: {supported}")
    raise ConfigError(f"unknown synthesis language {code!r}; supported: {supported}")


def _check_wordfreq(language: SynthLanguage) -> None:
    import wordfreq

    if language.wordfreq not in wordfreq.available_languages():
        raise ConfigError(f"cannot synthesize {language.code!r}: the installed wordfreq has no word list "
                          f"{language.wordfreq!r} (available: {', '.join(sorted(wordfreq.available_languages()))})")


# --- text -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lexicon:
    """Words of one language in frequency order, with their sampling probabilities."""

    words: tuple[str, ...]
    probabilities: tuple[float, ...]


def _in_script(word: str, scripts: tuple[str, ...]) -> bool:
    for char in word:
        if not unicodedata.category(char).startswith(("L", "M")):
            return False
        if not unicodedata.name(char, "").startswith(scripts):
            return False
    return True


def _respell(word: str, language: SynthLanguage) -> str:
    """Undo wordfreq's case folding where it changed spelling: Greek final sigma became σ."""
    if language.code == "el" and word.endswith("σ"):
        return word[:-1] + "ς"
    return word


def build_lexicon(language: SynthLanguage, size: int = 5000) -> Lexicon:
    """The `size` most frequent wordfreq words written only in the language's own letters."""
    import wordfreq

    ranked: list[tuple[str, float]] = []
    for rank, bucket in enumerate(wordfreq.get_frequency_list(language.wordfreq)):
        # Bucket i holds the words of frequency 10 ** (-i / 100), in frequency order.
        ranked.extend((_respell(word, language), 10.0 ** (-rank / 100)) for word in bucket
                      if _in_script(word, language.scripts))
        if len(ranked) >= 2 * size:
            break
    letters = {char for word, _ in ranked[:_CORE_WORDS] for char in word}
    kept = [(word, freq) for index, (word, freq) in enumerate(ranked)
            if set(word) <= letters and (len(word) > 1 or index < _STRAY_LETTER_RANK)][:size]
    if len(kept) < min(size, _MIN_WORDS):
        raise DataError(f"wordfreq list {language.wordfreq!r} has only {len(kept)} usable words for "
                        f"{language.code}; expected at least {min(size, _MIN_WORDS)}")
    weights = np.array([freq for _, freq in kept]) ** _FLATTEN
    return Lexicon(tuple(word for word, _ in kept), tuple((weights / weights.sum()).tolist()))


def _capitalize(text: str, language: SynthLanguage) -> str:
    first = text[:1]
    if language.code == "tr":  # Turkish dotted and dotless i
        upper = {"i": "İ", "ı": "I"}.get(first, first.upper())
    else:
        upper = first.upper()
    return (upper if len(upper) == 1 else first) + text[1:]


def _sentence_split(key: str) -> str:
    """Which split may use a sentence: a hash of its words, so dev/test never share a train sentence."""
    bucket = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def sentences(language: SynthLanguage, lexicon: Lexicon, split: str, rng: np.random.Generator,
              word_range: tuple[int, int] = (3, 6)) -> Iterator[str]:
    """An endless stream of distinct sentences of `word_range` words that belong to `split`."""
    seen: set[str] = set()
    probabilities = np.asarray(lexicon.probabilities)
    misses = 0
    while True:
        count = int(rng.integers(word_range[0], word_range[1] + 1))
        words = [lexicon.words[i] for i in rng.choice(len(lexicon.words), size=count, p=probabilities)]
        key = " ".join(words)
        if key in seen or _sentence_split(key) != split:
            misses += 1
            if misses > 100_000:
                raise DataError(f"{language.code}: ran out of distinct {split} sentences "
                                f"({len(seen)} made); use a larger vocabulary or fewer hours")
            continue
        misses = 0
        seen.add(key)
        yield _capitalize(language.separator.join(words), language) + language.terminator
