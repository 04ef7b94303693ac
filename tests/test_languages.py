"""Language metadata: coverage of Common Voice and the study, lookups by alias, families."""

import re

import pytest

from crossling.errors import ConfigError
from crossling.languages import STUDY_LANGUAGES, all_languages, find_language, get_language
from crossling.registry import all_checkpoints

SYNTHETIC_CORPUS = "es it pt nl de fi tr ca ro fr sv-SE pl hu en ru".split()


def test_table_covers_common_voice_and_is_well_formed():
    languages = all_languages()
    assert len(languages) >= 100
    codes = [lang.code for lang in languages]
    assert len(codes) == len(set(codes))
    for lang in languages:
        assert re.fullmatch(r"[a-z]{3}", lang.iso639_3), lang
        assert lang.name and lang.family and lang.subgroup and lang.script, lang
        assert lang.uriel == "" or re.fullmatch(r"[a-z]{3}", lang.uriel), lang


@pytest.mark.parametrize("code", [*STUDY_LANGUAGES, *SYNTHETIC_CORPUS])
def test_study_and_synthetic_languages_are_known(code):
    assert get_language(code).code == code


@pytest.mark.parametrize(("code", "family", "subgroup", "iso", "script"), [
    ("pt", "Indo-European", "Romance", "por", "Latin"),
    ("sv-SE", "Indo-European", "Germanic", "swe", "Latin"),
    ("uk", "Indo-European", "Slavic", "ukr", "Cyrillic"),
    ("fa", "Indo-European", "Iranian", "pes", "Arabic"),
    ("et", "Uralic", "Finnic", "ekk", "Latin"),
    ("hu", "Uralic", "Ugric", "hun", "Latin"),
    ("tr", "Turkic", "Oghuz", "tur", "Latin"),
    ("ar", "Afro-Asiatic", "Semitic", "arb", "Arabic"),
    ("zh-CN", "Sino-Tibetan", "Sinitic", "cmn", "Han"),
    ("ja", "Japonic", "Japanese", "jpn", "Japanese"),
    ("th", "Kra-Dai", "Tai", "tha", "Thai"),
    ("id", "Austronesian", "Malayo-Polynesian", "ind", "Latin"),
])
def test_family_subgroup_script(code, family, subgroup, iso, script):
    lang = get_language(code)
    assert (lang.family, lang.subgroup, lang.iso639_3, lang.script) == (family, subgroup, iso, script)
    assert lang.lineage == f"{family} › {subgroup}"


def test_twelve_of_the_eighteen_study_languages_are_indo_european():
    assert sum(get_language(code).indo_european for code in STUDY_LANGUAGES) == 12


def test_aliases_and_iso_codes_resolve():
    assert find_language("sv").code == "sv-SE"
    assert find_language("zh").code == "zh-CN"
    assert find_language("swe").code == "sv-SE"
    assert find_language("pt-BR").code == "pt"
    assert find_language("SV-se").code == "sv-SE"
    assert find_language("klingon") is None


def test_unknown_code_lists_valid_codes():
    with pytest.raises(ConfigError, match="unknown language code 'xx'.*sv-SE"):
        get_language("xx")


def test_every_registered_pretraining_language_is_known():
    for checkpoint in all_checkpoints():
        for code in checkpoint.pretrain_languages:
            assert find_language(code) is not None, (checkpoint.alias, code)
