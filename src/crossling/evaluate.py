"""Evaluation: a fine-tuned model (run directory or HF model directory) + a prepared language ->
greedy transcripts of dev/test, per-utterance hypotheses, corpus-level CER/WER split by gender."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import crossling
from crossling import paths
from crossling.atomic import write_json_atomic, write_jsonl_atomic
from crossling.decoding import transcribe
from crossling.errors import ConfigError, ModelError
from crossling.manifest import Utterance
from crossling.models import InputSpec, check_vocabulary, load_finetuned
from crossling.prepared import PreparedLanguage, SplitAudio, open_prepared
from crossling.progress import Track, no_progress
from crossling.records import RunIdentity, RunRecord, SplitScores
from crossling.scoring import for_scoring, score_pair, scores_record

if TYPE_CHECKING:  # torch loads when a model does, after the OpenMP setting below
    import torch
    from torch import nn

log = logging.getLogger(__name__)

# Effective when torch is first imported after this module, as in `crossling evaluate`.
crossling.short_openmp_spin()


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """Scores of a fine-tuned model on splits of a prepared language; `run` is the run's record when the
    model came from a finished run directory."""

    model: str
    language: str
    prepared: str
    scores: dict[str, SplitScores]
    run: RunRecord | None = None

    @property
    def last(self) -> SplitScores:
        """The scores of the last split evaluated (test, by default)."""
        return list(self.scores.values())[-1]

    def to_json(self) -> dict[str, Any]:
        """{"model", "language", "prepared", "scores", "cer", "wer" (last split's), "steps", "skipped"
        (from the run's record, else None / {})}."""
        return {"model": self.model, "language": self.language, "prepared": self.prepared,
                "scores": {split: s.to_json() for split, s in self.scores.items()},
                "cer": self.last.cer, "wer": self.last.wer, "steps": self.run.steps if self.run else None,
                "skipped": dict(self.run.skipped) if self.run else {}}


def evaluate(
    model_or_run_dir: Path,
    prepared: Path,
    language: str,
    *,
    splits: Sequence[str] = ("dev", "test"),
    out: Path | None = None,
    device: str = "auto",
    batch_seconds: float = 400.0,
    track: Track = no_progress,
) -> Evaluation:
    """Score a fine-tuned model on `splits` of a prepared language; writes hypotheses-<split>.jsonl and
    scores.json into `out` when given."""
    data = open_prepared(prepared, language)
    model_dir, run_record = _model_dir(Path(model_or_run_dir))
    model, processor, spec = load_finetuned(model_dir)
    check_vocabulary(model, processor.tokenizer, data.vocab, data.vocab_file)
    device = pick_device(device)
    scores, _ = evaluate_model(model.to(device), spec, data, splits=splits, out=out, device=device,
                               batch_seconds=batch_seconds, autocast_dtype=run_autocast(run_record, device),
                               track=track)
    return Evaluation(model=str(model_dir), language=language, prepared=str(Path(prepared)), scores=scores,
                      run=run_record)


def _model_dir(path: Path) -> tuple[Path, RunRecord | None]:
    """A run directory's model/ (and its result record, if finished), or the directory itself."""
    run_model = paths.run_model_dir(path)
    if (run_model / "config.json").is_file():
        result = paths.run_result_path(path)
        return run_model, RunRecord.read(result) if result.is_file() else None
    if (path / "config.json").is_file():
        return path, None
    raise ModelError(
        f"{path}: neither a finished run directory (with {run_model.name}/config.json) "
        "nor a Hugging Face model directory (with config.json)"
    )


def run_autocast(record: RunRecord | None, device: str):
    """The autocast dtype the run's own evaluation used on this device (its recipe's precision; 'auto' for
    a bare model directory), so that standalone scores equal the run's scores.json."""
    import torch

    from crossling import devices

    known = record is not None and isinstance(record.identity, RunIdentity)
    precision = record.identity.recipe.precision if known else "auto"
    chosen = devices.choose_precision(precision, device, devices.capability_of(device))
    return getattr(torch, chosen.autocast) if chosen.autocast else None


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
    model: nn.Module,
    spec: InputSpec,
    data: PreparedLanguage,
    *,
    splits: Sequence[str],
    out: Path | None,
    device: str,
    batch_seconds: float,
    autocast_dtype: torch.dtype | None = None,
    track: Track = no_progress,
) -> tuple[dict[str, SplitScores], dict[str, list[str]]]:
    """Transcribe and score each split -> ({split: scores}, {split: hypotheses}); with `out`, also write
    the per-utterance hypotheses and scores.json there."""
    id_to_token = {index: token for token, index in data.vocab.items()}
    scores: dict[str, SplitScores] = {}
    hypotheses: dict[str, list[str]] = {}
    for split in splits:
        utterances = data.split(split)
        audio = SplitAudio(data.root, utterances)
        hyps = transcribe(model, audio, spec, id_to_token, device=device, batch_seconds=batch_seconds,
                          autocast_dtype=autocast_dtype, lengths=audio.lengths(), track=track)
        references = [u.text for u in utterances]
        record = scores_record(references, [for_scoring(h) for h in hyps], [u.gender for u in utterances])
        scores[split] = SplitScores.from_json(record, f"{split} scores")
        hypotheses[split] = hyps
        log.info("%s %s: CER %.4f WER %.4f over %d utterances", data.language, split,
                 scores[split].cer or 0.0, scores[split].wer or 0.0, len(utterances))
        if out is not None:
            write_jsonl_atomic(paths.run_hypotheses_path(out, split), _hypothesis_rows(utterances, hyps))
    if out is not None:
        write_json_atomic(paths.run_scores_path(out), {split: s.to_json() for split, s in scores.items()})
    return scores, hypotheses


def _hypothesis_rows(utterances: list[Utterance], hypotheses: list[str]) -> list[dict]:
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
