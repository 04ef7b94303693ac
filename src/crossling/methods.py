"""A study's methods from its files: the prepared data (prepared.json + manifests) -> audio, utterances and
speakers per language and split, vocabulary and OOV rate; the done runs' records -> checkpoints, seeds,
recipe, software, commit, hardware and total compute. Tables (markup.Table + CSV frame) for the report."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crossling import paths
from crossling.config import TrainConfig
from crossling.errors import CrosslingError
from crossling.manifest import read_manifest
from crossling.markup import Table, fmt_duration
from crossling.prepared import is_prepared
from crossling.records import PreparedSummary, RunIdentity, RunRecord
from crossling.schedule import describe

log = logging.getLogger(__name__)

Tables = dict[str, tuple[Table, pd.DataFrame]]


@dataclass(frozen=True)
class StudyFiles:
    """Where a study's own files are: its store (run directories) and its prepared data (None: unknown)."""

    store: Path
    prepared: Path | None = None


def study_files(source: str | Path, store: Path | None) -> StudyFiles | None:
    """The files behind a report source: a study (file or shipped name) and its store, a store directory
    (its plan names the study file), or a results file with --store; None when there are none."""
    from crossling.results import TABLE_SUFFIXES
    from crossling.store import Store
    from crossling.study import default_store, find_study, load_study

    path = Path(source).expanduser()
    if path.suffix.lower() in TABLE_SUFFIXES:
        return StudyFiles(Path(store)) if store else None
    if path.is_dir():
        plan = Store(path).read_plan()
        study_file = Path(plan.study_file) if plan is not None and plan.study_file else None
        study = load_study(study_file) if study_file is not None and study_file.is_file() else None
        return StudyFiles(path, prepared_root(study, path) if study is not None else None)
    study = find_study(str(source))
    root = Path(store) if store else default_store(study)
    return StudyFiles(root, prepared_root(study, root))


def prepared_root(study, store_root: Path) -> Path:
    """Where the study's languages are prepared (a [data] path, or the store's data folder)."""
    from crossling.sources import PreparedData
    from crossling.sources import prepared_root as store_prepared_root

    if isinstance(study.data.options, PreparedData):
        return study.data.resolve(study.data.options.path)
    return store_prepared_root(study.data, store_root)


# --- the data ---------------------------------------------------------------------------------------------


def data_frame(prepared: Path, languages: list[str]) -> pd.DataFrame:
    """Per language and split: audio seconds, utterances and speakers (from the manifests), with the
    training vocabulary's size and the dev/test OOV rate (from prepared.json); languages not prepared
    under `prepared` are left out."""
    rows = []
    for language in sorted(languages):
        if not is_prepared(prepared, language):
            continue
        summary = PreparedSummary.read(paths.prepared_summary_path(prepared, language))
        for split in paths.SPLITS:
            utterances = read_manifest(paths.manifest_path(prepared, language, split))
            speakers = {u.speaker for u in utterances if u.speaker}
            rows.append({"language": language, "split": split, "seconds": sum(u.duration for u in utterances),
                         "utterances": len(utterances), "speakers": len(speakers) if speakers else None,
                         "vocabulary": len(summary.vocab) if split == "train" else None,
                         "oov_rate": summary.oov_rate.get(split)})
    return pd.DataFrame(rows, columns=["language", "split", "seconds", "utterances", "speakers", "vocabulary",
                                       "oov_rate"])


def data_table(frame: pd.DataFrame) -> Table:
    shown = pd.DataFrame({
        "language": frame["language"], "split": frame["split"], "audio": frame["seconds"].map(fmt_duration),
        "utterances": frame["utterances"], "speakers": frame["speakers"].map(_count),
        "vocabulary": frame["vocabulary"].map(_count),
        "OOV rate": frame["oov_rate"].map(lambda v: "–" if pd.isna(v) else f"{100 * v:.2f}%")})
    return Table.from_frame("data", "Data per language and split: audio, utterances and speakers (– where the "
                            "manifest names none); vocabulary: characters of the training text; OOV rate: share of "
                            "dev/test characters outside that vocabulary.", shown)


def _count(value) -> str:
    return "–" if pd.isna(value) else str(int(value))


# --- the setup -----------------------------------------------------------------------------------------------


def done_records(runs: pd.DataFrame, store: Path) -> list[RunRecord]:
    """The result records of the analysed runs that the store holds (unreadable ones are skipped)."""
    records = []
    for run_id in runs["run_id"]:
        path = paths.run_result_path(paths.store_run_dir(store, run_id))
        try:
            records.append(RunRecord.read(path))
        except (OSError, CrosslingError) as error:
            log.warning("methods: %s skipped (%s)", path, error)
    return records


def setup_frame(runs: pd.DataFrame, records: list[RunRecord]) -> pd.DataFrame:
    """What was run, with what and on what: one (item, value) row each."""
    rows = [("checkpoints", f"{runs['checkpoint'].nunique()}: " + ", ".join(sorted(map(str, runs["checkpoint"].unique())))),
            ("languages", ", ".join(sorted(map(str, runs["language"].unique())))),
            ("seeds", ", ".join(str(s) for s in sorted(runs["seed"].unique())) + " (repeated runs of one checkpoint "
             "on one language's single test set, not independent samples)"),
            ("runs analysed", str(len(runs)))]
    if records:
        rows += [("recipe", _recipe_text([r.identity.recipe for r in records if isinstance(r.identity, RunIdentity)])),
                 ("software", _versions(records, ("crossling", "torch", "transformers", "python", "platform"))),
                 ("commit", _versions(records, ("commit",)) or "not recorded by these runs"),
                 ("hardware", _hardware(records)), ("total compute", _compute(records))]
    return pd.DataFrame(rows, columns=["item", "value"])


def setup_table(frame: pd.DataFrame) -> Table:
    return Table.from_frame("setup", "Setup: checkpoints, languages, seeds, recipe, software and commit, hardware "
                            "and compute of the analysed runs (from their result.json).", frame)


def _recipe_text(recipes: list[TrainConfig]) -> str:
    """The options that differ from crossling's defaults (the reference study's recipe), with every value
    the runs used, and the schedule."""
    if not recipes:
        return "not recorded (runs written before run records were typed)"
    defaults = dataclasses.asdict(TrainConfig())
    values: dict[str, list] = {}
    for recipe in recipes:
        for key, value in dataclasses.asdict(recipe).items():
            if value != defaults[key] and value not in values.setdefault(key, []):
                values[key].append(value)
    changed = "; ".join(f"{key} = {' / '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in found)}"
                        for key, found in values.items() if found)
    schedules = sorted({describe(r) for r in recipes})
    return f"{changed or 'the defaults'}; other options as crossling's defaults; schedule: {' / '.join(schedules)}"


def _versions(records: list[RunRecord], keys: tuple[str, ...]) -> str:
    """'name value' for each key, every distinct value with its number of runs when they differ."""
    parts = []
    for key in keys:
        seen = Counter(r.versions[key] for r in records if key in r.versions)
        if len(seen) == 1:
            parts.append(f"{key} {next(iter(seen))}" if len(keys) > 1 else next(iter(seen)))
        elif seen:
            parts.append(f"{key} " + ", ".join(f"{v} ({n} runs)" for v, n in sorted(seen.items())))
    return "; ".join(parts)


def _hardware(records: list[RunRecord]) -> str:
    machines = Counter((r.cost.device, r.versions.get("gpu") or r.versions.get("processor", "processor not recorded"),
                        r.cost.threads) for r in records)
    return "; ".join(f"{device} ({name}), {threads} thread{'s' if threads != 1 else ''}: {n} runs"
                     for (device, name, threads), n in sorted(machines.items()))


def _compute(records: list[RunRecord]) -> str:
    wall = sum(r.cost.wall_seconds for r in records)
    devices = Counter()
    for r in records:
        devices[r.cost.device] += r.cost.device_hours * 3600
    per_device = ", ".join(f"{fmt_duration(s)} on {d}" for d, s in sorted(devices.items()))
    return (f"{fmt_duration(wall)} of wall-clock time over {len(records)} runs ({per_device}); "
            f"{fmt_duration(wall / len(records))} per run on average")


def methods_tables(runs: pd.DataFrame, files: StudyFiles) -> Tables:
    """The setup and (when the prepared data is at hand) data tables."""
    setup = setup_frame(runs, done_records(runs, files.store))
    out: Tables = {"setup": (setup_table(setup), setup)}
    if files.prepared is not None:
        data = data_frame(files.prepared, list(runs["language"].unique()))
        if not data.empty:
            out["data"] = (data_table(data), data)
    return out
