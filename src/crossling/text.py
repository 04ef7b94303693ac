"""Transcript normalization shared by vocabulary building and scoring: raw sentence -> normalized text.

`normalize(text, language)` is the ONE function both sides call, so references and vocabularies agree."""

from __future__ import annotations

import re
import unicodedata

# Languages written without spaces between words. Their text is kept as written (punctuation is deleted,
# not turned into a space) so CER is per character; WER over these is not a word error rate and scorers
# should flag it (`is_unsegmented`).
UNSEGMENTED = frozenset({"ja", "zh", "yue", "th", "lo", "my", "km", "bo"})

# Lowercasing that Python's locale-free `str.lower` gets wrong: Turkic dotted/dotless i.
_LOWER_OVERRIDES = {
    "tr": str.maketrans({"I": "ı", "İ": "i"}),
    "az": str.maketrans({"I": "ı", "İ": "i"}),
    "crh": str.maketrans({"I": "ı", "İ": "i"}),
}

# Characters deleted before the category filter (why: they carry no sound of their own). The ordinal
# indicators º ª are letters to Unicode but abbreviation marks in text ("1º", "nº").
_DELETE_ALWAYS = "\u00ba\u00aa"
_DELETE = {
    "ar": "\u0640",  # tatweel (kashida) is typographic elongation only
    "fa": "\u0640",
    "ur": "\u0640",
}
# Punctuation that is spelling in one language: the Catalan middle dot of "col·legi".
_KEEP = {"ca": "\u00b7"}

# Apostrophe look-alikes; between two letters they are part of the word (Ukrainian м'ясо, French l'eau).
_APOSTROPHES = "'\u2019\u02bc\u2018`\u00b4"
_INTRA_WORD_APOSTROPHE = re.compile(rf"(?<=\w)[{_APOSTROPHES}](?=\w)")
_APOSTROPHE_MARK = "\ue000"  # private-use placeholder that survives the category filter

# Zero-width (non-)joiners are spelling in Persian and Indic scripts, although their category is Cf.
_KEPT_FORMAT_CHARS = frozenset({"\u200c", "\u200d"})
_WHITESPACE = re.compile(r"\s+")


def base_language(language: str) -> str:
    """'sv-SE' -> 'sv', 'zh-CN' -> 'zh': the part that selects normalization rules."""
    return language.replace("_", "-").split("-")[0].lower()


def is_unsegmented(language: str) -> bool:
    """True for languages written without spaces between words (WER is not meaningful there)."""
    return base_language(language) in UNSEGMENTED


def normalize(text: str, language: str) -> str:
    """Raw transcript -> normalized text: NFC, lowercase (with per-language rules), punctuation and
    symbols removed by Unicode category, combining marks kept, whitespace collapsed to single spaces."""
    base = base_language(language)
    text = unicodedata.normalize("NFC", text.replace(_APOSTROPHE_MARK, ""))
    text = text.translate(_LOWER_OVERRIDES.get(base, {})).lower()
    text = unicodedata.normalize("NFC", text)
    for char in _DELETE_ALWAYS + _DELETE.get(base, ""):
        text = text.replace(char, "")
    text = _INTRA_WORD_APOSTROPHE.sub(_APOSTROPHE_MARK, text)
    separator, keep = ("" if base in UNSEGMENTED else " "), _KEEP.get(base, "")
    text = "".join(char if char in keep else _keep_or_replace(char, separator) for char in text)
    return _WHITESPACE.sub(" ", text).strip().replace(_APOSTROPHE_MARK, "'")


def _keep_or_replace(char: str, separator: str) -> str:
    """Letters, marks and digits stay; punctuation and symbols become `separator`; spaces stay spaces."""
    category = unicodedata.category(char)
    if char == _APOSTROPHE_MARK or char in _KEPT_FORMAT_CHARS:
        return char
    if category[0] in "LMN":
        return char
    if category[0] == "Z" or char.isspace():
        return " "
    if category[0] in "PS":
        return separator
    return ""  # control, other format, private-use and unassigned characters carry no speech


def normalization_info(language: str) -> dict:
    """What `normalize` does for `language`, recorded in prepared.json so results say how text was scored."""
    base = base_language(language)
    return {
        "function": "crossling.text.normalize",
        "unicode_form": "NFC",
        "lowercase": "turkic-i" if base in _LOWER_OVERRIDES else "str.lower",
        "removed_categories": ["P*", "S*", "C* (except ZWNJ/ZWJ)"],
        "kept": ["letters", "combining marks", "digits", "intra-word apostrophes (as ')"],
        "deleted_chars": [f"U+{ord(c):04X}" for c in _DELETE_ALWAYS + _DELETE.get(base, "")],
        "kept_punctuation": [f"U+{ord(c):04X}" for c in _KEEP.get(base, "")],
        "punctuation_becomes": "nothing" if base in UNSEGMENTED else "space",
        "unsegmented_script": base in UNSEGMENTED,
    }
