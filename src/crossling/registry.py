"""The checkpoints crossling knows by alias: the reference study's 15 LARGE models, today's checkpoints (MMS,
w2v-BERT 2.0, XLS-R 1B/2B, data2vec-audio), the random-init baseline, and the bundled mini-zoo (registered
from `crossling/zoo/zoo.toml` when present).

Facts are from the models' papers and hub cards, named in `sources`; `uncertain` lists the facts that could
not be confirmed offline (field, why) and `notes` says more."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources

from crossling.errors import ModelError
from crossling.languages import STUDY_LANGUAGES, find_language

RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class Checkpoint:
    """A registered checkpoint.

    `source` is a hub id, or 'zoo:<dir>' for a bundled mini-zoo model, or 'random:<config alias>' or
    'random:zoo:<dir>' for random initialisation of that architecture (drawn per run from its seed).
    `pretrain_languages` are ISO 639-1 codes (Common Voice style), empty for random init."""

    alias: str
    source: str
    model_type: str
    pretrain_hours: float
    pretrain_languages: tuple[str, ...]
    domain: str
    size: str = "large"
    notes: str = ""
    pretrain_language_count: int = 0  # when larger than len(pretrain_languages), the list is partial
    config_name: str = ""  # file in shared/model-configs (hub id with '/' -> '__')
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    parameters_millions: float = 0.0  # as the source states it; 0 = not stated
    licence: str = ""  # SPDX-style id from the hub card; '' = not recorded
    sources: tuple[str, ...] = ()  # papers and hub cards the facts come from
    uncertain: tuple[tuple[str, str], ...] = ()  # (field, why) for facts not confirmed offline

    @property
    def uncertain_fields(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.uncertain)

    @property
    def multilingual(self) -> bool:
        return self.pretrain_language_count > 1 or len(self.pretrain_languages) > 1

    @property
    def is_random_init(self) -> bool:
        return self.source.startswith("random:")


def _hub(alias: str, hub_id: str, *, model_type: str, hours: float, languages: list[str], domain: str, notes: str = "",
         language_count: int = 0) -> Checkpoint:
    return Checkpoint(
        pretrain_language_count=language_count or len(languages),
        alias=alias,
        source=hub_id,
        model_type=model_type,
        pretrain_hours=hours,
        pretrain_languages=tuple(languages),
        domain=domain,
        notes=notes,
        config_name=hub_id.replace("/", "__") + ".json",
    )


_VOXPOPULI_23 = (
    "bg cs da de el en es et fi fr hr hu it lt lv mt nl pl pt ro sk sl sv".split()
)

#: Study targets present in XLSR-53's Common Voice / MLS / BABEL pre-training data.
_XLSR53_KNOWN = tuple("ar de en es et fa fr id it ja nl pl pt ru sv-SE zh-CN".split())

REFERENCE_CHECKPOINTS: tuple[Checkpoint, ...] = (
    _hub("lv60", "facebook/wav2vec2-large-lv60",
         model_type="wav2vec2", hours=53_200, languages=["en"], domain="read audiobooks (LibriVox)"),
    _hub(
        "robust", "facebook/wav2vec2-large-robust", model_type="wav2vec2", hours=63_000, languages=["en"],
        domain="mixed: audiobooks, telephone, crowd-sourced",
        notes="Libri-Light + Switchboard + Fisher + CommonVoice-en; total approximate",
    ),
    _hub("hubert", "facebook/hubert-large-ll60k",
         model_type="hubert", hours=60_000, languages=["en"], domain="read audiobooks (Libri-Light)"),
    _hub(
        "wavlm", "microsoft/wavlm-large", model_type="wavlm", hours=94_000, languages=["en"],
        domain="mixed: audiobooks, podcasts/YouTube, parliament", notes="Libri-Light + GigaSpeech + VoxPopuli-en",
    ),
    _hub(
        "unispeech-sat", "microsoft/unispeech-sat-large", model_type="unispeech-sat", hours=94_000, languages=["en"],
        domain="mixed: audiobooks, podcasts/YouTube, parliament", notes="same 94k h as WavLM",
    ),
    _hub(
        "unispeech-cv-en", "microsoft/unispeech-large-1500h-cv",
        model_type="unispeech", hours=1_500, languages=["en"],
        domain="read, crowd-sourced (Common Voice)", notes="hours from the hub id",
    ),
    _hub(
        "unispeech-cv-multi", "microsoft/unispeech-large-multi-lingual-1500h-cv", model_type="unispeech", hours=1_500,
        languages=["en", "fr", "es", "it"], domain="read, crowd-sourced (Common Voice)",
        notes="hub card tags 4 languages; language list from the UniSpeech paper; config not seen",
    ),
    _hub(
        "xlsr53", "facebook/wav2vec2-large-xlsr-53", model_type="wav2vec2", hours=56_000, languages=_XLSR53_KNOWN,
        domain="read + conversational (MLS, Common Voice, BABEL)",
        notes="53 languages; only those among the study's targets are listed (partial list)", language_count=53,
    ),
    _hub(
        "xlsr300m", "facebook/wav2vec2-xls-r-300m", model_type="wav2vec2", hours=436_000, languages=STUDY_LANGUAGES,
        domain="mixed (VoxPopuli, MLS, Common Voice, BABEL, VoxLingua107)",
        notes="128 languages, covering all 18 study targets; only those are listed (partial list)", language_count=128,
    ),
    _hub("vp100k", "facebook/wav2vec2-large-100k-voxpopuli",
         model_type="wav2vec2", hours=100_000, languages=_VOXPOPULI_23,
         domain="parliament speech (VoxPopuli)"),
    _hub("vp-es", "facebook/wav2vec2-large-es-voxpopuli",
         model_type="wav2vec2", hours=21_400, languages=["es"], domain="parliament speech (VoxPopuli)",
         notes="hours from the VoxPopuli paper's per-language unlabelled data"),
    _hub("vp-fr", "facebook/wav2vec2-large-fr-voxpopuli",
         model_type="wav2vec2", hours=22_800, languages=["fr"], domain="parliament speech (VoxPopuli)",
         notes="hours from the VoxPopuli paper's per-language unlabelled data"),
    _hub("vp-it", "facebook/wav2vec2-large-it-voxpopuli",
         model_type="wav2vec2", hours=21_900, languages=["it"], domain="parliament speech (VoxPopuli)",
         notes="hours from the VoxPopuli paper's per-language unlabelled data; config not seen"),
    _hub("vp-nl", "facebook/wav2vec2-large-nl-voxpopuli",
         model_type="wav2vec2", hours=19_000, languages=["nl"], domain="parliament speech (VoxPopuli)",
         notes="hours from the VoxPopuli paper's per-language unlabelled data"),
    _hub("vp-sv", "facebook/wav2vec2-large-sv-voxpopuli",
         model_type="wav2vec2", hours=16_300, languages=["sv"], domain="parliament speech (VoxPopuli)",
         notes="hours from the VoxPopuli paper's per-language unlabelled data"),
)


def _card_languages(codes: str) -> tuple[str, ...]:
    """A hub card's language tags as crossling's codes (Common Voice style), keeping those crossling knows."""
    known = (find_language(code) for code in codes.split())
    return tuple(dict.fromkeys(language.code for language in known if language is not None))


_XLSR_PAPER = "XLS-R: Self-supervised Cross-lingual Speech Representation Learning at Scale (Babu et al., 2021)"
_MMS_PAPER = "Scaling Speech Technology to 1,000+ Languages (Pratap et al., 2023)"
_SEAMLESS_PAPER = "SeamlessM4T: Massively Multilingual & Multimodal Machine Translation (2023), Section 4.1"
_DATA2VEC_PAPER = "data2vec: A General Framework for Self-supervised Learning in Speech, Vision and Language (Baevski et al., 2022)"
_MMS_DOMAIN = "mixed: religious readings (MMS-lab), read and crowd-sourced speech (MLS, Common Voice, VoxPopuli, BABEL, VoxLingua-107)"
_MMS_UNCERTAIN = (
    ("pretrain_hours", "the hub card says 'about 500,000 hours'; the paper's exact total was not read here"),
    ("pretrain_languages", "the study targets are assumed present because MMS pre-training includes the XLS-R "
                           "sources (Common Voice, MLS, VoxPopuli, BABEL, VoxLingua-107); not confirmed per language"),
    ("domain", "the data mix is from the MMS paper's description, not read here"),
)
# The language tags of the facebook/w2v-bert-2.0 hub card (the card says 'more than 143 languages').
_W2V_BERT_CARD_LANGUAGES = (
    "af am ar as az be bn bs bg ca cs zh cy da de el en et fi fr or om ga gl gu ha he hi hr hu hy ig id is it jv "
    "ja kn ka kk mn km ky ko lo ln lt lb lg lv ml mr mk mt mi my nl nb ne ny oc pa ps fa pl pt ro ru sk sl sn sd so "
    "es sr sv sw ta te tg tl th tr uk ur uz vi wo xh yo ms zu ary arz yue kea"
)


def _today(alias, hub_id, model_type, *, hours, languages, domain, language_count, parameters, licence, sources,
           uncertain=(), notes="") -> Checkpoint:
    return replace(_hub(alias, hub_id,
    model_type=model_type, hours=hours, languages=languages, domain=domain, notes=notes,
                        language_count=language_count),
                   parameters_millions=parameters, licence=licence, sources=tuple(sources),
                   uncertain=tuple(uncertain))


#: Checkpoints of 2021-2024 that a study in 2026 compares besides the reference 15.
TODAY_CHECKPOINTS: tuple[Checkpoint, ...] = (
    _today("mms-300m", "facebook/mms-300m", "wav2vec2", hours=500_000, languages=STUDY_LANGUAGES,
           domain=_MMS_DOMAIN, language_count=1_400, parameters=300, licence="cc-by-nc-4.0",
           sources=("hub card facebook/mms-300m", _MMS_PAPER), uncertain=_MMS_UNCERTAIN,
           notes="'over 1,400 languages' (card); only the study targets are listed (partial list); the XLS-R "
                 "300M architecture (config values inferred, not read)"),
    _today("mms-1b", "facebook/mms-1b", "wav2vec2", hours=500_000, languages=STUDY_LANGUAGES,
           domain=_MMS_DOMAIN, language_count=1_400, parameters=1_000, licence="cc-by-nc-4.0",
           sources=("hub card facebook/mms-1b", _MMS_PAPER), uncertain=_MMS_UNCERTAIN,
           notes="'over 1,400 languages' (card); only the study targets are listed (partial list); the XLS-R "
                 "1B architecture (48 layers, hidden 1280)"),
    _today("w2v-bert-2", "facebook/w2v-bert-2.0", "wav2vec2-bert", hours=4_500_000,
           languages=_card_languages(_W2V_BERT_CARD_LANGUAGES),
           domain="unlabelled audio of many sources (not itemised on the card)", language_count=143, parameters=600, licence="mit",
           sources=("hub card facebook/w2v-bert-2.0", _SEAMLESS_PAPER),
           uncertain=(("pretrain_language_count", "the card says 'more than 143 languages'"),
                      ("domain", "the card does not itemise the 4.5M hours")),
           notes="Conformer encoder over 80-dim log-mel frames stacked in pairs (no CNN); the card's language "
                 "tags that crossling knows are listed (partial list)"),
    _today("xlsr-1b", "facebook/wav2vec2-xls-r-1b", "wav2vec2", hours=436_000, languages=STUDY_LANGUAGES,
           domain="mixed (VoxPopuli, MLS, Common Voice, BABEL, VoxLingua107)", language_count=128, parameters=1_000,
           licence="apache-2.0", sources=("hub card facebook/wav2vec2-xls-r-1b", _XLSR_PAPER),
           notes="same data as XLS-R 300M; 128 languages covering all 18 study targets (partial list); "
                 "48 layers, hidden 1280"),
    _today("xlsr-2b", "facebook/wav2vec2-xls-r-2b", "wav2vec2", hours=436_000, languages=STUDY_LANGUAGES,
           domain="mixed (VoxPopuli, MLS, Common Voice, BABEL, VoxLingua107)", language_count=128, parameters=2_000,
           licence="apache-2.0", sources=(_XLSR_PAPER, "hub card facebook/wav2vec2-xls-r-2b (not read)"),
           uncertain=(("licence", "taken from the XLS-R 300M/1B cards; the 2B card was not read"),),
           notes="same data as XLS-R 300M; 48 layers, hidden 1920; does not fit a 24 GiB CPU machine for "
                 "fine-tuning in fp32 with Adam"),
    _today("data2vec-large", "facebook/data2vec-audio-large", "data2vec-audio", hours=960, languages=["en"],
           domain="read audiobooks (LibriSpeech)", language_count=1, parameters=0, licence="apache-2.0",
           sources=("hub card facebook/data2vec-audio-large", _DATA2VEC_PAPER),
           uncertain=(("pretrain_hours", "the card tags LibriSpeech (960 h); the paper also pre-trains Large "
                                         "models on Libri-Light (60k h) and which one this checkpoint is was "
                                         "not confirmed"),
                      ("parameters_millions", "not stated; its packaged architecture counts 313M")),
           notes="24 layers, hidden 1024; CNN with layer norm in every layer"),
    _today("data2vec-base", "facebook/data2vec-audio-base", "data2vec-audio", hours=960, languages=["en"],
           domain="read audiobooks (LibriSpeech)", language_count=1, parameters=0, licence="apache-2.0",
           sources=("hub card facebook/data2vec-audio-base (not read)", _DATA2VEC_PAPER),
           uncertain=(("licence", "taken from the data2vec-audio-large card"),
                      ("parameters_millions", "not stated; its packaged architecture counts 93M")),
           notes="12 layers, hidden 768: a BASE model, for quick checks on a CPU"),
)

RANDOM_INIT_CHECKPOINT = Checkpoint(
    alias=RANDOM_INIT,
    source="random:xlsr300m",
    model_type="wav2vec2",
    pretrain_hours=0.0,
    pretrain_languages=(),
    domain="none",
    notes="the LARGE wav2vec2 architecture (XLS-R 300M config) with random weights",
    config_name="facebook__wav2vec2-xls-r-300m.json",
)


@cache
def zoo_checkpoints() -> tuple[Checkpoint, ...]:
    """Mini-zoo entries from the bundled `crossling/zoo/zoo.toml` (empty if the zoo is absent)."""
    try:
        text = resources.files("crossling").joinpath("zoo/zoo.toml").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return ()
    entries = tomllib.loads(text).get("checkpoint", [])
    return tuple(
        Checkpoint(
            alias=e["alias"],
            source=e["source"],
            model_type=e.get("model_type", "wav2vec2"),
            pretrain_hours=float(e.get("pretrain_hours", 0.0)),
            pretrain_languages=tuple(e.get("pretrain_languages", ())),
            domain=e.get("domain", "synthetic speech (eSpeak NG)"),
            size=e.get("size", "tiny"),
            notes=e.get("notes", ""),
            extra={k: v for k, v in e.items() if k not in _ZOO_KNOWN},
        )
        for e in entries
    )


_ZOO_KNOWN = {"alias", "source", "model_type", "pretrain_hours", "pretrain_languages", "domain", "size", "notes"}


def all_checkpoints() -> tuple[Checkpoint, ...]:
    """Every registered checkpoint: reference models, today's checkpoints, random init, then the mini-zoo."""
    return (*REFERENCE_CHECKPOINTS, *TODAY_CHECKPOINTS, RANDOM_INIT_CHECKPOINT, *zoo_checkpoints())


def get_checkpoint(alias: str) -> Checkpoint:
    """The registered checkpoint called `alias`; an unknown alias lists the valid ones."""
    for checkpoint in all_checkpoints():
        if checkpoint.alias == alias:
            return checkpoint
    valid = ", ".join(c.alias for c in all_checkpoints())
    raise ModelError(f"unknown checkpoint alias {alias!r}; registered aliases: {valid}")


def weights_source(model: str) -> str:
    """Where `model`'s starting weights come from: a registered alias's source ('zoo:…', 'random:…', a hub
    id), else `model` itself. Part of every run identity, so that re-pointing an alias (as when zoo-random
    became a per-seed random init) gives new runs instead of reusing old results."""
    checkpoint = find_checkpoint(model)
    return checkpoint.source if checkpoint else model


def find_checkpoint(alias_or_source: str) -> Checkpoint | None:
    """The registered checkpoint with this alias or hub id, or None (for any other hub id or path)."""
    for checkpoint in all_checkpoints():
        if alias_or_source in (checkpoint.alias, checkpoint.source):
            return checkpoint
    return None


def alias_suggestions(word: str) -> str:
    """' (did you mean 'xlsr53'?)' for a mistyped checkpoint alias, or ''."""
    from crossling.errors import did_you_mean

    return did_you_mean(word, [checkpoint.alias for checkpoint in all_checkpoints()])
