"""Report markup: one table structure (cells with bold and superscript) rendered as HTML, Markdown and
LaTeX, and the escaping that keeps text from the data inert in each of them."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

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

    def html(self) -> str:
        head = "".join(f"<th>{html_escape(h)}</th>" for h in self.header)
        body = "\n".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in self.rows)
        return (f'<table id="table-{html_escape(self.name)}"><caption>{html_escape(self.caption)}</caption>\n'
                f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>")

    def markdown(self) -> str:
        lines = ["| " + " | ".join(markdown_escape(h) for h in self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in self.rows]
        return f"*{markdown_escape(self.caption)}*\n\n" + "\n".join(lines)

    def latex(self) -> str:
        spec = "l" + "r" * (len(self.header) - 1)
        lines = [r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\hline",
                 " & ".join(latex_escape(h) for h in self.header) + r" \\", r"\hline"]
        lines += [" & ".join(_tex_cell(c) for c in row) + r" \\" for row in self.rows]
        lines += [r"\hline", r"\end{tabular}", rf"\caption{{{latex_escape(self.caption)}}}",
                  rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', self.name)}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"


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
