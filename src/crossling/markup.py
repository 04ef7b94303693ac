"""Report markup: one table structure (cells with bold and superscript) rendered as HTML, Markdown and
LaTeX (booktabs, sized to a column or a page), the escaping that keeps text from the data inert in each,
and number formats for people (durations in s/min/h, memory in MB/GB, WER only where words are spaced)."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crossling.text import is_unsegmented

# --- escaping and formatting -------------------------------------------------------------------------

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def latex_escape(text) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in " ".join(str(text).split()))


def html_escape(text) -> str:
    return html.escape(str(text), quote=True)


def markdown_escape(text) -> str:
    """Inline Markdown: HTML-escaped, table pipes and emphasis/link characters backslash-escaped."""
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def fmt(value, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


# --- human units ------------------------------------------------------------------------------------

_DURATION_UNITS = (("s", 1.0), ("min", 60.0), ("h", 3600.0))
_SIZE_UNITS = (("MB", 1e6), ("GB", 1e9))
_MIB = 2**20  # peak memory is recorded in MiB (ru_maxrss / 1024, torch's bytes / 2**20)


def duration_unit(seconds: Iterable[float]) -> tuple[str, float]:
    """One unit for a column of durations (so rows compare at a glance): the largest of s, min, h in which
    the median finite value is at least 2 ('90 s', not '1.5 min'; '80 min', not '1.3 h') -> (unit name,
    seconds per unit)."""
    return _unit(seconds, _DURATION_UNITS, least=2.0)


def size_unit(megabytes: Iterable[float]) -> tuple[str, float]:
    """One unit for a column of memory sizes given in MiB -> (MB or GB, MiB per unit)."""
    name, scale = _unit([m * _MIB for m in megabytes], _SIZE_UNITS)
    return name, scale / _MIB


def _unit(values: Iterable[float], units: tuple[tuple[str, float], ...], least: float = 1.0) -> tuple[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    median = float(np.median(finite)) if finite else 0.0
    return next(((n, s) for n, s in reversed(units) if median >= least * s), units[0])


def fmt_duration(seconds: float, unit: tuple[str, float] | None = None) -> str:
    """'42 s', '3.5 min', '1.2 h' (in `unit` when given, e.g. from `duration_unit` of the column)."""
    name, scale = unit or duration_unit([seconds])
    return _in_unit(seconds, name, scale)


def fmt_size(megabytes: float, unit: tuple[str, float] | None = None) -> str:
    """MiB as '735 MB' / '1.2 GB' (decimal units: 1 GB = 10^9 bytes)."""
    name, scale = unit or size_unit([megabytes])
    return _in_unit(megabytes, name, scale)


def _in_unit(value: float, name: str, scale: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    scaled = value / scale
    digits = 0 if abs(scaled) >= 10 else 1 if abs(scaled) >= 1 or scaled == 0 else 2
    return f"{scaled:.{digits}f} {name}"


# --- CER beside WER -----------------------------------------------------------------------------------


def wer_applies(language: str) -> bool:
    """WER is a word error rate only where words are written with spaces between them."""
    return not is_unsegmented(language)


def without_unsegmented_wer(frame: pd.DataFrame, wer_columns: Iterable[str],
                            language_column: str = "language") -> pd.DataFrame:
    """A copy of `frame` whose WER columns are NaN (shown as '–') in rows of unsegmented languages."""
    out = frame.copy()
    unsegmented = ~out[language_column].astype(str).map(wer_applies)
    for column in wer_columns:
        out[column] = out[column].astype(float).mask(unsegmented)
    return out


def wer_note(languages: Iterable[str]) -> str:
    """The sentence a table or figure with WER owes its reader ('' when every language has WER)."""
    left_out = sorted({str(lang) for lang in languages if not wer_applies(str(lang))})
    if not left_out:
        return ""
    return (f"No WER for {', '.join(left_out)}: written without spaces between words, so a 'word' error "
            "rate would count characters or phrases.")


def fmt_cer_wer(cer: float, wer: float, language: str) -> str:
    """'12.3 / 35.1' (CER % / WER %), or CER alone where WER does not apply."""
    if not wer_applies(language) or wer is None or not math.isfinite(wer):
        return fmt(100 * cer, 1) if cer is not None else "–"
    return f"{fmt(100 * cer, 1)} / {fmt(100 * wer, 1)}"


# --- tables as cells: one structure, three renderers -----------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False
    sup: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    @classmethod
    def from_frame(cls, name: str, caption: str, frame: pd.DataFrame, digits: int = 3) -> Table:
        rows = tuple(tuple(Cell(fmt(v, digits)) for v in row) for row in frame.itertuples(index=False))
        return cls(name, caption, tuple(str(c) for c in frame.columns), rows)

    def html(self, caption_outside: bool = False) -> str:
        """The table; with `caption_outside`, its caption is a paragraph before it (as wide as the page,
        not squeezed to the width of a narrow table), named by the table's aria-describedby."""
        head = "".join(f"<th>{html_escape(h)}</th>" for h in self.header)
        body = "\n".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in self.rows)
        name = html_escape(self.name)
        table = f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"
        if caption_outside:
            return (f'<p class="caption" id="caption-{name}">{html_escape(self.caption)}</p>\n'
                    f'<div class="scroll"><table id="table-{name}" aria-describedby="caption-{name}">\n{table}</div>')
        return f'<table id="table-{name}"><caption>{html_escape(self.caption)}</caption>\n{table}'


    def markdown(self) -> str:
        lines = ["| " + " | ".join(markdown_escape(h) for h in self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in self.rows]
        return f"*{markdown_escape(self.caption)}*\n\n" + "\n".join(lines)

    @property
    def empty(self) -> bool:
        return not self.rows

    def latex(self) -> str:
        """A booktabs table that fits: one column of a two-column paper (`table`), else the page
        (`table*`), else split into blocks of columns that each fit the page (first column repeated);
        a block still too wide is scaled down with \\resizebox. Needs booktabs and graphicx."""
        blocks = _column_blocks(self._widths(), LATEX_PAGE_CHARS)
        fits_column = len(blocks) == 1 and _tabular_chars(self._widths()) <= LATEX_COLUMN_CHARS
        env = "table" if fits_column else "table*"
        lines = [LATEX_PACKAGES, rf"\begin{{{env}}}[tbp]", r"\centering", r"\small",
                 rf"\caption{{{latex_escape(self.caption)}}}",
                 rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', self.name)}}}"]
        for k, columns in enumerate(blocks):
            lines += [r"\medskip"] if k else []
            lines += self._tabular(columns)
        return "\n".join([*lines, rf"\end{{{env}}}"]) + "\n"

    def _widths(self) -> list[int]:
        """Printed characters of each column's widest cell (a superscript counts half)."""
        cells = [[(len(c.text) + len(c.sup) // 2) for c in row] for row in self.rows]
        return [max([len(h), *(row[i] for row in cells)]) for i, h in enumerate(self.header)]

    def _tabular(self, columns: list[int]) -> list[str]:
        spec = "l" + "r" * (len(columns) - 1)
        lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                 " & ".join(latex_escape(self.header[i]) for i in columns) + r" \\", r"\midrule"]
        lines += [" & ".join(_tex_cell(row[i]) for i in columns) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        if _tabular_chars([self._widths()[i] for i in columns]) > LATEX_PAGE_CHARS:
            lines = [r"\resizebox{\textwidth}{!}{%", *lines, "}"]
        return lines


#: The first line of every .tex table: what a document must load to typeset it.
LATEX_PACKAGES = r"% Requires \usepackage{booktabs} and \usepackage{graphicx} (for \resizebox) in the preamble."
#: Characters of \small text in one column of a two-column paper (3.3 in) and across its page (7 in):
#: about 14.5 characters per inch of \small Computer Modern digits.
LATEX_COLUMN_CHARS = 48
LATEX_PAGE_CHARS = 100
_COLUMN_GAP_CHARS = 2  # \tabcolsep on both sides of a column, 12 pt, is about two characters


def _tabular_chars(widths: list[int]) -> int:
    return sum(widths) + _COLUMN_GAP_CHARS * len(widths)


def _column_blocks(widths: list[int], limit: int) -> list[list[int]]:
    """Column indices in blocks that each fit `limit` characters, each block led by column 0."""
    blocks: list[list[int]] = [[0]]
    for i in range(1, len(widths)):
        if len(blocks[-1]) > 1 and _tabular_chars([widths[j] for j in [*blocks[-1], i]]) > limit:
            blocks.append([0])
        blocks[-1].append(i)
    return blocks


def _html_cell(cell: Cell) -> str:
    text = html_escape(cell.text)
    text = f"<b>{text}</b>" if cell.bold else text
    return f"<td>{text}<sup>{html_escape(cell.sup)}</sup></td>" if cell.sup else f"<td>{text}</td>"


def _md_cell(cell: Cell) -> str:
    text = markdown_escape(cell.text)
    text = f"**{text}**" if cell.bold and text else text
    return f"{text}<sup>{markdown_escape(cell.sup)}</sup>" if cell.sup else text


def _tex_cell(cell: Cell) -> str:
    text = latex_escape(cell.text).replace("±", r"$\pm$")
    text = rf"\textbf{{{text}}}" if cell.bold else text
    return rf"{text}\textsuperscript{{{latex_escape(cell.sup)}}}" if cell.sup else text
