"""The report's views of a study's runs: training curves and error analysis from a store, CER beside WER,
cost in human units; nothing shown where there is nothing to show."""

import pandas as pd
import pytest
from analysis_factory import synthetic_table
from store_factory import write_run_files

from crossling.runviews import cer_wer_table, cost_table, curve_figures, error_views


def _store(tmp_path, metrics=True, hypotheses=True) -> pd.DataFrame:
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "random-init"), languages=("de", "ja"), seeds=(0, 1, 2))
    return write_run_files(tmp_path, table, metrics=metrics, hypotheses=hypotheses)


def test_curves_from_a_store(tmp_path):
    shown = curve_figures(_store(tmp_path, hypotheses=False), tmp_path)
    assert list(shown) == ["training_loss", "dev_cer_curve"]
    assert all(png.startswith(b"\x89PNG") and "median over seeds" in caption for caption, png in shown.values())


def test_no_metrics_no_curves(tmp_path):
    assert curve_figures(_store(tmp_path, metrics=False, hypotheses=False), tmp_path) == {}


def test_error_analysis_from_a_store(tmp_path):
    table = _store(tmp_path, metrics=False)
    shown, tables, csvs = error_views(table, tmp_path, worst=1)
    assert list(shown) == ["cer_by_length"] and list(tables) == ["worst_utterances", "character_edits"]
    assert set(csvs) == {"errors_worst_utterances", "errors_character_edits", "errors_cer_by_length"}
    worst, frame = tables["worst_utterances"]
    assert len(worst.rows) == 2 * 2 * 1  # 2 languages × best and worst × 1 utterance
    assert {row[2].text for row in worst.rows} == {"xlsr53", "random-init"}
    assert len(frame) > len(worst.rows)  # the CSV keeps more
    assert "(blank output)" in {row[5].text for row in worst.rows} and "" in set(frame["hypothesis"])
    edits, _ = tables["character_edits"]
    assert any("→ ∅" in row[4].text for row in edits.rows)


def test_error_analysis_is_left_out_without_hypotheses(tmp_path, caplog):
    assert error_views(_store(tmp_path, metrics=False, hypotheses=False), tmp_path) == ({}, {}, {})
    assert "error analysis skipped" in caplog.text


def test_wer_beside_cer_only_where_words_are_spaced():
    runs = synthetic_table(checkpoints=("xlsr53", "lv60"), languages=("de", "ja"), seeds=(0, 1))
    table, frame = cer_wer_table(runs)
    assert table.header == ("checkpoint", "de", "ja") and "No WER for ja" in table.caption
    row = {cell.text for cell in table.rows[0][1:]}
    de, ja = table.rows[0][1].text, table.rows[0][2].text
    assert " / " in de and " / " not in ja and row
    assert frame.loc[frame["language"] == "ja", "wer"].isna().all()


def test_cost_reads_in_human_units():
    cost = pd.DataFrame({"runs": [3, 3], "wall_hours": [54 / 3600, 70 / 3600], "wall_hours_sd": [2 / 3600, None],
                         "device_hours_total": [0.045, 0.06], "audio_s_per_s": [5.04, 4.0],
                         "peak_memory_mb": [734.895, 800.0]}, index=["zoo-es", "zoo-random"])
    table = cost_table(cost)
    first = [cell.text for cell in table.rows[0]]
    assert first == ["zoo-es", "3", "54 s ± 2.0 s", "2.7 min", "5.0", "771 MB"]
    assert [cell.text for cell in table.rows[1]][2] == "70 s"
    assert "0.015" not in " ".join(first)


@pytest.mark.parametrize("hours", [0.5, 30.0])
def test_cost_units_follow_the_size(hours):
    cost = pd.DataFrame({"runs": [2], "wall_hours": [hours], "wall_hours_sd": [0.1], "device_hours_total": [4 * hours],
                         "audio_s_per_s": [1.0], "peak_memory_mb": [20000.0]}, index=["x"])
    texts = [cell.text for cell in cost_table(cost).rows[0]]
    assert texts[2].endswith(" min" if hours < 1 else " h") and texts[5] == "21 GB"
