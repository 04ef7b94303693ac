"""Corpus-level error rates: (reference, hypothesis) pairs -> `Scores` with summed edit counts.

Torch-free. Rates are summed edits over summed reference lengths, never a mean of per-utterance rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rapidfuzz.distance import Levenshtein


@dataclass(frozen=True)
class Scores:
    """Edit counts over a set of utterances; `cer` and `wer` are derived from them.

    Characters include the spaces between words (as jiwer and Hugging Face `evaluate` count them)."""

    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0
    utterances: int = 0

    @property
    def cer(self) -> float:
        return _rate(self.char_edits, self.chars)

    @property
    def wer(self) -> float:
        return _rate(self.word_edits, self.words)

    def __add__(self, other: Scores) -> Scores:
        return Scores(*(a + b for a, b in zip(astuple_counts(self), astuple_counts(other), strict=True)))

    def to_dict(self) -> dict:
        """JSON form: rates first (None when there is no reference text), then the counts."""
        rates = {"cer": _json_rate(self.cer), "wer": _json_rate(self.wer)}
        return {**rates, **asdict(self)}


def astuple_counts(scores: Scores) -> tuple[int, ...]:
    return (scores.char_edits, scores.chars, scores.word_edits, scores.words, scores.utterances)


def _rate(edits: int, length: int) -> float:
    if length == 0:
        return 0.0 if edits == 0 else math.inf
    return edits / length


def _json_rate(rate: float) -> float | None:
    return None if math.isinf(rate) else rate


#: What an emitted `<unk>` token counts as when scoring: one character that matches nothing (the
#: transcript itself keeps `<unk>`, as plain transformers decodes it).
UNKNOWN_MARK = "\ufffd"


def for_scoring(hypothesis: str, unk_token: str = "<unk>") -> str:
    """A decoded hypothesis as it is scored: each `<unk>` is one wrong character, not five."""
    return hypothesis.replace(unk_token, UNKNOWN_MARK)


def score_pair(reference: str, hypothesis: str) -> Scores:
    """Edit counts of one utterance: character Levenshtein on the strings, word Levenshtein on the
    whitespace-split words."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    return Scores(
        char_edits=Levenshtein.distance(reference, hypothesis),
        chars=len(reference),
        word_edits=Levenshtein.distance(ref_words, hyp_words),
        words=len(ref_words),
        utterances=1,
    )


def score(references: Sequence[str], hypotheses: Sequence[str]) -> Scores:
    """Corpus-level scores of aligned reference/hypothesis lists."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = Scores()
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        total = total + score_pair(reference, hypothesis)
    return total


def score_by_group(
    references: Sequence[str], hypotheses: Sequence[str], groups: Sequence[str]
) -> dict[str, Scores]:
    """Scores per group label (e.g. speaker gender); utterances whose label is '' are left out."""
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        if group:
            members.setdefault(group, []).append(index)
    return {
        group: score([references[i] for i in indices], [hypotheses[i] for i in indices])
        for group, indices in sorted(members.items())
    }


def scores_record(
    references: Sequence[str], hypotheses: Sequence[str], genders: Sequence[str]
) -> dict:
    """The result-record form of one split: overall scores plus `by_gender` (each without its own split)."""
    by_gender = score_by_group(references, hypotheses, genders)
    record = score(references, hypotheses).to_dict()
    record["by_gender"] = {gender: scores.to_dict() for gender, scores in by_gender.items()}
    return record
