"""A run's model card: its result record, resolved config and prepared-data summary -> model/README.md with
Hugging Face `model-index` metadata (base checkpoint, language, data and hours, recipe, test CER/WER)."""

from __future__ import annotations

import json
from pathlib import Path

from crossling import __version__, paths
from crossling.atomic import read_json, write_text_atomic
from crossling.languages import find_language
from crossling.markup import fmt_duration, wer_applies
from crossling.text import base_language

#: The oldest transformers the saved model folders are tested to load with (tests/test_modelcard.py).
TRANSFORMERS_FLOOR = "4.40"


def write_model_card(run_dir: Path, record: dict) -> Path:
    """Write <run>/model/README.md for a run whose record (result.json's content) is `record`."""
    resolved = read_json(paths.run_config_path(run_dir))
    data = _prepared_summary(record["run"])
    path = paths.run_model_card_path(run_dir)
    write_text_atomic(path, model_card(Path(run_dir).name, record, resolved, data))
    return path


def _prepared_summary(identity: dict) -> dict:
    path = paths.prepared_summary_path(Path(identity["prepared"]), identity["language"])
    return read_json(path) if path.is_file() else {}


def model_card(name: str, record: dict, resolved: dict, data: dict) -> str:
    """The card's text: YAML metadata (huggingface_hub's ModelCardData) then a Markdown body."""
    from huggingface_hub import ModelCardData

    identity = record["run"]
    language = identity["language"]
    base = _hub_id(resolved)
    metadata = ModelCardData(
        model_name=name, language=[base_language(language)], base_model=base, pipeline_tag="automatic-speech-recognition",
        library_name="transformers", tags=["automatic-speech-recognition", "ctc", "crossling"],
        metrics=["cer", "wer"] if wer_applies(language) else ["cer"],
        eval_results=_eval_results(record, _dataset(identity, data)),
    )
    body = [_title(name, identity, resolved, base), _results(record), _data_section(identity, data),
            _recipe(record, resolved), _usage(), _limitations(language)]
    return f"---\n{metadata.to_yaml()}\n---\n\n" + "\n\n".join(body) + "\n"


def _hub_id(resolved: dict) -> str | None:
    source = resolved.get("source", {})
    return source.get("location") if source.get("kind") == "hub" else None


def _dataset(identity: dict, data: dict) -> tuple[str, str]:
    """(dataset type, readable name) of the prepared data the run trained and was scored on."""
    origin = Path(str(data.get("source", "")))
    if paths.synthetic_summary_path(origin, identity["language"]).is_file():
        return "crossling-synthetic", "crossling synthetic speech (espeak-ng)"
    if origin.name:
        return "common_voice", f"Common Voice ({origin.name})"
    return "unknown", "prepared data"


def _eval_results(record: dict, dataset: tuple[str, str]) -> list:
    from huggingface_hub import EvalResult

    test = record["scores"]["test"]
    language = record["run"]["language"]
    metrics = [("cer", "Test CER (%)", test.get("cer"))]
    if wer_applies(language):
        metrics.append(("wer", "Test WER (%)", test.get("wer")))
    return [EvalResult(task_type="automatic-speech-recognition", task_name="Speech Recognition",
                       dataset_type=dataset[0], dataset_name=dataset[1], dataset_config=language,
                       dataset_split="test", metric_type=kind, metric_name=title, metric_value=round(100 * value, 2))
            for kind, title, value in metrics if value is not None]


def _title(name: str, identity: dict, resolved: dict, base: str | None) -> str:
    lang = find_language(identity["language"])
    language = f"{lang.name} ({identity['language']})" if lang else identity["language"]
    source = resolved.get("source", {})
    origin = {"hub": f"[{base}](https://huggingface.co/{base})", "random": "random initialisation (no pre-training)",
              "zoo": f"crossling's mini-zoo model `{identity['checkpoint']}`"}.get(
                  source.get("kind"), f"`{identity['checkpoint']}`")
    return (f"# {name}\n\n{origin} fine-tuned with a CTC head on {language} by "
            f"crossling {__version__} (seed {identity['seed']}).")


def _results(record: dict) -> str:
    language = record["run"]["language"]
    scores = record["scores"]
    lines = ["## Results", "", "| metric | dev | test |", "|---|---|---|",
             "| CER (%) | " + " | ".join(_percent(scores.get(s, {}).get("cer")) for s in ("dev", "test")) + " |"]
    if wer_applies(language):
        lines.append("| WER (%) | " + " | ".join(_percent(scores.get(s, {}).get("wer")) for s in ("dev", "test")) + " |")
    else:
        lines += ["", f"No WER: {language} is written without spaces between words."]
    lines += ["", "Greedy CTC decoding, no language model; corpus-level rates (summed edits over summed "
              "reference length) on text normalised as in training."]
    return "\n".join(lines)


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _data_section(identity: dict, data: dict) -> str:
    if not data:
        return "## Data\n\nThe prepared data's summary (prepared.json) was not found."
    vocab = data.get("vocab", [])
    oov = data.get("oov_rate", {})
    return "\n".join([
        "## Data", "",
        f"- Training: {fmt_duration(3600 * data.get('train_hours', 0))}, {data.get('train_utterances', '?')} utterances"
        + (f", {data['train_speakers']} speakers" if "train_speakers" in data else "")
        + f"; dev {data.get('dev_utterances', '?')}, test {data.get('test_utterances', '?')} utterances.",
        f"- Source: {_dataset(identity, data)[1]}, selection seed {data.get('seed', '?')}.",
        f"- Vocabulary: {len(vocab)} characters from the training text"
        + (f"; out-of-vocabulary rate dev {oov['dev']:.2%}, test {oov['test']:.2%}." if {"dev", "test"} <= set(oov)
           else "."),
    ])


def _recipe(record: dict, resolved: dict) -> str:
    config = record["run"]["config"]
    cost = record.get("cost", {})
    lines = ["## Training recipe", "",
             f"- {record.get('steps', config['max_steps'])} steps, Adam (betas {config['adam_beta1']}, "
             f"{config['adam_beta2']}), {record['run']['schedule']}.",
             f"- Batches of {config['batch_seconds']:g} s of audio; utterances up to "
             f"{config['max_utterance_seconds']:g} s; feature encoder "
             f"{'frozen' if config['freeze_feature_encoder'] else 'trained'}; precision {resolved.get('precision', '?')}.",
             f"- SpecAugment: time masks p = {config['mask_time_prob']:g} (length {config['mask_time_length']}), "
             f"feature masks p = {config['mask_feature_prob']:g}; layerdrop {config['layerdrop']:g}.",
             f"- Trained on {cost.get('device', '?')} with {cost.get('threads', '?')} threads in "
             f"{fmt_duration(cost.get('wall_seconds', float('nan')))}.",
             "", "The full recipe is in the run's config.json:", "", "```json",
             json.dumps(config, indent=1, sort_keys=True), "```"]
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
