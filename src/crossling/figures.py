"""The report's figures: analysis tables in → PNG bytes out (matplotlib, Agg backend, deterministic:
no timestamps or software metadata, fixed fonts and sizes, so the same data gives the same bytes).

Sized to be read where the report is read. At DPI 100 an image pixel is a CSS pixel (the report shows a
figure at its natural size, never wider than the page), so a FONT_PT text is FONT_PT × 100/96 CSS pt on a
laptop at 100 % zoom. Figures are at most MAX_WIDTH_IN wide, so they are not scaled down in an 800 px
window (768 px of content), and printed on A4 or Letter (about 690 CSS px of content inside the
report's margins) they shrink to ≥ 0.95 × their size: every text stays ≥ 9 pt on screen and on paper."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: never needs a display

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402

from crossling.markup import fmt_p  # noqa: E402

DPI = 100
FONT_PT = 9.5
MAX_WIDTH_IN = 7.2
_CHAR_IN = 0.62 * FONT_PT / 72  # width of an average DejaVu Sans character (digits: 0.636 em)
_LINE_IN = 1.45 * FONT_PT / 72  # one line of text with its leading

_STYLE = {"font.family": "DejaVu Sans", "font.size": FONT_PT, "axes.titlesize": FONT_PT + 0.5,
          "axes.labelsize": FONT_PT, "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT,
          "legend.fontsize": FONT_PT, "legend.title_fontsize": FONT_PT, "figure.titlesize": FONT_PT + 1,
          "figure.dpi": DPI, "svg.hashsalt": "crossling", "path.simplify": False, "text.usetex": False,
          "axes.spines.top": False, "axes.spines.right": False}
_COLOURS = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors  # 18 distinguishable line colours


def label(text) -> str:
    """Data text safe for matplotlib: '$' would otherwise start mathtext (or fail to parse)."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return buffer.getvalue()


def _figure(width: float, height: float):
    plt.rcParams.update(_STYLE)
    return plt.figure(figsize=(min(width, MAX_WIDTH_IN), min(height, 40)), layout="constrained")


def _text_width(texts) -> float:
    """Inches the longest of `texts` takes at FONT_PT."""
    return _CHAR_IN * max((len(str(t)) for t in texts), default=0)


def _note(fig, text: str) -> None:
    """A sentence under the plot that says how to read it, wrapped to the figure's width."""
    columns = int(fig.get_figwidth() / _CHAR_IN)
    fig.supxlabel(textwrap.fill(text, columns), fontsize=FONT_PT, ha="left", x=0.0, style="italic")


def _panels(fig, count: int, columns: int, **share) -> tuple[list, list, list]:
    """A grid of `count` panels, `columns` wide (extra cells hidden) -> (panels, the bottom panel of each
    column, the first panel of each row): who carries the x and y labels."""
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    grid = fig.subplots(rows, columns, squeeze=False, **share)
    for ax in grid.flat[count:]:
        ax.set_visible(False)
    panels = list(grid.flat[:count])
    bottoms = [panels[max(k for k in range(count) if k % columns == c)] for c in range(min(columns, count))]
    for ax in bottoms:
        ax.xaxis.set_tick_params(labelbottom=True)  # shared x hides them above a hidden cell otherwise
    return panels, bottoms, [panels[k] for k in range(0, count, columns)]


def _grid_height(count: int, columns: int, panel: float) -> float:
    return math.ceil(count / max(1, min(columns, count))) * panel


# --- heatmaps ------------------------------------------------------------------------------------------


def heatmap(matrix: pd.DataFrame, title: str, value_label: str = "CER", fmt: str = "{:.3f}",
            cmap: str = "viridis_r") -> bytes:
    """Rows × columns of numbers as coloured cells with their values written in (NaN cells blank).
    Columns that do not fit the width are wrapped into blocks stacked below each other."""
    values = matrix.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    norm = mcolors.Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
    return _heatmap(matrix, title, value_label, text=lambda v: fmt.format(v), cmap=plt.get_cmap(cmap), norm=norm,
                    extend="neither")


def relative_heatmap(matrix: pd.DataFrame, title: str, value_label: str = "CER relative to the target's median",
                     limit: float = 1.25) -> bytes:
    """Ratios (1 = no change) in a diverging map centred on 1: blue below (lower CER), red above. Colours
    saturate at `limit` and 1/`limit` (±25 % by default), so a ±3 % difference stays pale instead of being
    stretched over the whole scale; cells read as signed percentages."""
    if not limit > 1:
        raise ValueError(f"limit must be > 1 (a ratio), got {limit}")
    norm = mcolors.TwoSlopeNorm(vcenter=1.0, vmin=1 / limit, vmax=limit)
    return _heatmap(matrix, title, value_label, text=_percent_change, cmap=plt.get_cmap("RdBu_r"), norm=norm,
                    extend="both")


def _percent_change(ratio: float) -> str:
    change = round(100 * (ratio - 1))
    return f"{change:+d}%" if change else "0%"  # never '-0%'



def _heatmap(matrix: pd.DataFrame, title: str, value_label: str, *, text: Callable[[float], str], cmap, norm,
             extend: str) -> bytes:
    values = matrix.to_numpy(dtype=float)
    written = [text(v) for v in values[np.isfinite(values)]]
    cell = max(_text_width([*written, *map(str, matrix.columns), "000"]) + 0.12, 0.35)
    row_labels = _text_width(matrix.index) + 0.25
    per_block = max(1, int((MAX_WIDTH_IN - row_labels) / cell))
    blocks = [list(range(i, min(i + per_block, matrix.shape[1]))) for i in range(0, matrix.shape[1], per_block)]
    height = len(blocks) * (0.3 * matrix.shape[0] + 2 * _LINE_IN) + 1.0
    fig = _figure(max(3.5, row_labels + cell * min(per_block, matrix.shape[1])), height)  # room for the colour bar
    axes = fig.subplots(len(blocks), 1, squeeze=False)[:, 0]
    for ax, columns in zip(axes, blocks, strict=True):
        part = matrix.iloc[:, columns]
        padding = [" " * (n + 1) for n in range(len(blocks[0]) - len(columns))]  # blank cells: equal widths
        image = _cells(ax, part.reindex(columns=[*part.columns, *padding]), text, cmap, norm)
    fig.colorbar(image, ax=list(axes), label=label(value_label), location="bottom", shrink=0.6, aspect=40,
                 extend=extend)
    axes[0].set_title(label(title))
    return to_png(fig)


def _cells(ax, part: pd.DataFrame, text: Callable[[float], str], cmap, norm):
    values = part.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(part.shape[1]), [label(c) for c in part.columns])
    ax.xaxis.tick_top()
    ax.set_yticks(range(part.shape[0]), [label(r) for r in part.index])
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    for (i, j), value in np.ndenumerate(values):
        if math.isfinite(value):
            red, green, blue, _ = cmap(norm(value))
            colour = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"  # readable on the cell
            ax.text(j, i, text(value), ha="center", va="center", color=colour)
    return image


# --- per-seed results ----------------------------------------------------------------------------------


def language_boxplots(runs: pd.DataFrame, order: list[str], metric: str = "cer", columns: int = 3) -> bytes:
    """One panel per language, checkpoints on the y axis (names read horizontally, best first): every
    seed as a dot, their range as a line and their median as a bar (boxes mean little at 3 seeds)."""
    languages = sorted(runs["language"].unique())
    fig = _figure(MAX_WIDTH_IN, _grid_height(len(languages), columns, 0.19 * len(order) + 3 * _LINE_IN) + 0.3)
    panels, bottoms, _ = _panels(fig, len(languages), columns, sharey=True)
    for ax, language in zip(panels, languages, strict=True):
        _seed_strip(ax, runs[runs["language"] == language], order, metric)
        ax.set_title(label(language))
    for ax in bottoms:
        ax.set_xlabel(metric.upper())
    panels[0].set_yticks(range(len(order)), [label(c) for c in order])
    panels[0].set_ylim(len(order) - 0.5, -0.5)
    return to_png(fig)


def _seed_strip(ax, part: pd.DataFrame, order: list[str], metric: str) -> None:
    for i, checkpoint in enumerate(order):
        values = np.sort(part.loc[part["checkpoint"] == checkpoint, metric].dropna().to_numpy(dtype=float))
        if not len(values):
            continue
        ax.hlines(i, values[0], values[-1], color="grey", linewidth=1)
        ax.vlines(float(np.median(values)), i - 0.35, i + 0.35, color="black", linewidth=1.5)
        ax.plot(values, np.full(len(values), i), "o", color="tab:blue", markersize=3, alpha=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.grid(axis="x", color="#ddd", linewidth=0.6)
    ax.tick_params(axis="y", length=0)


def group_boxes(cells: pd.DataFrame, groups: pd.Series, title: str, metric: str = "CER") -> bytes:
    """Per checkpoint (rows, names horizontal): the seed-mean cells of each language group as a box (the
    middle half, median marked, whiskers to the extremes) with every language as a dot."""
    names = sorted(groups.dropna().unique())
    checkpoints = list(cells.columns)
    fig = _figure(_text_width(checkpoints) + 4.5, 1.2 + 0.24 * len(checkpoints) * max(1, len(names)))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(names))
    for g, group in enumerate(names):
        rows = groups[groups == group].index.intersection(cells.index)
        colour = _COLOURS[g % len(_COLOURS)]
        for i, checkpoint in enumerate(checkpoints):
            _range_box(ax, i + (g - (len(names) - 1) / 2) * height, cells.loc[rows, checkpoint].dropna().to_numpy(),
                       colour, 0.85 * height)
        ax.plot([], [], "s", color=colour, label=label(group))
    ax.set_yticks(range(len(checkpoints)), [label(c) for c in checkpoints])
    ax.set_ylim(len(checkpoints) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
    ax.use_sticky_edges = False  # a bar's edge would otherwise pin the axis to the lowest box, cutting its dots
    ax.autoscale_view()
    ax.set_xlabel(metric)
    fig.legend(loc="outside lower center", ncols=max(1, len(names)), frameon=False)
    ax.set_title(label(title))
    return to_png(fig)


def _range_box(ax, y: float, values: np.ndarray, colour, height: float) -> None:
    if not len(values):
        return
    low, q1, median, q3, high = np.quantile(values.astype(float), [0, 0.25, 0.5, 0.75, 1])
    ax.hlines(y, low, high, color=colour, linewidth=1)
    ax.barh(y, q3 - q1, left=q1, height=height, color=colour, alpha=0.45, edgecolor=colour)
    ax.vlines(median, y - height / 2, y + height / 2, color="black", linewidth=1.5)
    ax.plot(values, np.full(len(values), y), "o", color=colour, markersize=2.5)


# --- ranking ------------------------------------------------------------------------------------------


def _cliques(ranks: pd.Series, cd: float) -> list[tuple[int, int]]:
    """Maximal runs [i, j] of rank-ordered checkpoints whose rank spread is below the CD (the maximal
    cliques of "not significantly different" for a CD criterion are runs of neighbours in rank order)."""
    values = ranks.to_numpy()
    spans = []
    for i in range(len(values)):
        j = i
        while j + 1 < len(values) and values[j + 1] - values[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return spans


def critical_difference(ranks: pd.Series, cd: float, title: str, alpha: float | None = None,
                        blocks: int | None = None) -> bytes:
    """Demšar's critical-difference diagram: average ranks on an axis (1 = best, left), bars joining
    checkpoints whose ranks differ by less than the Nemenyi CD, names hanging below, and a sentence
    saying how to read it (with the significance level and the number of blocks, e.g. languages)."""
    ranks = ranks.sort_values(kind="stable")
    k = len(ranks)
    half = math.ceil(k / 2)
    cliques = _cliques(ranks, cd)
    names = [f"{label(name)} ({rank:.2f})" for name, rank in ranks.items()]
    side = _text_width(names) + 0.3
    fig = _figure(min(MAX_WIDTH_IN, 2 * side + 0.45 * k), 1.9 + 0.28 * (half + len(cliques)))
    ax = fig.add_subplot()
    top = 0.6 + 0.45 * len(cliques)  # label rows start below the clique bars
    axis = max(0.5, fig.get_figwidth() - 2 * side)  # inches for ranks 1..k; the names take `side` each
    margin = max(0.5, side * max(1, k - 1) / axis)  # rank units that hold a name
    ax.set_xlim(1 - margin, k + margin)
    ax.set_ylim(-(top + half + 0.3), 2.0)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", linewidth=1)
    for r in _rank_ticks(k):
        ax.vlines(r, 0, 0.15, color="black", linewidth=0.8)
        ax.text(r, 0.3, str(r), ha="center", va="bottom")
    ax.hlines(1.3, 1, 1 + cd, color="tab:red", linewidth=2)
    ax.text(1 + cd, 1.3, f"  CD = {cd:.2f}", ha="left", va="center", color="tab:red")
    for i, (rank, text) in enumerate(zip(ranks, names, strict=True)):
        left = i < half
        depth = -(top + (i if left else k - 1 - i))
        end = 1 - margin * 0.1 if left else k + margin * 0.1
        ax.plot([rank, rank, end], [0, depth, depth], color="black", linewidth=0.7)
        ax.text(end, depth, f" {text} " if left else f" {text}", ha="right" if left else "left", va="center")
    for n, (i, j) in enumerate(cliques):
        ax.hlines(-0.4 - 0.45 * n, ranks.iloc[i] - 0.05, ranks.iloc[j] + 0.05, color="tab:blue", linewidth=3)
    ax.set_title(label(title))
    _note(fig, cd_explanation(cd, alpha, blocks))
    return to_png(fig)


def cd_explanation(cd: float, alpha: float | None = None, blocks: int | None = None) -> str:
    """How to read a critical-difference diagram, in one or two sentences (also usable as a caption)."""
    level = f" at alpha {alpha:g}" if alpha is not None else ""
    over = f" over {blocks} languages" if blocks else ""
    return (f"Average rank{over} (1 = best). A blue bar joins checkpoints whose average ranks differ by less "
            f"than the critical difference CD = {cd:.2f} (red): the Nemenyi test cannot tell them apart{level}. "
            "Checkpoints not joined by any bar differ significantly. With few languages the CD is wide, so "
            "a bar can join checkpoints that the per-language tests separate.")


def _rank_ticks(k: int) -> list[int]:
    step = 1 if k <= 12 else 2 if k <= 24 else 5
    ticks = list(range(1, k + 1, step))
    return ticks + [k] if k - ticks[-1] >= step else ticks


# --- factors -------------------------------------------------------------------------------------------


def correlation_panels(frame: pd.DataFrame, x_columns: Sequence[str], y: str, *, rho: Sequence[float],
                       p_values: Sequence[float], p_label: str, y_label: str) -> bytes:
    """`scatter_panels` titled with one correlation and one p-value per panel; pass p-values already
    corrected for the number of panels and say how in `p_label` (e.g. 'Holm-adjusted p'). A panel whose
    p is NaN (its correlation cannot be tested) gets no fit line and says so: a line is never drawn
    without the p that says whether it means anything."""
    titles = [f"{column}: rho = {r:.2f}, " + (f"{p_label} = {fmt_p(p)}" if math.isfinite(p) else "cannot be tested here")
              for column, r, p in zip(x_columns, rho, p_values, strict=True)]
    fits = [math.isfinite(p) for p in p_values]
    return scatter_panels(frame, list(x_columns), y, titles, y_label, fits=fits)


def scatter_panels(frame: pd.DataFrame, x_columns: list[str], y: str, titles: list[str], y_label: str,
                   columns: int = 2, fits: Sequence[bool] | None = None) -> bytes:
    """One scatter panel per x column against the same y, in a grid, each with a Theil-Sen line (a
    median-based fit, in the spirit of a rank correlation) where the points allow one and `fits` says so."""
    fig = _figure(MAX_WIDTH_IN, _grid_height(len(x_columns), columns, 2.7) + 0.3)
    panels, _, firsts = _panels(fig, len(x_columns), columns, sharey=True)
    fits = [True] * len(x_columns) if fits is None else list(fits)
    for ax, column, title, fit in zip(panels, x_columns, titles, fits, strict=True):
        part = frame[[column, y]].dropna().astype(float)
        ax.plot(part[column], part[y], "o", markersize=3, alpha=0.5, color="tab:blue")
        if fit:
            _theil_sen_line(ax, part[column].to_numpy(), part[y].to_numpy())
        ax.set_xlabel(label(f"{column} distance"))
        ax.set_title(textwrap.fill(label(title), int(fig.get_figwidth() / min(columns, len(panels)) / _CHAR_IN)))
        ax.xaxis.set_major_locator(MaxNLocator(4))
    for ax in firsts:
        ax.set_ylabel(label(y_label))
    return to_png(fig)


def _theil_sen_line(ax, x: np.ndarray, y: np.ndarray) -> None:
    from scipy.stats import theilslopes

    if len(x) < 3 or np.ptp(x) == 0:
        return
    slope, intercept, _, _ = theilslopes(y, x)
    ends = np.array([x.min(), x.max()])
    ax.plot(ends, intercept + slope * ends, color="tab:red", linewidth=1.5)


def gender_scatter(runs: pd.DataFrame, title: str) -> bytes:
    """Per run: men's CER (x) against women's (y), with the diagonal of no gap."""
    fig = _figure(4.2, 4.2)
    ax = fig.add_subplot()
    part = runs[["cer_male", "cer_female"]].dropna().astype(float)
    ax.plot(part["cer_male"], part["cer_female"], "o", markersize=3, alpha=0.6)
    if len(part):
        low, high = float(part.min().min()), float(part.max().max())
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8, label="no gap")
        ax.legend(loc="upper left", frameon=False)
    ax.set_xlabel("CER, male speakers")
    ax.set_ylabel("CER, female speakers")
    ax.set_title(label(title))
    return to_png(fig)


# --- cost and variance ---------------------------------------------------------------------------------


def cost_bars(cost: pd.DataFrame, column: str, title: str, x_label: str) -> bytes:
    """Horizontal bars of one cost column per checkpoint (mean, with sd whiskers when present)."""
    fig = _figure(_text_width(cost.index) + 4.0, 1.0 + 0.27 * len(cost))
    ax = fig.add_subplot()
    errors = cost.get(f"{column}_sd")
    ax.barh(range(len(cost)), cost[column], xerr=None if errors is None else errors.fillna(0), color="tab:gray")
    ax.set_yticks(range(len(cost)), [label(c) for c in cost.index])
    ax.set_ylim(len(cost) - 0.5, -0.5)
    ax.set_xlabel(label(x_label))
    ax.set_title(label(title))
    return to_png(fig)


def variance_bars(shares: pd.DataFrame, title: str) -> bytes:
    fig = _figure(_text_width(shares["source"]) + 4.0, 0.9 + 0.3 * len(shares))
    ax = fig.add_subplot()
    ax.barh(range(len(shares)), shares["share"] * 100, color="tab:green")
    ax.set_yticks(range(len(shares)), [label(s) for s in shares["source"]])
    ax.set_ylim(len(shares) - 0.5, -0.5)
    ax.set_xlabel("% of CER variance (sequential sums of squares)")
    ax.set_title(label(title))
    return to_png(fig)


# --- training curves and error analysis ---------------------------------------------------------------


def curves(summary: pd.DataFrame, value_label: str, title: str, log_y: bool = False, columns: int = 3) -> bytes:
    """One panel per language, one line per checkpoint: the median over seeds at each step, a band from
    the lowest to the highest seed. `summary`: checkpoint, language, step, median, low, high."""
    languages = sorted(summary["language"].unique())
    checkpoints = sorted(summary["checkpoint"].unique())
    fig = _figure(MAX_WIDTH_IN, _grid_height(len(languages), columns, 2.2) + 0.4 + _legend_height(checkpoints))
    panels, bottoms, firsts = _panels(fig, len(languages), columns, sharex=True)
    for ax, language in zip(panels, languages, strict=True):
        _curve_panel(ax, summary[summary["language"] == language], checkpoints, log_y)
        ax.set_title(label(language))
    for ax in bottoms:
        ax.set_xlabel("step")
    for ax in firsts:
        ax.set_ylabel(label(value_label))
    handles = [plt.Line2D([], [], color=_COLOURS[i % len(_COLOURS)], label=label(c)) for i, c in enumerate(checkpoints)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(checkpoints)), frameon=False)
    fig.suptitle(label(title))
    return to_png(fig)


def _legend_height(names) -> float:
    return _LINE_IN * math.ceil(len(names) / 3)


def _curve_panel(ax, part: pd.DataFrame, checkpoints: list[str], log_y: bool) -> None:
    for i, checkpoint in enumerate(checkpoints):
        line = part[part["checkpoint"] == checkpoint].sort_values("step")
        if line.empty:
            continue
        colour = _COLOURS[i % len(_COLOURS)]
        ax.fill_between(line["step"], line["low"], line["high"], color=colour, alpha=0.2, linewidth=0)
        ax.plot(line["step"], line["median"], color=colour, linewidth=1.3, marker="o" if len(line) < 15 else None,
                markersize=3)
    if log_y:
        ax.set_yscale("log")
        for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))  # '3', not 3×10⁰
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.grid(color="#eee", linewidth=0.6)


def length_curves(frame: pd.DataFrame, title: str, line: str = "checkpoint", columns: int = 3) -> bytes:
    """CER by utterance length: one panel per language, one line per value of the `line` column over the
    length bins. `frame`: language, `line`, length_bin (labels in order), cer."""
    languages = sorted(frame["language"].unique())
    names = sorted(frame[line].unique())
    fig = _figure(MAX_WIDTH_IN, _grid_height(len(languages), columns, 2.4) + 0.4 + _legend_height(names))
    panels, _, firsts = _panels(fig, len(languages), columns, sharey=True)
    for ax, language in zip(panels, languages, strict=True):
        part = frame[frame["language"] == language]
        bins = list(dict.fromkeys(part["length_bin"]))
        for i, name in enumerate(names):
            points = part[part[line] == name].set_index("length_bin").reindex(bins)
            ax.plot(range(len(bins)), points["cer"], marker="o", markersize=3, color=_COLOURS[i % len(_COLOURS)])
        ax.set_xticks(range(len(bins)), [label(b) for b in bins])
        ax.set_title(label(language))
        ax.set_xlabel("reference characters")
    for ax in firsts:
        ax.set_ylabel("CER")
    handles = [plt.Line2D([], [], color=_COLOURS[i % len(_COLOURS)], marker="o", label=label(n))
               for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(2, len(names)), frameon=False)
    fig.suptitle(label(title))
    return to_png(fig)
