"""`crossling demo --quick` end to end: synthetic corpus -> prepare -> zoo + random-init runs -> report, and
the demo's headline agreeing with the report's tables."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from grid_factory import environment

from crossling.cli import main
from crossling.demo import BEATS, demo_study
from crossling.design import question_checks, subgroup_blocks
from crossling.registry import get_checkpoint


def test_demo_studies_use_the_zoo_and_a_random_twin():
    for quick in (False, True):
        study = demo_study(quick)
        checkpoints = [get_checkpoint(alias) for alias in study.checkpoints]
        assert any(c.pretrain_hours == 0 for c in checkpoints), "the random-init baseline"
        assert sum(c.pretrain_hours > 0 for c in checkpoints) >= 1
        assert len({c.size for c in checkpoints}) == 1, "baseline and zoo share one architecture"
        pretrain_languages = {lang for c in checkpoints for lang in c.pretrain_languages}
        assert not pretrain_languages & set(study.languages), "targets are unseen in pre-training"
        assert len(study.seeds) >= 3 and study.data.kind == "synthetic"
        checks = {q.key: q for q in question_checks(study)}
        assert checks["baseline"].testable, "its main question can be answered"
    full = demo_study(False)
    assert set(full.checkpoints) == {"zoo-es", "zoo-de", "zoo-random"}
    assert subgroup_blocks(full.checkpoints, full.languages) == list(full.languages)  # 6 blocks: p can reach 0.031


def _cer_table_letters(report_dir) -> pd.DataFrame:
    return pd.read_csv(report_dir / "tables" / "cer_table.csv", keep_default_na=False).set_index(
        ["checkpoint", "language"])


@pytest.mark.slow
def test_quick_demo_end_to_end_and_its_headline_agrees_with_its_report(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    printed, progress = capsys.readouterr()
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    # Live progress during the grid (stderr is no terminal here: plain lines, one per finished run).
    ended = [line for line in progress.splitlines() if line.startswith("run zoo-") and " done in " in line]
    assert len(ended) == 6 and any("runs 6/6: done 6" in line for line in ended) and "\r" not in progress
    assert summary["done"] == summary["runs"] == 6 and summary["failed"] == 0
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
    assert summary["report"] in printed and "zoo-es" in printed
    assert summary["baseline"] == "zoo-random" and summary["headline"]
    for sentence in summary["headline"]:
        assert sentence in printed
    # The headline's verdict per pair is the report's: "lower CER" exactly when the letters share nothing.
    cer = _cer_table_letters(tmp_path / "demo" / "report")
    verdict = summary["versus_baseline"]["pt"]["zoo-es"]
    separated = not set(cer.loc[("zoo-es", "pt"), "letters"]) & set(cer.loc[("zoo-random", "pt"), "letters"])
    lower = cer.loc[("zoo-es", "pt"), "mean"] < cer.loc[("zoo-random", "pt"), "mean"]
    assert (verdict == BEATS) == (separated and lower)
    findings = {f["key"]: f for f in summary["findings"]}
    joint = findings["baseline/zoo-random"]
    assert (joint["verdict"] == "supported") == (verdict == BEATS)
    assert joint["sentence"] in summary["headline"]
    assert findings["friedman"]["verdict"] == "cannot be tested here"  # one language
    # The study's checkpoints were ranked from frozen features; with two of them the report's predicted-vs-
    # measured section says why their agreement with fine-tuning cannot be tested.
    assert (tmp_path / "demo" / "store" / "rank" / "pt.json").is_file()
    page = (tmp_path / "demo" / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Predicted vs measured" in page and ("Cannot be tested here whether the ranking by logme before "
                                                    "fine-tuning agrees with the fine-tuned order on pt: 2 of") in page
    # Issue 12: the demo's report has its methods, training curves (dev CER every 100 steps) and error
    # analysis, and every run's model folder its model card.
    for name in ("training_loss", "dev_cer_curve", "cer_by_length"):
        assert (tmp_path / "demo" / "report" / "figures" / f"{name}.png").is_file(), name
    for heading in ("## Methods", "## Training curves", "## Error analysis"):
        assert heading in page, heading
    data = (tmp_path / "demo" / "report" / "tables" / "data.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[:2] for line in data[1:]] == [["pt", "train"], ["pt", "dev"], ["pt", "test"]]
    assert len(list((tmp_path / "demo" / "store" / "runs").glob("*/model/README.md"))) == 6
    # A second call (the real CLI, --json) finds every run done and only rebuilds the report.
    second = subprocess.run([sys.executable, "-m", "crossling", "demo", "--quick", "--json", "--out",
                             str(tmp_path / "demo")], env=environment(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    again = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert json.loads(second.stdout) == again and "ended: runs 6/6: done 6" in second.stderr
    assert again["mean_test_cer"] == summary["mean_test_cer"] and again["headline"] == summary["headline"]


def test_a_baseline_pair_without_a_direction_is_not_called_higher():
    """A significant pair whose mean ranks and mean CERs disagree has no direction (sign 0): demo.json must
    not call it 'higher CER'."""
    from crossling.demo import NO_DIRECTION, WORSE, _versus_baseline
    from crossling.findings import SUPPORTED, Finding

    common = dict(question="zoo-es and zoo-random differ in CER on pt", test="Conover-Iman", unit="runs", n=8,
                  alpha=0.05, verdict=SUPPORTED, subject=("pt", "zoo-es", "zoo-random"))
    split = Finding(key="pair/pt/zoo-es/zoo-random", claim="on pt, zoo-es and zoo-random differ in CER (…)", **common)
    worse = Finding(key="pair/pt/zoo-es/zoo-random", claim="on pt, zoo-es has a higher CER than zoo-random", sign=1,
                    **common)
    assert _versus_baseline([split], "zoo-random") == {"pt": {"zoo-es": NO_DIRECTION}}
    assert _versus_baseline([worse], "zoo-random") == {"pt": {"zoo-es": WORSE}}
