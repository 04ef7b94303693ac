"""Evaluation: a fine-tuned model (run directory or HF model directory) + a prepared language ->
greedy transcripts of dev/test, per-utterance hypotheses, corpus-level CER/WER split by gender."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import crossling
from crossling import paths
from crossling.atomic import read_json, write_json_atomic, write_jsonl_atomic
from crossling.batching import PreparedLanguage, SplitAudio, open_prepared
from crossling.decoding import transcribe
from crossling.errors import ConfigError, ModelError
from crossling.models import InputSpec, check_vocabulary, load_finetuned
from crossling.progress import Track, no_progress
from crossling.scoring import for_scoring, score_pair, scores_record

log = logging.getLogger(__name__)

# Effective when torch is first imported after this module, as in `crossling evaluate`.
crossling.short_openmp_spin()


def evaluate(
    model_or_run_dir: Path,
    prepared: Path,
    language: str,
    splits: Sequence[str] = ("dev", "test"),
    out: Path | None = None,
    device: str = "auto",
    batch_seconds: float = 400.0,
    track: Track = no_progress,
) -> dict:
    """Score a fine-tuned model on `splits` of a prepared language.

    Writes hypotheses-<split>.jsonl and scores.json into `out` when given. Returns {"model", "language",
    "prepared", "scores": {split: S}, "cer", "wer" (last split's), "steps", "skipped" (from the run's
    record when given a finished run directory, else None / {})}."""
    data = open_prepared(prepared, language)
    model_dir, run_record = _model_dir(Path(model_or_run_dir))
    model, processor, spec = load_finetuned(model_dir)
    check_vocabulary(model, processor.tokenizer, data.vocab, data.vocab_file)
    device = pick_device(device)
    scores, _ = evaluate_model(model.to(device), spec, data, splits, out, device, batch_seconds, track=track)
    last = scores[splits[-1]]
    return {
        "model": str(model_dir),
        "language": language,
        "prepared": str(Path(prepared)),
        "scores": scores,
        "cer": last["cer"],
        "wer": last["wer"],
        "steps": run_record.get("steps"),
        "skipped": run_record.get("skipped", {}),
    }


def _model_dir(path: Path) -> tuple[Path, dict]:
    """A run directory's model/ (and its result record, if finished), or the directory itself."""
    run_model = paths.run_model_dir(path)
    if (run_model / "config.json").is_file():
        result = paths.run_result_path(path)
        return run_model, read_json(result) if result.is_file() else {}
    if (path / "config.json").is_file():
        return path, {}
    raise ModelError(
        f"{path}: neither a finished run directory (with {run_model.name}/config.json) "
        "nor a Hugging Face model directory (with config.json)"
    )


def pick_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an explicit choice is checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available; use cpu or auto")
    if not device.startswith(("cpu", "cuda")):
        raise ConfigError(f"--device {device!r} is not valid; choose auto, cpu or cuda")
    return device


def evaluate_model(
    model,
    spec: InputSpec,
    data: PreparedLanguage,
    splits: Sequence[str],
    out: Path | None,
    device: str,
    batch_seconds: float,
    autocast_dtype=None,
    track: Track = no_progress,
) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Transcribe and score each split -> ({split: S}, {split: hypotheses}); with `out`, also write the
    per-utterance hypotheses and scores.json there."""
    id_to_token = {index: token for token, index in data.vocab.items()}
    scores: dict[str, dict] = {}
    hypotheses: dict[str, list[str]] = {}
    for split in splits:
        utterances = data.split(split)
        audio = SplitAudio(data.root, utterances)
        hyps = transcribe(model, audio, spec, id_to_token, device=device, batch_seconds=batch_seconds,
                          autocast_dtype=autocast_dtype, lengths=audio.lengths(), track=track)
        references = [u.text for u in utterances]
        scores[split] = scores_record(references, [for_scoring(h) for h in hyps], [u.gender for u in utterances])
        hypotheses[split] = hyps
        log.info("%s %s: CER %.4f WER %.4f over %d utterances", data.language, split,
                 scores[split]["cer"] or 0.0, scores[split]["wer"] or 0.0, len(utterances))
        if out is not None:
            write_jsonl_atomic(paths.run_hypotheses_path(out, split), _hypothesis_rows(utterances, hyps))
    if out is not None:
        write_json_atomic(paths.run_scores_path(out), scores)
    return scores, hypotheses


def _hypothesis_rows(utterances, hypotheses: list[str]) -> list[dict]:
    rows = []
    for utterance, hypothesis in zip(utterances, hypotheses, strict=True):
        counts = score_pair(utterance.text, for_scoring(hypothesis))
        rows.append({
            "id": utterance.id, "reference": utterance.text, "hypothesis": hypothesis,
            "char_edits": counts.char_edits, "chars": counts.chars,
            "word_edits": counts.word_edits, "words": counts.words,
            "speaker": utterance.speaker, "gender": utterance.gender,
        })
    return rows
