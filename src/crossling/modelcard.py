"""A run's model card: its result record (RunRecord), where its model came from (ModelSource) and its
prepared data's summary -> model/README.md with Hugging Face `model-index` metadata (base checkpoint,
language, data and hours, recipe, test CER/WER)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from crossling import __version__, paths
from crossling.atomic import write_text_atomic
from crossling.languages import find_language
from crossling.markup import fmt_duration, wer_applies
from crossling.records import PreparedSummary, RunRecord, SplitScores
from crossling.text import base_language

#: The oldest transformers the saved model folders are tested to load with (tests/test_modelcard.py).
TRANSFORMERS_FLOOR = "4.40"


@dataclass(frozen=True, kw_only=True)
class CardFacts:
    """What a card says besides the record: the model's origin (models.ModelSource's kind and location),
    the run's precision, and the prepared data's summary (None when it cannot be read)."""

    source_kind: str
    source_location: str
    precision: str
    data: PreparedSummary | None


def write_model_card(run_dir: Path, record: RunRecord, facts: CardFacts) -> Path:
    """Write <run>/model/README.md for a finished run."""
    path = paths.run_model_card_path(run_dir)
    write_text_atomic(path, model_card(Path(run_dir).name, record, facts))
    return path


def model_card(name: str, record: RunRecord, facts: CardFacts) -> str:
    """The card's text: YAML metadata (huggingface_hub's ModelCardData) then a Markdown body."""
    from huggingface_hub import ModelCardData

    language = record.identity.language
    base = facts.source_location if facts.source_kind == "hub" else None
    metadata = ModelCardData(
        model_name=name, language=[base_language(language)], base_model=base, pipeline_tag="automatic-speech-recognition",
        library_name="transformers", tags=["automatic-speech-recognition", "ctc", "crossling"],
        metrics=["cer", "wer"] if wer_applies(language) else ["cer"],
        eval_results=_eval_results(record, _dataset(language, facts.data)),
    )
    body = [_title(name, record, facts, base), _results(record), _data_section(language, facts.data),
            _recipe(record, facts), _usage(), _limitations(language)]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(body) + "\n"


def _dataset(language: str, data: PreparedSummary | None) -> tuple[str, str]:
    """(dataset type, readable name) of the prepared data the run trained and was scored on."""
    origin = Path(data.source) if data is not None else Path()
    if origin.name and paths.synthetic_summary_path(origin, language).is_file():
        return "crossling-synthetic", "crossling synthetic speech (espeak-ng)"
    if origin.name:
        return "common_voice", f"Common Voice ({origin.name})"
    return "unknown", "prepared data"


def _eval_results(record: RunRecord, dataset: tuple[str, str]) -> list:
    from huggingface_hub import EvalResult

    test = record.scores["test"]
    language = record.identity.language
    metrics = [("cer", "Test CER (%)", test.cer)]
    if wer_applies(language):
        metrics.append(("wer", "Test WER (%)", test.wer))
    return [EvalResult(task_type="automatic-speech-recognition", task_name="Speech Recognition",
                       dataset_type=dataset[0], dataset_name=dataset[1], dataset_config=language,
                       dataset_split="test", metric_type=kind, metric_name=title, metric_value=round(100 * value, 2))
            for kind, title, value in metrics if value is not None]


def _title(name: str, record: RunRecord, facts: CardFacts, base: str | None) -> str:
    identity = record.identity
    lang = find_language(identity.language)
    language = f"{lang.name} ({identity.language})" if lang else identity.language
    origin = {"hub": f"[{base}](https://huggingface.co/{base})", "random": "random initialisation (no pre-training)",
              "zoo": f"crossling's mini-zoo model `{identity.model}`"}.get(facts.source_kind, f"`{identity.model}`")
    return (f"# {name}\n\n{origin} fine-tuned with a CTC head on {language} by "
            f"crossling {__version__} (seed {identity.seed}).")


def _results(record: RunRecord) -> str:
    language = record.identity.language
    splits = [record.scores.get(split) for split in ("dev", "test")]
    lines = ["## Results", "", "| metric | dev | test |", "|---|---|---|",
             "| CER (%) | " + " | ".join(_percent(_rate(s, "cer")) for s in splits) + " |"]
    if wer_applies(language):
        lines.append("| WER (%) | " + " | ".join(_percent(_rate(s, "wer")) for s in splits) + " |")
    else:
        lines += ["", f"No WER: {language} is written without spaces between words."]
    lines += ["", "Greedy CTC decoding, no language model; corpus-level rates (summed edits over summed "
              "reference length) on text normalised as in training."]
    return "\n".join(lines)


def _rate(scores: SplitScores | None, name: str) -> float | None:
    return None if scores is None else getattr(scores, name)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _data_section(language: str, data: PreparedSummary | None) -> str:
    if data is None:
        return "## Data\n\nThe prepared data's summary (prepared.json) was not found."
    oov = data.oov_rate
    speakers = f", {data.train_speakers} speakers" if data.train_speakers is not None else ""
    return "\n".join([
        "## Data", "",
        f"- Training: {fmt_duration(3600 * data.train_hours)}, {data.train_utterances} utterances{speakers}; "
        f"dev {data.dev_utterances}, test {data.test_utterances} utterances.",
        f"- Source: {_dataset(language, data)[1]}, selection seed {data.seed}.",
        f"- Vocabulary: {len(data.vocab)} characters from the training text"
        + (f"; out-of-vocabulary rate dev {oov['dev']:.2%}, test {oov['test']:.2%}." if {"dev", "test"} <= set(oov)
           else "."),
    ])


def _recipe(record: RunRecord, facts: CardFacts) -> str:
    config, cost = record.identity.recipe, record.cost
    lines = ["## Training recipe", "",
             f"- {record.steps} steps, Adam (betas {config.adam_beta1}, {config.adam_beta2}), {record.schedule}.",
             f"- Batches of {config.batch_seconds:g} s of audio; utterances up to "
             f"{config.max_utterance_seconds:g} s; feature encoder "
             f"{'frozen' if config.freeze_feature_encoder else 'trained'}; precision {facts.precision}.",
             f"- SpecAugment: time masks p = {config.mask_time_prob:g} (length {config.mask_time_length}), "
             f"feature masks p = {config.mask_feature_prob:g}; layerdrop {config.layerdrop:g}.",
             f"- Trained on {cost.device} with {cost.threads} threads in {fmt_duration(cost.wall_seconds)}.",
             "", "The full recipe is in the run's config.json:", "", "```json",
             json.dumps(asdict(config), indent=1, sort_keys=True), "```"]
    return "\n".join(lines)


def _usage() -> str:
    return "\n".join([
        "## Use", "", "```python", "from transformers import pipeline", "",
        'asr = pipeline("automatic-speech-recognition", model="path/to/this/folder")',
        'print(asr("clip.wav")["text"])  # 16 kHz mono', "```", "",
        f"Tested to load with `Wav2Vec2Processor` and `pipeline` on transformers {TRANSFORMERS_FLOOR} and newer.",
    ])


def _limitations(language: str) -> str:
    return ("## Limitations\n\nA research model from a cross-lingual transfer study, not a production "
            f"recogniser: one seed of one recipe on a small training set in {language}. Its output is lowercase "
            "text without punctuation (crossling.text.normalize); score other systems on the same normalisation.")
