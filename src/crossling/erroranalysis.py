"""Why a checkpoint fails on a language: runs' hypotheses-<split>.jsonl in -> per language, the worst
utterances of the best and the worst checkpoint (reference vs hypothesis), the most frequent character
substitutions, deletions and insertions, and CER by utterance length, as tidy CSV-ready frames. No torch."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from crossling import paths
from crossling.atomic import read_jsonl
from crossling.errors import DataError
from crossling.scoring import for_scoring

SPACE = "␣"  # how a space reads in a table of characters
OPERATIONS = {"replace": "substitution", "delete": "deletion", "insert": "insertion"}


def read_hypotheses(run_dir: Path, split: str = "test") -> pd.DataFrame:
    """A run's per-utterance hypotheses (id, reference, hypothesis, char_edits, chars, ...) with `cer`."""
    path = paths.run_hypotheses_path(run_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: no hypotheses (the run is not finished, or was evaluated on other splits)")
    frame = pd.DataFrame(read_jsonl(path))
    return frame.assign(cer=frame["char_edits"] / frame["chars"].where(frame["chars"] > 0))


def worst_utterances(hypotheses: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The `n` utterances with the highest CER (more edits first among equal CERs, then file order); only
    utterances with an error."""
    ranked = hypotheses.assign(order=range(len(hypotheses)))
    ranked = ranked[ranked["char_edits"] > 0]
    ranked = ranked.sort_values(["cer", "char_edits", "order"], ascending=[False, False, True], kind="stable")
    return ranked.head(n)[["id", "reference", "hypothesis", "char_edits", "chars", "cer"]].reset_index(drop=True)


def character_edits(hypotheses: pd.DataFrame) -> pd.DataFrame:
    """Every character edit of the alignment CER counts (rapidfuzz's Levenshtein editops), tallied:
    operation (substitution / deletion / insertion), reference character, hypothesis character, count."""
    tally: Counter[tuple[str, str, str]] = Counter()
    for reference, hypothesis in zip(hypotheses["reference"], hypotheses["hypothesis"], strict=True):
        scored = for_scoring(hypothesis)
        for tag, i, j in Levenshtein.editops(reference, scored):
            tally[(OPERATIONS[tag], _shown(reference, i) if tag != "insert" else "",
                   _shown(scored, j) if tag != "delete" else "")] += 1
    rows = [(op, ref, hyp, count) for (op, ref, hyp), count in tally.items()]
    frame = pd.DataFrame(rows, columns=["operation", "reference", "hypothesis", "count"])
    return frame.sort_values(["count", "operation", "reference", "hypothesis"], ascending=[False, True, True, True],
                             kind="stable", ignore_index=True)


def _shown(text: str, index: int) -> str:
    return SPACE if text[index] == " " else text[index]


def top_edits(edits: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The `n` most frequent edits of each operation, with their share of all character edits."""
    total = edits["count"].sum()
    shares = edits.assign(share=edits["count"] / total if total else np.nan)
    return shares.groupby("operation", sort=True, group_keys=False).head(n).reset_index(drop=True)


def length_bins(lengths: pd.Series, bins: int = 4) -> list[tuple[int, int]]:
    """Reference lengths (characters) split at their quantiles into at most `bins` groups of about equal
    size -> each group's (shortest, longest) length, inclusive, in order."""
    values = lengths.to_numpy(dtype=int)
    cuts = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
    groups, below = [], -1
    for upper in sorted({*cuts.tolist(), int(values.max())}):
        members = values[(values > below) & (values <= upper)]
        if len(members):
            groups.append((int(members.min()), int(members.max())))
        below = upper
    return groups


def cer_by_length(hypotheses: pd.DataFrame, bins: list[tuple[int, int]]) -> pd.DataFrame:
    """Corpus CER (summed edits / summed characters) per reference-length bin ('12–25' characters)."""
    rows = []
    for low, high in bins:
        part = hypotheses[(hypotheses["chars"] >= low) & (hypotheses["chars"] <= high)]
        chars, edits = int(part["chars"].sum()), int(part["char_edits"].sum())
        rows.append((f"{low}–{high}" if high > low else str(low), len(part), chars, edits,
                     edits / chars if chars else np.nan))
    return pd.DataFrame(rows, columns=["length_bin", "utterances", "chars", "char_edits", "cer"])


# --- a study: the best and the worst checkpoint of every language ---------------------------------------


@dataclass(frozen=True)
class ErrorAnalysis:
    """Tidy frames, each with language, checkpoint and role (best / worst) columns."""

    worst: pd.DataFrame  # + run_id, seed (the cell's median run) and its worst utterances
    edits: pd.DataFrame  # most frequent character edits, pooled over the cell's runs
    by_length: pd.DataFrame  # CER per length bin, pooled over the cell's runs, bins shared per language

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"errors_worst_utterances": self.worst, "errors_character_edits": self.edits,
                "errors_cer_by_length": self.by_length}


def extreme_checkpoints(table: pd.DataFrame) -> pd.DataFrame:
    """Per language: the checkpoint(s) with the lowest and the highest mean test CER over seeds (each of
    equally placed checkpoints, never one picked by name) -> language, checkpoint, role, mean_cer."""
    done = table[table["status"] == "done"].dropna(subset=["cer"])
    means = done.groupby(["language", "checkpoint"], as_index=False)["cer"].mean()
    rows = []
    for language, part in means.groupby("language", sort=True):
        for role, value in (("best", part["cer"].min()), ("worst", part["cer"].max())):
            rows += [(language, c, role, value) for c in part.loc[part["cer"] == value, "checkpoint"]]
    return pd.DataFrame(rows, columns=["language", "checkpoint", "role", "mean_cer"])


def median_run(runs: pd.DataFrame) -> pd.Series:
    """The run whose test CER is nearest the cell's median (the lower seed among equally near ones)."""
    distance = (runs["cer"] - runs["cer"].median()).abs()
    return runs.assign(distance=distance).sort_values(["distance", "seed"], kind="stable").iloc[0]


def study_error_analysis(table: pd.DataFrame, store_root: Path, split: str = "test", worst: int = 5,
                         edits: int = 8, bins: int = 4) -> ErrorAnalysis:
    """The error analysis of every language's best and worst checkpoints from a study's store."""
    done = table[table["status"] == "done"].dropna(subset=["cer"])
    parts: dict[str, list[pd.DataFrame]] = {"worst": [], "edits": [], "by_length": []}
    for language, cells in extreme_checkpoints(table).groupby("language", sort=True):
        runs = done[(done["language"] == language) & done["checkpoint"].isin(cells["checkpoint"])]
        hypotheses = {r.run_id: read_hypotheses(paths.store_run_dir(store_root, r.run_id), split)
                      for r in runs.itertuples()}
        edges = length_bins(pd.concat([h["chars"] for h in hypotheses.values()]), bins)  # shared in a language
        for cell in cells.itertuples():
            cell_runs = runs[runs["checkpoint"] == cell.checkpoint]
            pooled = pd.concat([hypotheses[r] for r in cell_runs["run_id"]], ignore_index=True)
            key = {"language": language, "checkpoint": cell.checkpoint, "role": cell.role}
            middle = median_run(cell_runs)
            parts["worst"].append(worst_utterances(hypotheses[middle["run_id"]], worst).assign(
                run_id=middle["run_id"], seed=middle["seed"], **key))
            parts["edits"].append(top_edits(character_edits(pooled), edits).assign(runs=len(cell_runs), **key))
            parts["by_length"].append(cer_by_length(pooled, edges).assign(runs=len(cell_runs), **key))
    return ErrorAnalysis(*(_tidy(parts[name]) for name in ("worst", "edits", "by_length")))


def _tidy(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    first = ["language", "role", "checkpoint"]
    return frame[first + [c for c in frame.columns if c not in first]]
