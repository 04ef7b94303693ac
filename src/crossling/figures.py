"""The report's figures: analysis tables in → PNG bytes out (matplotlib, Agg backend, deterministic:
no timestamps or software metadata, fixed fonts and sizes, so the same data gives the same bytes)."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # before pyplot: never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

_STYLE = {"font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 9, "figure.dpi": 100,
          "svg.hashsalt": "crossling", "path.simplify": False, "text.usetex": False}


def label(text) -> str:
    """Data text safe for matplotlib: '$' would otherwise start mathtext (or fail to parse)."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return buffer.getvalue()


def _figure(width: float, height: float):
    plt.rcParams.update(_STYLE)
    return plt.figure(figsize=(min(width, 30), min(height, 40)))


def heatmap(matrix: pd.DataFrame, title: str, value_label: str = "CER", fmt: str = "{:.3f}",
            cmap: str = "viridis_r") -> bytes:
    """Rows × columns of numbers as coloured cells with their values written in (NaN cells blank)."""
    rows, cols = matrix.shape
    fig = _figure(1.2 + 0.62 * cols, 1.0 + 0.32 * rows)
    ax = fig.add_subplot()
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    ax.set_xticks(range(cols), [label(c) for c in matrix.columns], rotation=60, ha="right")
    ax.set_yticks(range(rows), [label(r) for r in matrix.index])
    for (i, j), value in np.ndenumerate(values):
        if math.isfinite(value):
            red, green, blue, _ = image.cmap(image.norm(value))
            colour = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"  # readable on the cell
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, label=label(value_label), shrink=0.8)
    ax.set_title(label(title))
    return to_png(fig)


def language_boxplots(runs: pd.DataFrame, order: list[str], metric: str = "cer", columns: int = 3) -> bytes:
    """One panel per language: the metric of every seed per checkpoint (box + points), shared order."""
    languages = sorted(runs["language"].unique())
    rows = math.ceil(len(languages) / columns)
    fig = _figure(5.0 * columns, 2.2 * rows + 0.4 * max(1, len(order) / 10))
    for k, language in enumerate(languages):
        ax = fig.add_subplot(rows, columns, k + 1)
        part = runs[runs["language"] == language]
        data = [part.loc[part["checkpoint"] == c, metric].to_numpy() for c in order]
        positions = [i for i, d in enumerate(data) if len(d)]
        ax.boxplot([data[i] for i in positions], positions=positions, widths=0.6, showfliers=False)
        xs = np.concatenate([np.full(len(data[i]), i) for i in positions]) if positions else []
        ys = np.concatenate([data[i] for i in positions]) if positions else []
        ax.plot(xs, ys, ".", color="tab:blue", markersize=3)  # one artist per panel: fast to draw
        ax.set_xticks(range(len(order)), [label(c) for c in order] if k >= len(languages) - columns else [],
                      rotation=70, ha="right", fontsize=6)
        ax.set_xlim(-0.7, len(order) - 0.3)
        ax.set_title(label(language))
        ax.set_ylabel(metric.upper())
    fig.tight_layout()
    return to_png(fig)


def _cliques(ranks: pd.Series, cd: float) -> list[tuple[int, int]]:
    """Maximal runs [i, j] of rank-ordered checkpoints whose rank spread is below the CD."""
    values = ranks.to_numpy()
    spans = []
    for i in range(len(values)):
        j = i
        while j + 1 < len(values) and values[j + 1] - values[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return spans


def critical_difference(ranks: pd.Series, cd: float, title: str) -> bytes:
    """Demšar's critical-difference diagram: average ranks on an axis (1 = best, left), bars joining
    checkpoints whose ranks differ by less than the Nemenyi CD, names hanging below."""
    ranks = ranks.sort_values(kind="stable")
    k = len(ranks)
    half = math.ceil(k / 2)
    cliques = _cliques(ranks, cd)
    top = 0.5 + 0.4 * len(cliques)  # label rows start below the clique bars
    fig = _figure(9.0, 1.4 + 0.2 * (half + top))
    ax = fig.add_subplot()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(top + half + 0.5), 2.2)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", linewidth=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.15, color="black", linewidth=0.8)
        ax.text(r, 0.3, str(r), ha="center", va="bottom", fontsize=7)
    ax.hlines(1.3, 1, 1 + cd, color="tab:red", linewidth=2)
    ax.text(1 + cd / 2, 1.45, f"CD = {cd:.2f}", ha="center", va="bottom", color="tab:red", fontsize=7)
    for i, (name, rank) in enumerate(ranks.items()):
        left = i < half
        depth = -(top + (i if left else k - 1 - i))
        end = 0.6 if left else k + 0.4
        ax.plot([rank, rank, end], [0, depth, depth], color="black", linewidth=0.7)
        ax.text(end + (-0.05 if left else 0.05), depth, f"{label(name)} ({rank:.2f})",
                ha="right" if left else "left", va="center", fontsize=7)
    for n, (i, j) in enumerate(cliques):
        y = -0.4 - 0.4 * n
        ax.hlines(y, ranks.iloc[i] - 0.05, ranks.iloc[j] + 0.05, color="tab:blue", linewidth=2.5)
    ax.set_title(label(title))
    return to_png(fig)


def group_boxes(cells: pd.DataFrame, groups: pd.Series, title: str, metric: str = "CER") -> bytes:
    """Per checkpoint: the seed-mean cells of each language group side by side."""
    names = sorted(groups.dropna().unique())
    checkpoints = list(cells.columns)
    fig = _figure(1.2 + 0.55 * len(checkpoints) * len(names) / 2, 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    for g, group in enumerate(names):
        rows = groups[groups == group].index.intersection(cells.index)
        data = [cells.loc[rows, c].dropna().to_numpy() for c in checkpoints]
        positions = [i + (g - (len(names) - 1) / 2) * width for i in range(len(checkpoints))]
        keep = [i for i, d in enumerate(data) if len(d)]
        parts = ax.boxplot([data[i] for i in keep], positions=[positions[i] for i in keep], widths=width * 0.9,
                           patch_artist=True, showfliers=False)
        colour = plt.get_cmap("tab10")(g % 10)
        for box in parts["boxes"]:
            box.set_facecolor(colour)
            box.set_alpha(0.6)
        ax.plot([], [], "s", color=colour, label=label(group))
    ax.set_xticks(range(len(checkpoints)), [label(c) for c in checkpoints], rotation=60, ha="right")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.set_title(label(title))
    return to_png(fig)


def scatter_panels(frame: pd.DataFrame, x_columns: list[str], y: str, titles: list[str], y_label: str) -> bytes:
    """One scatter panel per x column against the same y."""
    fig = _figure(3.0 * len(x_columns), 3.0)
    for k, (column, title) in enumerate(zip(x_columns, titles, strict=True)):
        ax = fig.add_subplot(1, len(x_columns), k + 1)
        part = frame[[column, y]].dropna()
        ax.plot(part[column], part[y], "o", markersize=3, alpha=0.7)
        ax.set_xlabel(label(column))
        if k == 0:
            ax.set_ylabel(label(y_label))
        ax.set_title(label(title), fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def gender_scatter(runs: pd.DataFrame, title: str) -> bytes:
    """Per run: men's CER (x) against women's (y), with the diagonal of no gap."""
    fig = _figure(4.0, 4.0)
    ax = fig.add_subplot()
    part = runs[["cer_male", "cer_female"]].dropna().astype(float)
    ax.plot(part["cer_male"], part["cer_female"], "o", markersize=3, alpha=0.6)
    if len(part):
        low, high = float(part.min().min()), float(part.max().max())
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
    ax.set_xlabel("CER, male speakers")
    ax.set_ylabel("CER, female speakers")
    ax.set_title(label(title))
    return to_png(fig)


def cost_bars(cost: pd.DataFrame, column: str, title: str, x_label: str) -> bytes:
    """Horizontal bars of one cost column per checkpoint (mean, with sd whiskers when present)."""
    fig = _figure(6.0, 1.0 + 0.25 * len(cost))
    ax = fig.add_subplot()
    errors = cost.get(f"{column}_sd")
    ax.barh(range(len(cost)), cost[column], xerr=None if errors is None else errors.fillna(0), color="tab:gray")
    ax.set_yticks(range(len(cost)), [label(c) for c in cost.index])
    ax.invert_yaxis()
    ax.set_xlabel(label(x_label))
    ax.set_title(label(title))
    return to_png(fig)


def variance_bars(shares: pd.DataFrame, title: str) -> bytes:
    fig = _figure(5.0, 0.8 + 0.3 * len(shares))
    ax = fig.add_subplot()
    ax.barh(range(len(shares)), shares["share"] * 100, color="tab:green")
    ax.set_yticks(range(len(shares)), [label(s) for s in shares["source"]])
    ax.invert_yaxis()
    ax.set_xlabel("% of CER variance (sequential sums of squares)")
    ax.set_title(label(title))
    return to_png(fig)
