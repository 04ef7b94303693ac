"""Text normalization: NFC, lowercase, category-based punctuation removal, combining marks kept."""

import unicodedata

import pytest

from crossling.text import base_language, is_unsegmented, normalization_info, normalize


def test_portuguese_punctuation_quotes_and_case():
    assert normalize('Ele disse "Olá!" — ao  JOÃO.', "pt") == "ele disse olá ao joão"


def test_nfc_composes_decomposed_input():
    decomposed = "cafe\u0301"  # e + combining acute
    assert normalize(decomposed, "fr") == "caf\u00e9"
    assert unicodedata.is_normalized("NFC", normalize("A\u0308pfel", "de"))


def test_whitespace_collapsed_and_stripped():
    assert normalize("  a\t\tb \u00a0 c\n", "en") == "a b c"


def test_symbols_and_punctuation_removed_by_category():
    assert normalize("a|b<c>d + e = 5 € § ¿f?", "es") == "a b c d e 5 f"


@pytest.mark.parametrize("text,language", [
    ("हिन्दी भाषा", "hi"),  # virama and vowel signs (Mn/Mc)
    ("น้ำที่นี่ดี", "th"),  # Thai vowel and tone marks
    ("اَلْعَرَبِيَّة", "ar"),  # Arabic harakat (fatha, sukun, kasra, shadda)
])
def test_combining_marks_survive(text, language):
    marks = [c for c in text if unicodedata.category(c).startswith("M")]
    assert marks, "test text must contain combining marks"
    out = normalize(text, language)
    assert [c for c in out if unicodedata.category(c).startswith("M")] == marks
    assert out == unicodedata.normalize("NFC", text)


def test_devanagari_danda_removed_but_words_intact():
    assert normalize("मैं घर जा रहा हूँ।", "hi") == "मैं घर जा रहा हूँ"


def test_turkish_dotted_and_dotless_i():
    assert normalize("İSTANBUL IŞIK", "tr") == "istanbul ışık"
    assert normalize("ISTANBUL", "en") == "istanbul"
    # generic lowercasing of İ gives i + combining dot; Turkish must not
    assert "\u0307" not in normalize("İzmir", "tr")


def test_arabic_tatweel_deleted_only_where_configured():
    assert normalize("كـــتاب", "ar") == "كتاب"
    assert normalize("كـتاب", "en") == "كـتاب"


def test_persian_zero_width_non_joiner_kept():
    assert normalize("می\u200cخواهم", "fa") == "می\u200cخواهم"


def test_intra_word_apostrophe_kept_and_unified():
    assert normalize("М’ясо 'добре'", "uk") == "м'ясо добре"
    assert normalize("l’homme", "fr") == "l'homme"


def test_unsegmented_scripts_keep_text_as_written():
    assert normalize("日本語、です。", "ja") == "日本語です"
    assert normalize("我爱你，中国！", "zh-CN") == "我爱你中国"
    assert is_unsegmented("zh-CN") and is_unsegmented("th") and not is_unsegmented("pt")
    assert normalization_info("ja")["unsegmented_script"] is True


def test_empty_after_normalization():
    assert normalize(" ?! … ", "pt") == ""


def test_base_language_strips_region():
    assert base_language("sv-SE") == "sv"
    assert base_language("zh_CN") == "zh"


def test_idempotent():
    for text, lang in [("Olá, Mundo!", "pt"), ("İSTANBUL", "tr"), ("हिन्दी।", "hi"), ("l’homme", "fr")]:
        once = normalize(text, lang)
        assert normalize(once, lang) == once


def test_ordinal_indicators_dropped_and_catalan_middle_dot_kept():
    assert normalize("O 1º lugar, nª", "pt") == "o 1 lugar n"
    assert normalize("El col·legi.", "ca") == "el col·legi"
    assert normalize("a·b", "es") == "a b"
