"""The checkpoints crossling knows by alias: the reference study's 15 LARGE models, the random-init
baseline, and the bundled mini-zoo (registered from `crossling/zoo/zoo.toml` when present).

Facts are from the models' papers and hub cards; `notes` says where a figure is uncertain."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from crossling.errors import ModelError
from crossling.languages import STUDY_LANGUAGES

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

    @property
    def multilingual(self) -> bool:
        return self.pretrain_language_count > 1 or len(self.pretrain_languages) > 1

    @property
    def is_random_init(self) -> bool:
        return self.source.startswith("random:")


def _hub(alias, hub_id, model_type, hours, languages, domain, notes="", language_count=0):
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
    _hub("lv60", "facebook/wav2vec2-large-lv60", "wav2vec2", 53_200, ["en"], "read audiobooks (LibriVox)"),
    _hub(
        "robust", "facebook/wav2vec2-large-robust", "wav2vec2", 63_000, ["en"],
        "mixed: audiobooks, telephone, crowd-sourced",
        "Libri-Light + Switchboard + Fisher + CommonVoice-en; total approximate",
    ),
    _hub("hubert", "facebook/hubert-large-ll60k", "hubert", 60_000, ["en"], "read audiobooks (Libri-Light)"),
    _hub(
        "wavlm", "microsoft/wavlm-large", "wavlm", 94_000, ["en"],
        "mixed: audiobooks, podcasts/YouTube, parliament", "Libri-Light + GigaSpeech + VoxPopuli-en",
    ),
    _hub(
        "unispeech-sat", "microsoft/unispeech-sat-large", "unispeech-sat", 94_000, ["en"],
        "mixed: audiobooks, podcasts/YouTube, parliament", "same 94k h as WavLM",
    ),
    _hub(
        "unispeech-cv-en", "microsoft/unispeech-large-1500h-cv", "unispeech", 1_500, ["en"],
        "read, crowd-sourced (Common Voice)", "hours from the hub id",
    ),
    _hub(
        "unispeech-cv-multi", "microsoft/unispeech-large-multi-lingual-1500h-cv", "unispeech", 1_500,
        ["en", "fr", "es", "it"], "read, crowd-sourced (Common Voice)",
        "hub card tags 4 languages; language list from the UniSpeech paper; config not seen",
    ),
    _hub(
        "xlsr53", "facebook/wav2vec2-large-xlsr-53", "wav2vec2", 56_000, _XLSR53_KNOWN,
        "read + conversational (MLS, Common Voice, BABEL)",
        "53 languages; only those among the study's targets are listed (partial list)", 53,
    ),
    _hub(
        "xlsr300m", "facebook/wav2vec2-xls-r-300m", "wav2vec2", 436_000, STUDY_LANGUAGES,
        "mixed (VoxPopuli, MLS, Common Voice, BABEL, VoxLingua107)",
        "128 languages, covering all 18 study targets; only those are listed (partial list)", 128,
    ),
    _hub("vp100k", "facebook/wav2vec2-large-100k-voxpopuli", "wav2vec2", 100_000, _VOXPOPULI_23,
         "parliament speech (VoxPopuli)"),
    _hub("vp-es", "facebook/wav2vec2-large-es-voxpopuli", "wav2vec2", 21_400, ["es"], "parliament speech (VoxPopuli)",
         "hours from the VoxPopuli paper's per-language unlabelled data"),
    _hub("vp-fr", "facebook/wav2vec2-large-fr-voxpopuli", "wav2vec2", 22_800, ["fr"], "parliament speech (VoxPopuli)",
         "hours from the VoxPopuli paper's per-language unlabelled data"),
    _hub("vp-it", "facebook/wav2vec2-large-it-voxpopuli", "wav2vec2", 21_900, ["it"], "parliament speech (VoxPopuli)",
         "hours from the VoxPopuli paper's per-language unlabelled data; config not seen"),
    _hub("vp-nl", "facebook/wav2vec2-large-nl-voxpopuli", "wav2vec2", 19_000, ["nl"], "parliament speech (VoxPopuli)",
         "hours from the VoxPopuli paper's per-language unlabelled data"),
    _hub("vp-sv", "facebook/wav2vec2-large-sv-voxpopuli", "wav2vec2", 16_300, ["sv"], "parliament speech (VoxPopuli)",
         "hours from the VoxPopuli paper's per-language unlabelled data"),
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
    """Every registered checkpoint: reference models, random init, then the mini-zoo."""
    return (*REFERENCE_CHECKPOINTS, RANDOM_INIT_CHECKPOINT, *zoo_checkpoints())


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
