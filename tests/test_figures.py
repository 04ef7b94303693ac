"""Figures people can read: ≥ 9 pt text on screen and on paper, horizontal tick labels that do not overlap,
a diverging map centred on 'no change', fit lines with the caller's p-values, deterministic bytes."""

import itertools
import struct

import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from analysis_factory import synthetic_table
from matplotlib.backends.backend_agg import FigureCanvasAgg

from crossling import factors, figures, stats
from crossling.report import analyse, checkpoint_order

PRINT_PX = 690  # CSS px of content printing the report on A4 (8.27 in minus Chrome's margins and the page's)
NARROW_PX = 768  # content of an 800 px window


@pytest.fixture(scope="module")
def drawn():
    """Every figure of the full synthetic study (16 checkpoints × 18 languages), with the Figure objects."""
    a = analyse(synthetic_table())
    order = checkpoint_order(a)
    matrix = stats.cell_means(a.runs).T.reindex(order)
    means = stats.cell_means(a.runs)
    cells = means.div(means.median(axis=1), axis=0).stack().rename("relative CER").reset_index()
    typology = cells.merge(a.distances, on=["checkpoint", "language"])
    families = pd.Series({lang: factors.indo_european(lang) for lang in matrix.columns})
    curve = _curve_summary(order, sorted(a.runs["language"].unique()))
    makers = {
        "critical_difference": lambda: figures.critical_difference(a.friedman.average_ranks, a.friedman.cd, "CD",
                                                                   alpha=0.05, blocks=18),
        "heatmap": lambda: figures.heatmap(matrix, "Test CER"),
        "boxplots": lambda: figures.language_boxplots(a.runs, order),
        "transfer": lambda: figures.relative_heatmap(a.transfer.div(a.transfer.median(axis=0), axis=1), "transfer"),
        "families": lambda: figures.group_boxes(matrix.T[order], families, "families"),
        "families_one_language_each": lambda: figures.group_boxes(  # every box is one value wide
            pd.DataFrame({"zoo-es": [0.73, 0.76], "zoo-random": [1.0, 1.0]}, index=["pt", "tr"]),
            pd.Series({"pt": "Indo-European", "tr": "other"}), "families"),
        "typology": lambda: figures.correlation_panels(typology, list(a.typology["distance"]), "relative CER",
                                                       rho=list(a.typology["rho"]),
                                                       p_values=[0.0123, 0.2, 1.0, 0.0004, 0.05],
                                                       p_label="Holm p", y_label="CER / median"),
        "gender": lambda: figures.gender_scatter(a.gender_runs, "gender"),
        "variance": lambda: figures.variance_bars(a.variance, "variance"),
        "cost": lambda: figures.cost_bars(a.cost.reindex(order), "wall_hours", "cost", "hours"),
        "curves": lambda: figures.curves(curve, "dev CER", "Dev CER during training"),
        "log_curves": lambda: figures.curves(curve, "CTC loss", "Training loss", log_y=True),
        "length": lambda: figures.length_curves(_length_frame(order[:2]), "CER by length"),
    }
    out = {}
    render = figures.to_png
    for name, make in makers.items():
        captured = []
        figures.to_png = lambda fig, captured=captured: captured.append(fig) or render(fig)
        try:
            png = make()
        finally:
            figures.to_png = render
        out[name] = (captured[0], png)
    return out


def _curve_summary(checkpoints, languages) -> pd.DataFrame:
    rows = [{"checkpoint": c, "language": lang, "step": step, "median": 1 / (1 + step / 100 + i),
             "low": 0.9 / (1 + step / 100 + i), "high": 1.1 / (1 + step / 100 + i)}
            for i, c in enumerate(checkpoints) for lang in languages for step in range(0, 4001, 500)]
    return pd.DataFrame(rows)


def _length_frame(checkpoints) -> pd.DataFrame:
    bins = ["1–20", "21–40", "41–80", "81+"]
    return pd.DataFrame([{"language": lang, "checkpoint": c, "length_bin": b, "cer": 0.1 * (k + 1) + 0.05 * i}
                         for lang in ("de", "ja", "pt", "tr") for i, c in enumerate(checkpoints)
                         for k, b in enumerate(bins)])


def _png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


def _texts(fig):
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


def test_every_text_is_at_least_9_pt_on_a_laptop_in_an_800_px_window_and_on_paper(drawn):
    for name, (fig, png) in drawn.items():
        width, _ = _png_size(png)
        smallest = min(t.get_fontsize() for t in _texts(fig))
        for available in (1368, NARROW_PX, PRINT_PX):  # the 1400 px page, an 800 px window, A4 paper
            shown = smallest * figures.DPI / 96 * min(1.0, available / width)  # CSS pt as displayed
            assert shown >= 9.0, f"{name}: {shown:.1f} pt at {available} px (figure {width} px wide)"


def test_tick_labels_are_horizontal_and_do_not_overlap(drawn):
    for name, (fig, _) in drawn.items():
        FigureCanvasAgg(fig).draw()  # closed figures lost their canvas: lay them out again
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
                shown = [t for t in labels if t.get_visible() and t.get_text().strip()]
                assert all(t.get_rotation() == 0 for t in shown), f"{name}: rotated tick labels"
                boxes = [t.get_window_extent(renderer) for t in shown]
                for one, other in itertools.combinations(boxes, 2):
                    assert not one.overlaps(other), f"{name}: tick labels overlap"


def test_figures_are_deterministic(drawn):
    a = analyse(synthetic_table(checkpoints=("lv60", "xlsr53", "vp-es"), languages=("de", "ja", "es")))
    first = figures.critical_difference(a.friedman.average_ranks, a.friedman.cd, "CD")
    assert figures.critical_difference(a.friedman.average_ranks, a.friedman.cd, "CD") == first
    assert _png_size(drawn["heatmap"][1])[0] > 300


def _image_colour(fig, value: float):
    image = fig.axes[0].images[0]
    return np.array(image.cmap(image.norm(value))[:3])


def test_relative_heatmap_is_centred_on_no_change_with_a_meaningful_range():
    """±3 % reads pale, not as the ends of the scale (the old map stretched 0.97–1.03 from deep red to deep
    green); 1 is white-ish; ±25 % and beyond saturate; cells read as signed percentages."""
    small = pd.DataFrame([[0.97, 1.0], [1.03, 1.0]], index=["es", "nl"], columns=["pt", "de"])
    captured = []
    render = figures.to_png
    figures.to_png = lambda fig: captured.append(fig) or render(fig)
    try:
        figures.relative_heatmap(small, "t")
    finally:
        figures.to_png = render
    fig = captured[0]
    luminance = np.array([0.299, 0.587, 0.114])
    assert _image_colour(fig, 1.0) @ luminance > 0.9
    assert _image_colour(fig, 1.03) @ luminance > 0.75 and _image_colour(fig, 0.97) @ luminance > 0.75
    assert _image_colour(fig, 1.25) @ luminance < 0.45 and _image_colour(fig, 0.8) @ luminance < 0.45
    assert np.allclose(_image_colour(fig, 2.0), _image_colour(fig, 1.25))  # saturates beyond the limit
    assert {t.get_text() for t in _texts(fig)} >= {"-3%", "+3%", "0%"}
    with pytest.raises(ValueError, match="limit must be > 1"):
        figures.relative_heatmap(small, "t", limit=0.9)


def test_wide_heatmaps_wrap_their_columns_into_blocks(drawn):
    fig, png = drawn["heatmap"]
    grids = [ax for ax in fig.axes if ax.images]
    assert len(grids) >= 2 and _png_size(png)[0] <= figures.MAX_WIDTH_IN * figures.DPI + 30
    languages = [t.get_text() for ax in grids for t in ax.get_xticklabels() if t.get_text().strip()]
    assert languages == sorted(synthetic_table()["language"].unique())  # every column once, in order


def test_typology_panels_have_fit_lines_and_the_callers_p_values(drawn):
    fig, _ = drawn["typology"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 5 and len({ax.get_position().x0 for ax in panels}) == 2  # a grid of 2 columns
    titles = [ax.get_title() for ax in panels]
    assert titles[0].startswith("genetic: rho = ") and "Holm p = 0.012" in titles[0]
    assert "Holm p = 1.000" in titles[2] and "Holm p = 4.0e-04" in titles[3]
    for ax in panels:
        assert sum(line.get_color() == "tab:red" for line in ax.get_lines()) == 1


def test_an_untestable_typology_panel_has_no_fit_line(monkeypatch):
    """A fit line is never shown without the p that says whether it means anything."""
    frame = pd.DataFrame({"genetic": np.linspace(0, 1, 12), "geographic": np.linspace(1, 0, 12),
                          "relative CER": np.linspace(0.9, 1.1, 12)})
    captured = []
    render = figures.to_png
    monkeypatch.setattr(figures, "to_png", lambda fig: captured.append(fig) or render(fig))
    figures.correlation_panels(frame, ["genetic", "geographic"], "relative CER", rho=[0.9, -0.9],
                               p_values=[0.01, float("nan")], p_label="Holm p", y_label="CER / median")
    tested, untested = [ax for ax in captured[0].axes if ax.get_visible()]
    assert "Holm p = 0.010" in tested.get_title() and "cannot be tested here" in untested.get_title().replace("\n", " ")
    assert [sum(line.get_color() == "tab:red" for line in ax.get_lines()) for ax in (tested, untested)] == [1, 0]


def test_critical_difference_diagram_explains_itself(drawn):
    fig, _ = drawn["critical_difference"]
    text = " ".join(t.get_text() for t in _texts(fig)).replace("\n", " ")
    assert "cannot tell them apart at alpha 0.05" in text and "over 18 languages" in text
    assert "CD = 5.44" in text


@pytest.mark.parametrize("seed", range(20))
def test_cd_bars_are_the_maximal_cliques_scikit_posthocs_finds(seed):
    """The hand-drawn bars join exactly the groups scikit-posthocs' diagram would join for the CD rule."""
    from scikit_posthocs._plotting import _find_maximal_cliques

    rng = np.random.default_rng(seed)
    k, cd = int(rng.integers(3, 12)), float(rng.uniform(0.5, 4))
    ranks = pd.Series(np.sort(rng.uniform(1, k, k)), index=[f"c{i}" for i in range(k)])
    together = pd.DataFrame([[abs(a - b) < cd for b in ranks] for a in ranks], index=ranks.index,
                            columns=ranks.index)
    expected = {frozenset(c) for c in _find_maximal_cliques(together) if len(c) > 1}
    spans = figures._cliques(ranks, cd)
    assert {frozenset(ranks.index[i:j + 1]) for i, j in spans} == expected


def test_no_marker_sits_on_the_edge_of_its_panel(drawn):
    """Dots are drawn inside their axes, not cut in half by a limit (a bar's sticky edge once did that)."""
    for name, (fig, _) in drawn.items():
        for ax in fig.axes:
            (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
            for line in ax.get_lines():
                if line.get_marker() in ("None", None, "") or not len(line.get_xdata()):
                    continue
                xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
                keep = np.isfinite(xs) & np.isfinite(ys)
                assert (xs[keep] > x0).all() and (xs[keep] < x1).all(), f"{name}: a marker on the x limit"
                assert (ys[keep] > y0).all() and (ys[keep] < y1).all(), f"{name}: a marker on the y limit"
