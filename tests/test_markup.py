"""Report markup: booktabs LaTeX that fits a column or a page, human units, WER only where it means words."""

import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from crossling.markup import (
    LATEX_COLUMN_CHARS,
    LATEX_PAGE_CHARS,
    Cell,
    Table,
    duration_unit,
    fmt_cer_wer,
    fmt_duration,
    fmt_size,
    size_unit,
    wer_applies,
    wer_note,
    without_unsegmented_wer,
)

LANGUAGES = ("ar", "de", "en", "es", "et", "fa", "fr", "id", "it", "ja", "nl", "pl", "pt", "ru", "sv-SE", "th",
             "uk", "zh-CN")


def _table(columns: int, cell: str = "12.3 ± 0.4", name: str = "t") -> Table:
    header = ("checkpoint", *LANGUAGES[: columns - 1])
    rows = tuple((Cell("unispeech-cv-multi"), *(Cell(cell, bold=i == 0, sup="ab") for i in range(columns - 1)))
                 for _ in range(4))
    return Table(name, "A caption with 100% & more", header, rows)


def _tabulars(tex: str) -> list[str]:
    return re.findall(r"\\begin\{tabular\}.*?\\end\{tabular\}", tex, re.S)


def test_latex_uses_booktabs_and_says_what_it_needs():
    tex = _table(3).latex()
    assert tex.startswith("% Requires \\usepackage{booktabs}")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\hline" not in tex
    assert tex.index("\\caption") < tex.index("\\begin{tabular}")  # tables: caption above
    assert "100\\% \\& more" in tex and "\\textbf{12.3 $\\pm$ 0.4}\\textsuperscript{ab}" in tex


def test_a_narrow_table_fits_a_column_a_wider_one_spans_the_page():
    narrow, wide = _table(3).latex(), _table(7).latex()
    assert "\\begin{table}[tbp]" in narrow and "table*" not in narrow
    assert "\\begin{table*}[tbp]" in wide and len(_tabulars(wide)) == 1


def test_a_table_wider_than_the_page_is_split_into_blocks_that_fit():
    tex = _table(19).latex()  # the paper table: 18 languages
    blocks = _tabulars(tex)
    assert len(blocks) >= 2 and "\\resizebox{" not in tex
    for block in blocks:
        header = block.split("\\toprule\n")[1].split(" \\\\")[0].split(" & ")
        assert header[0] == "checkpoint"  # every block names its rows
        assert sum(len(h) for h in header) < LATEX_PAGE_CHARS
    seen = [h for block in blocks for h in block.split("\\toprule\n")[1].split(" \\\\")[0].split(" & ")[1:]]
    assert seen == list(LANGUAGES)  # every column once, in order


def test_one_column_too_wide_for_the_page_is_scaled_down():
    tex = _table(2, cell="x" * 150).latex()
    assert "\\resizebox{\\textwidth}{!}{%" in tex and len(_tabulars(tex)) == 1


def test_empty_table_says_so():
    assert Table("m", "none", ("a",), ()).empty and not _table(2).empty


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_tables_typeset_without_overfull_boxes(tmp_path):
    """The width estimates hold in real LaTeX: a two-column article, every table inside its column or page."""
    frames = "\n".join(_table(n, name=f"t{n}").latex() + "\\clearpage" for n in (2, 3, 4, 7, 12, 19))
    families = Table.from_frame("families", "11 columns", pd.DataFrame(
        [["(all checkpoints)", "mannwhitneyu", 12.0, 0.123, -0.52, 9, 6, 0.21, 0.27, 0.05, 0.06]],
        columns=["checkpoint", "test", "statistic", "p", "effect", "n[Indo-European]", "n[other]",
                 "median[Indo-European]", "median[other]", "iqr[Indo-European]", "iqr[other]"]))
    document = ("\\documentclass[twocolumn]{article}\\usepackage[utf8]{inputenc}\\usepackage{booktabs}"
                "\\usepackage{graphicx}\\begin{document}\n" + frames + families.latex() + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(document, encoding="utf-8")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "t.log").read_text(encoding="latin-1")
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)


def test_column_and_page_widths_are_ordered():
    assert 30 < LATEX_COLUMN_CHARS < LATEX_PAGE_CHARS


@pytest.mark.parametrize(("seconds", "text"), [(42.2, "42 s"), (4.25, "4.2 s"), (0.4, "0.40 s"), (150, "2.5 min"),
                                               (3 * 3600 + 360, "3.1 h"), (500 * 3600, "500 h")])
def test_durations_read_in_their_unit(seconds, text):
    assert fmt_duration(seconds) == text


def test_one_unit_per_column_and_missing_values():
    unit = duration_unit([30.0, 54.0, 200.0, math.nan])
    assert unit == ("s", 1.0) and fmt_duration(200.0, unit) == "200 s"
    assert duration_unit([54.0, 3600.0, 7200.0]) == ("min", 60.0) and duration_unit([7200.0]) == ("h", 3600.0)
    assert fmt_duration(90.0) == "90 s" and fmt_duration(80 * 60) == "80 min"
    assert fmt_duration(math.nan) == "–" and fmt_size(math.nan) == "–"


def test_memory_in_megabytes_and_gigabytes():
    assert fmt_size(734.895) == "771 MB"  # MiB in, decimal MB out
    assert fmt_size(12000.0) == "13 GB" and fmt_size(2000.0) == "2.1 GB"
    assert size_unit([100.0, 12000.0, 13000.0])[0] == "GB"


def test_wer_only_where_words_are_spaced():
    assert wer_applies("de") and wer_applies("sv-SE") and not wer_applies("ja") and not wer_applies("zh-CN")
    frame = pd.DataFrame({"language": ["de", "ja", "th"], "wer": [0.3, 0.9, 0.8], "cer": [0.1, 0.2, 0.3]})
    masked = without_unsegmented_wer(frame, ["wer"])
    assert masked["wer"].tolist()[0] == 0.3 and masked["wer"].isna().tolist() == [False, True, True]
    assert frame["wer"].notna().all()  # the input is left alone
    assert fmt_cer_wer(0.123, 0.351, "de") == "12.3 / 35.1" and fmt_cer_wer(0.2, 0.9, "ja") == "20.0"
    assert wer_note(["de", "zh-CN", "ja"]).startswith("No WER for ja, zh-CN:") and wer_note(["de"]) == ""
