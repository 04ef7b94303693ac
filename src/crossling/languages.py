"""Metadata of every Common Voice language (and the synthetic corpus's): code → name, ISO 639-3,
family, subgroup (genus), script, and the code under which URIEL (lang2vec) knows it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from crossling.errors import ConfigError

INDO_EUROPEAN = "Indo-European"


@dataclass(frozen=True)
class Language:
    """One language. `code` is the Common Voice locale (e.g. 'sv-SE'); `subgroup` the genus-level
    branch used for same-subgroup comparisons (e.g. 'Romance'); `uriel` the ISO 639-3 code looked up
    in URIEL ('' when URIEL has no entry)."""

    code: str
    name: str
    iso639_3: str
    family: str
    subgroup: str
    script: str
    uriel: str

    @property
    def indo_european(self) -> bool:
        return self.family == INDO_EUROPEAN

    @property
    def lineage(self) -> str:
        """'Family › Subgroup' (just the family for isolates and one-branch families)."""
        return self.family if self.subgroup in ("", self.family) else f"{self.family} › {self.subgroup}"


# code | English name | ISO 639-3 | family | subgroup | script | URIEL code when it differs from ISO 639-3
# Macrolanguages use the individual language Common Voice records (Mandarin 'cmn', Iranian Persian
# 'pes'); URIEL's entries for 'ekk' and 'lvs' are empty, so Estonian and Latvian use 'est' and 'lav'.
_TABLE = """
ab|Abkhaz|abk|Northwest Caucasian|Abkhaz-Abaza|Cyrillic|
af|Afrikaans|afr|Indo-European|Germanic|Latin|
am|Amharic|amh|Afro-Asiatic|Semitic|Ethiopic|
an|Aragonese|arg|Indo-European|Romance|Latin|
ar|Arabic|arb|Afro-Asiatic|Semitic|Arabic|
as|Assamese|asm|Indo-European|Indo-Aryan|Bengali|
ast|Asturian|ast|Indo-European|Romance|Latin|
az|Azerbaijani|azj|Turkic|Oghuz|Latin|
ba|Bashkir|bak|Turkic|Kipchak|Cyrillic|
bas|Basaa|bas|Niger-Congo|Bantu|Latin|
be|Belarusian|bel|Indo-European|Slavic|Cyrillic|
bg|Bulgarian|bul|Indo-European|Slavic|Cyrillic|
bn|Bengali|ben|Indo-European|Indo-Aryan|Bengali|
br|Breton|bre|Indo-European|Celtic|Latin|
ca|Catalan|cat|Indo-European|Romance|Latin|
ckb|Central Kurdish|ckb|Indo-European|Iranian|Arabic|
cnh|Hakha Chin|cnh|Sino-Tibetan|Kuki-Chin|Latin|
cs|Czech|ces|Indo-European|Slavic|Latin|
cv|Chuvash|chv|Turkic|Oghur|Cyrillic|
cy|Welsh|cym|Indo-European|Celtic|Latin|
da|Danish|dan|Indo-European|Germanic|Latin|
de|German|deu|Indo-European|Germanic|Latin|
dv|Dhivehi|div|Indo-European|Indo-Aryan|Thaana|
dyu|Dyula|dyu|Niger-Congo|Mande|Latin|
el|Greek|ell|Indo-European|Greek|Greek|
en|English|eng|Indo-European|Germanic|Latin|
eo|Esperanto|epo|Constructed|Constructed|Latin|
es|Spanish|spa|Indo-European|Romance|Latin|
et|Estonian|ekk|Uralic|Finnic|Latin|est
eu|Basque|eus|Basque|Basque|Latin|
fa|Persian|pes|Indo-European|Iranian|Arabic|
fi|Finnish|fin|Uralic|Finnic|Latin|
fr|French|fra|Indo-European|Romance|Latin|
fy-NL|Western Frisian|fry|Indo-European|Germanic|Latin|
ga-IE|Irish|gle|Indo-European|Celtic|Latin|
gl|Galician|glg|Indo-European|Romance|Latin|
gn|Guarani|gug|Tupian|Tupi-Guarani|Latin|
ha|Hausa|hau|Afro-Asiatic|Chadic|Latin|
he|Hebrew|heb|Afro-Asiatic|Semitic|Hebrew|
hi|Hindi|hin|Indo-European|Indo-Aryan|Devanagari|
hr|Croatian|hrv|Indo-European|Slavic|Latin|
hsb|Upper Sorbian|hsb|Indo-European|Slavic|Latin|
hu|Hungarian|hun|Uralic|Ugric|Latin|
hy-AM|Armenian|hye|Indo-European|Armenian|Armenian|
ia|Interlingua|ina|Constructed|Constructed|Latin|
id|Indonesian|ind|Austronesian|Malayo-Polynesian|Latin|
ig|Igbo|ibo|Niger-Congo|Volta-Niger|Latin|
is|Icelandic|isl|Indo-European|Germanic|Latin|
it|Italian|ita|Indo-European|Romance|Latin|
ja|Japanese|jpn|Japonic|Japanese|Japanese|
ka|Georgian|kat|Kartvelian|Kartvelian|Georgian|
kab|Kabyle|kab|Afro-Asiatic|Berber|Latin|
kk|Kazakh|kaz|Turkic|Kipchak|Cyrillic|
kmr|Kurmanji Kurdish|kmr|Indo-European|Iranian|Latin|
ko|Korean|kor|Koreanic|Korean|Hangul|
ky|Kyrgyz|kir|Turkic|Kipchak|Cyrillic|
lg|Luganda|lug|Niger-Congo|Bantu|Latin|
lij|Ligurian|lij|Indo-European|Romance|Latin|
lo|Lao|lao|Kra-Dai|Tai|Lao|
lt|Lithuanian|lit|Indo-European|Baltic|Latin|
ltg|Latgalian|ltg|Indo-European|Baltic|Latin|lav
lv|Latvian|lvs|Indo-European|Baltic|Latin|lav
mdf|Moksha|mdf|Uralic|Mordvinic|Cyrillic|
mhr|Meadow Mari|mhr|Uralic|Mari|Cyrillic|
mk|Macedonian|mkd|Indo-European|Slavic|Cyrillic|
ml|Malayalam|mal|Dravidian|South Dravidian|Malayalam|
mn|Mongolian|khk|Mongolic|Mongolic|Cyrillic|
mr|Marathi|mar|Indo-European|Indo-Aryan|Devanagari|
mrj|Hill Mari|mrj|Uralic|Mari|Cyrillic|
ms|Malay|zsm|Austronesian|Malayo-Polynesian|Latin|
mt|Maltese|mlt|Afro-Asiatic|Semitic|Latin|
myv|Erzya|myv|Uralic|Mordvinic|Cyrillic|
nan-tw|Taiwanese Hokkien|nan|Sino-Tibetan|Sinitic|Han|
nb-NO|Norwegian Bokmål|nob|Indo-European|Germanic|Latin|nor
ne-NP|Nepali|npi|Indo-European|Indo-Aryan|Devanagari|
nhi|Zacatlán Nahuatl|nhi|Uto-Aztecan|Aztecan|Latin|
nl|Dutch|nld|Indo-European|Germanic|Latin|
nn-NO|Norwegian Nynorsk|nno|Indo-European|Germanic|Latin|nor
oc|Occitan|oci|Indo-European|Romance|Latin|
or|Odia|ory|Indo-European|Indo-Aryan|Odia|
os|Ossetian|oss|Indo-European|Iranian|Cyrillic|
pa-IN|Punjabi|pan|Indo-European|Indo-Aryan|Gurmukhi|
pl|Polish|pol|Indo-European|Slavic|Latin|
ps|Pashto|pbt|Indo-European|Iranian|Arabic|
pt|Portuguese|por|Indo-European|Romance|Latin|
quy|Ayacucho Quechua|quy|Quechuan|Quechua II|Latin|
rm-sursilv|Romansh Sursilvan|roh|Indo-European|Romance|Latin|
rm-vallader|Romansh Vallader|roh|Indo-European|Romance|Latin|
ro|Romanian|ron|Indo-European|Romance|Latin|
ru|Russian|rus|Indo-European|Slavic|Cyrillic|
rw|Kinyarwanda|kin|Niger-Congo|Bantu|Latin|
sah|Sakha|sah|Turkic|Siberian Turkic|Cyrillic|
sat|Santali|sat|Austroasiatic|Munda|Ol Chiki|
sc|Sardinian|srd|Indo-European|Romance|Latin|
sk|Slovak|slk|Indo-European|Slavic|Latin|
skr|Saraiki|skr|Indo-European|Indo-Aryan|Arabic|
sl|Slovenian|slv|Indo-European|Slavic|Latin|
sq|Albanian|als|Indo-European|Albanian|Latin|
sr|Serbian|srp|Indo-European|Slavic|Cyrillic|
sv-SE|Swedish|swe|Indo-European|Germanic|Latin|
sw|Swahili|swh|Niger-Congo|Bantu|Latin|
ta|Tamil|tam|Dravidian|South Dravidian|Tamil|
te|Telugu|tel|Dravidian|South-Central Dravidian|Telugu|
th|Thai|tha|Kra-Dai|Tai|Thai|
ti|Tigrinya|tir|Afro-Asiatic|Semitic|Ethiopic|
tig|Tigre|tig|Afro-Asiatic|Semitic|Ethiopic|
tk|Turkmen|tuk|Turkic|Oghuz|Latin|
tok|Toki Pona|tok|Constructed|Constructed|Latin|-
tr|Turkish|tur|Turkic|Oghuz|Latin|
tt|Tatar|tat|Turkic|Kipchak|Cyrillic|
tw|Twi|twi|Niger-Congo|Kwa|Latin|aka
ug|Uyghur|uig|Turkic|Karluk|Arabic|
uk|Ukrainian|ukr|Indo-European|Slavic|Cyrillic|
ur|Urdu|urd|Indo-European|Indo-Aryan|Arabic|
uz|Uzbek|uzn|Turkic|Karluk|Latin|
vi|Vietnamese|vie|Austroasiatic|Vietic|Latin|
vot|Votic|vot|Uralic|Finnic|Latin|
yi|Yiddish|ydd|Indo-European|Germanic|Hebrew|
yo|Yoruba|yor|Niger-Congo|Volta-Niger|Latin|
yue|Cantonese|yue|Sino-Tibetan|Sinitic|Han|
zgh|Standard Moroccan Tamazight|zgh|Afro-Asiatic|Berber|Tifinagh|tzm
zh-CN|Chinese (Mandarin, China)|cmn|Sino-Tibetan|Sinitic|Han|
zh-HK|Chinese (Hong Kong)|yue|Sino-Tibetan|Sinitic|Han|
zh-TW|Chinese (Mandarin, Taiwan)|cmn|Sino-Tibetan|Sinitic|Han|
zu|Zulu|zul|Niger-Congo|Bantu|Latin|
zza|Zaza|zza|Indo-European|Iranian|Latin|
"""

#: Other spellings people (and checkpoint registries) use for a Common Voice locale.
_ALIASES = {"sv": "sv-SE", "zh": "zh-CN", "fy": "fy-NL", "ga": "ga-IE", "hy": "hy-AM", "ne": "ne-NP",
            "pa": "pa-IN", "nb": "nb-NO", "nn": "nn-NO", "no": "nb-NO", "nan": "nan-tw", "rm": "rm-sursilv"}

#: The reference study's 18 target languages.
STUDY_LANGUAGES = tuple("ar de en es et fa fr id it ja nl pl pt ru sv-SE th uk zh-CN".split())


def _parse(line: str) -> Language:
    code, name, iso, family, subgroup, script, uriel = line.split("|")
    uriel = "" if uriel == "-" else (uriel or iso)
    return Language(code=code, name=name, iso639_3=iso, family=family, subgroup=subgroup, script=script, uriel=uriel)


@cache
def all_languages() -> tuple[Language, ...]:
    """Every known language, sorted by code."""
    return tuple(_parse(line) for line in _TABLE.strip().splitlines())


@cache
def _index() -> dict[str, Language]:
    table = {lang.code.lower(): lang for lang in all_languages()}
    table.update({alias: table[target.lower()] for alias, target in _ALIASES.items()})
    for lang in all_languages():  # ISO 639-3 codes resolve too, first (lowest code) wins
        table.setdefault(lang.iso639_3, lang)
    return table


def find_language(code: str) -> Language | None:
    """The language with this Common Voice code, alias ('sv', 'zh') or ISO 639-3 code; None if unknown."""
    key = str(code).strip().lower()
    index = _index()
    return index.get(key) or index.get(key.split("-")[0].split("_")[0])


def get_language(code: str) -> Language:
    """Like `find_language`, but an unknown code raises ConfigError listing the valid codes."""
    lang = find_language(code)
    if lang is None:
        valid = " ".join(lang.code for lang in all_languages())
        raise ConfigError(f"unknown language code {code!r}; known Common Voice codes: {valid}")
    return lang


def language_suggestions(word: str, extra: tuple[str, ...] = ()) -> str:
    """' (did you mean ...?)' for a mistyped language code or name (also among `extra` codes), or ''."""
    from crossling.errors import did_you_mean

    shown = {lang.name: f"{lang.code!r} ({lang.name})" for lang in all_languages()}
    shown.update({lang.code: f"{lang.code!r} ({lang.name})" for lang in all_languages()})
    shown.update({code: repr(code) for code in extra})
    return did_you_mean(word, shown)
