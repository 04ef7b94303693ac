"""The typed records between stages: round trips, schema versions, malformed files, and reading the
files earlier versions wrote (tests/data/legacy-*.json were written by the code before the records)."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from grid_factory import toy_record, write_study

from crossling.config import TrainConfig
from crossling.errors import CorruptArtifactError
from crossling.records import (
    SCHEMA,
    LegacyIdentity,
    PlannedRun,
    PreparedSummary,
    RunFailure,
    RunIdentity,
    RunRecord,
    StudyPlan,
    legacy_identity,
    run_identity,
    same_run,
)
from crossling.study import load_study, study_plan

DATA = Path(__file__).parent / "data"
RECIPE = TrainConfig(learning_rate=2e-3, max_steps=3, batch_seconds=8.0, checkpoint_every=100)
IDENTITY = run_identity(model="zoo-es", language="xx", seed=0, recipe=RECIPE,
                        data={"source": "synthetic", "hours": 0.1, "speakers": (24, 6, 6)})


def test_run_identity_round_trips_and_hashes_its_json():
    back = RunIdentity.from_json(json.loads(json.dumps(IDENTITY.to_json())), "x")
    assert back == IDENTITY and back.digest() == IDENTITY.digest()
    assert IDENTITY.weights == "zoo:zoo-es" and IDENTITY.data["speakers"] == [24, 6, 6]  # as JSON gives it back
    assert set(IDENTITY.to_json()) == {"model", "weights", "language", "seed", "recipe", "data"}
    assert IDENTITY.declared and not replace(IDENTITY, data={"source": "prepared", "content": "ab"}).declared
    assert replace(IDENTITY, seed=1).digest() != IDENTITY.digest()


def test_run_record_round_trips(tmp_path):
    record = toy_record(IDENTITY, 0.25, steps=12, resumed_from=(4, 8))
    path = tmp_path / "result.json"
    path.write_text(json.dumps(record.to_json()))
    back = RunRecord.read(path)
    assert back == record and back.to_json()["schema"] == SCHEMA
    assert back.test_cer() == 0.25 and back.scores["test"].by_gender["male"].chars == 100
    assert "by_gender" not in back.to_json()["scores"]["test"]["by_gender"]["male"]


def test_a_record_of_another_schema_version_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({**toy_record(IDENTITY, 0.5, steps=1).to_json(), "schema": 7}))
    with pytest.raises(CorruptArtifactError, match=rf"{path}: a run record of schema version 7; .* reads version 1"):
        RunRecord.read(path)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"schema": "2", "runs": []}))
    with pytest.raises(CorruptArtifactError, match=f"{plan}: a study plan of schema version '2'"):
        StudyPlan.from_json(json.loads(plan.read_text()), str(plan))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.pop("cost"), r"cost must be a JSON object"),
    (lambda r: r["cost"].pop("threads"), r"cost: missing required key\(s\) threads"),
    (lambda r: r["scores"]["test"].update(chars="many"), r"scores test: chars must be int, got str"),
    (lambda r: r.update(extra=1), r"unknown key\(s\) extra"),
    (lambda r: r["run"]["recipe"].update(max_steps=0), r"run recipe: max_steps must be a finite number >= 1"),
    (lambda r: r.update(run=[1]), r"run must be a JSON object"),
])
def test_a_malformed_record_is_an_error_naming_the_file_and_key(tmp_path, edit, message):
    record = toy_record(IDENTITY, 0.5, steps=1).to_json()
    edit(record)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptArtifactError, match=message) as error:
        RunRecord.read(path)
    assert str(path) in str(error.value)


def test_a_result_written_before_schema_versions_is_read():
    record = RunRecord.read(DATA / "legacy-result.json")
    assert isinstance(record.identity, LegacyIdentity) and record.steps == 3
    assert record.schedule.startswith("tri_stage_linear") and record.resumed_from == ()
    assert record.scores["test"].utterances == 3 and record.cost.device == "cpu"
    old = json.loads((DATA / "legacy-result.json").read_text())
    assert record.identity.to_json() == old["run"]  # kept as written


def test_a_legacy_identity_matches_a_study_run_by_language_seed_and_recipe_alone():
    old = LegacyIdentity(json.loads((DATA / "legacy-result.json").read_text())["run"])
    moved = Path("/somewhere/else/prepared")  # the old absolute prepared path is /tmp/legacy/work/prepared
    assert same_run(old, IDENTITY, prepared=moved, model="zoo-es")  # a study's run: moved projects resume
    assert not same_run(old, replace(IDENTITY, seed=1), prepared=moved, model="zoo-es")
    assert not same_run(old, replace(IDENTITY, recipe=replace(RECIPE, max_steps=4)), prepared=moved, model="zoo-es")
    by_hand = replace(IDENTITY, data={"source": "prepared", "content": "0123"})
    assert not same_run(old, by_hand, prepared=moved, model="zoo-es")  # by hand: the old rule, paths too
    assert same_run(old, by_hand, prepared=Path("/tmp/legacy/work/prepared"), model="zoo-es")
    assert legacy_identity(prepared=Path("/tmp/legacy/work/prepared"), language="xx", model="zoo-es", seed=0,
                           recipe=RECIPE) == old.values


def test_a_run_failure_round_trips_and_an_old_one_is_read(tmp_path):
    from crossling.store import Store

    store = Store(tmp_path)
    store.write_error("r1", ValueError("bad"), "Traceback ...")
    failure = store.error("r1")
    assert isinstance(failure, RunFailure) and failure.error == "ValueError: bad" and failure.time > 0
    path = tmp_path / "runs" / "r1" / "error.json"
    old = {key: value for key, value in json.loads(path.read_text()).items() if key != "schema"}
    path.write_text(json.dumps(old))  # as written before schema versions
    assert store.error("r1") == failure


def test_prepared_summary_round_trips_and_old_summaries_are_read(tmp_path):
    old = PreparedSummary.read(DATA / "legacy-prepared.json")
    assert old.language == "pt" and old.train_utterances > 0 and old.requested_train_hours == 0.002
    path = tmp_path / "prepared.json"
    path.write_text(json.dumps(old.to_json()))
    assert PreparedSummary.read(path) == old and json.loads(path.read_text())["schema"] == SCHEMA
    minimal = {key: value for key, value in asdict(old).items()
               if key not in ("requested_train_hours", "train_speakers", "max_hours_per_speaker")}
    assert PreparedSummary.from_json(minimal, "x").train_speakers is None  # older summaries lacked these


def test_a_prepared_summary_names_its_corpus_format_and_older_ones_were_common_voice(tmp_path):
    old = PreparedSummary.read(DATA / "legacy-prepared.json")  # schema 0, before other formats were read
    assert old.format == "cv"
    without = {key: value for key, value in old.to_json().items() if key != "format"}
    assert without["schema"] == SCHEMA and PreparedSummary.from_json(without, "x").format == "cv"
    lhotse = replace(old, format="lhotse")
    path = tmp_path / "prepared.json"
    path.write_text(json.dumps(lhotse.to_json()))
    assert json.loads(path.read_text())["format"] == "lhotse" and PreparedSummary.read(path) == lhotse
    path.write_text(json.dumps({**lhotse.to_json(), "format": 3}))
    with pytest.raises(CorruptArtifactError, match=r"prepared.json.*format"):
        PreparedSummary.read(path)


def test_study_plan_round_trips_and_an_old_plan_is_read(tmp_path):
    old = StudyPlan.from_json(json.loads((DATA / "legacy-plan.json").read_text()), "legacy-plan.json")
    assert len(old.runs) == 4 and old.sweep == ("learning_rate",)
    same = write_study(tmp_path / "toy.toml", ["toy/a"], recipe={"max_steps": 4, "checkpoint_every": 2},
                       sweep={"learning_rate": [1e-3, 2e-3]})  # the study the old plan was written for
    assert [run.run_id for run in old.runs] == [run.run_id for run in study_plan(load_study(same)).runs]
    assert {run.recipe.learning_rate for run in old.runs} == {1e-3, 2e-3}  # `config` became `recipe`
    assert StudyPlan.from_json(json.loads(json.dumps(old.to_json())), "x") == old
    run = PlannedRun(run_id="r", checkpoint="c", model="m", language="pt", seed=0, settings={}, recipe=RECIPE)
    assert PlannedRun.from_json(run.to_json(), "x") == run
