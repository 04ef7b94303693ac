"""The study report: tidy results table in → report.html (self-contained, figures embedded), report.md,
figures/*.png and tables/*.{csv,tex}. All text from the data is escaped; output is deterministic."""

from __future__ import annotations

import base64
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crossling import factors, paths, stats
from crossling.atomic import atomic_path, write_text_atomic
from crossling.errors import ConfigError, CrosslingError, DataError
from crossling.markup import Cell, Table, fmt, fmt_p, html_escape, markdown_escape

log = logging.getLogger(__name__)


# --- the analyses --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    """Every statistic the report shows, computed once from the table (None / empty when not applicable)."""

    runs: pd.DataFrame
    missing: pd.DataFrame
    empty_cells: pd.DataFrame
    swept: tuple[str, ...]
    summary: pd.DataFrame
    omnibus: pd.DataFrame
    posthoc: pd.DataFrame
    groups: pd.DataFrame
    wins: pd.DataFrame
    friedman: stats.Friedman | None
    friedman_note: str
    families: pd.DataFrame
    transfer: pd.DataFrame
    subgroup_cells: pd.DataFrame
    subgroup_test: stats.TestResult
    distances: pd.DataFrame
    typology: pd.DataFrame
    gender_runs: pd.DataFrame
    gender_test: stats.TestResult
    sensitivity: pd.DataFrame
    variance: pd.DataFrame
    cost: pd.DataFrame
    alpha: float
    p_adjust: str


def analyse(table: pd.DataFrame, alpha: float = 0.05, p_adjust: str = "holm", seed: int = 0) -> Analysis:
    """Run every analysis on the usable runs (missing ones listed, not propagated)."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha (the significance level) must be between 0 and 1, e.g. 0.05; got {alpha}")
    usable, missing = stats.split_missing(table)
    if usable.empty:
        raise DataError(f"no usable run in the results table ({len(table)} rows, none with status 'done' and a CER)")
    swept = tuple(stats.swept_settings(usable))
    runs = stats.primary_slice(usable)
    friedman, note = _friedman(runs, alpha, p_adjust)
    posthoc = stats.conover_by_language(runs, p_adjust=p_adjust)
    groups = stats.language_groups(runs, alpha=alpha, p_adjust=p_adjust, posthoc=posthoc)
    subgroup_cells, subgroup_test = factors.subgroup_transfer(runs)
    distances = _distances(runs)
    known = not distances.empty and distances[list(_KINDS)].notna().any().any()
    typology = (factors.typology_correlation(runs, distances[["checkpoint", "language", *_KINDS]], seed=seed,
                                           relative=True).dropna(subset=["rho"]) if known else pd.DataFrame())
    gender_runs, gender_test = factors.gender_gap(runs)
    return Analysis(runs, missing, _empty_cells(table, runs), swept, stats.cell_summary(runs),
                    stats.kruskal_by_language(runs), stats.posthoc_long(posthoc), groups, stats.wins(groups),
                    friedman, note,
                    factors.group_comparison(runs), factors.transfer_matrix(runs), subgroup_cells, subgroup_test,
                    distances, typology, gender_runs, gender_test, factors.setting_sensitivity(usable),
                    factors.variance_decomposition(runs), _cost(runs), alpha, p_adjust)


_KINDS = ("genetic", "geographic", "syntactic", "phonological", "inventory")


def _friedman(runs: pd.DataFrame, alpha: float, p_adjust: str) -> tuple[stats.Friedman | None, str]:
    try:
        return stats.friedman(runs, alpha=alpha, p_adjust=p_adjust), ""
    except DataError as error:
        return None, str(error)


def _distances(runs: pd.DataFrame) -> pd.DataFrame:
    from crossling import typology

    try:
        return typology.checkpoint_distance_table(runs["checkpoint"].unique(), runs["language"].unique(), _KINDS)
    except CrosslingError as error:  # lang2vec missing: the report goes on without typology
        log.warning("typology section skipped: %s", error)
        return pd.DataFrame()


def _empty_cells(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint × language cells of the grid (as the table names them) with no usable run at all."""
    grid = pd.MultiIndex.from_product([sorted(table["checkpoint"].astype(str).unique()),
                                       sorted(table["language"].astype(str).unique())])
    present = set(zip(runs["checkpoint"].astype(str), runs["language"].astype(str), strict=True))
    return pd.DataFrame([c for c in grid if c not in present], columns=["checkpoint", "language"])


def _cost(runs: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: runs, mean and sd wall hours, total device hours, throughput, peak memory."""
    frame = runs.assign(**{c: pd.to_numeric(runs[c], errors="coerce") if c in runs else np.nan
                           for c in ("wall_seconds", "device_hours", "audio_seconds_per_second", "peak_memory_mb")})
    frame["wall_hours"] = frame["wall_seconds"] / 3600
    grouped = frame.groupby("checkpoint")
    return pd.DataFrame({"runs": grouped.size(), "wall_hours": grouped["wall_hours"].mean(),
                         "wall_hours_sd": grouped["wall_hours"].std(), "device_hours_total": grouped["device_hours"].sum(min_count=1),
                         "audio_s_per_s": grouped["audio_seconds_per_second"].mean(),
                         "peak_memory_mb": grouped["peak_memory_mb"].max()}).sort_index()


# --- tables ------------------------------------------------------------------------------------------


def checkpoint_order(a: Analysis) -> list[str]:
    """Checkpoints by Friedman average rank (best first), else by mean CER over their cells."""
    if a.friedman is not None:
        ranked = list(a.friedman.average_ranks.index)
        return ranked + sorted(set(a.summary["checkpoint"]) - set(ranked))
    return list(a.summary.groupby("checkpoint")["mean"].mean().sort_values(kind="stable").index)


def cer_table(a: Analysis) -> tuple[Table, pd.DataFrame]:
    """The paper-style table: CER % mean ± sd over seeds per checkpoint × language, (tied) best in bold,
    significance letters (same letter: not significantly different within that language)."""
    languages = sorted(a.summary["language"].unique())
    merged = a.summary.merge(a.groups[["checkpoint", "language", "letters", "best", "mean_rank"]],
                             on=["checkpoint", "language"], how="left")
    cells = merged.set_index(["checkpoint", "language"])
    ranks = a.friedman.average_ranks if a.friedman is not None else pd.Series(dtype=float)
    rows = []
    for checkpoint in checkpoint_order(a):
        row = [Cell(checkpoint)]
        for language in languages:
            if (checkpoint, language) not in cells.index:
                row.append(Cell("–"))
                continue
            cell = cells.loc[(checkpoint, language)]
            text = f"{100 * cell['mean']:.1f}" + (f" ± {100 * cell['sd']:.1f}" if math.isfinite(cell["sd"]) else "")
            row.append(Cell(text, bool(cell["best"]), str(cell["letters"])))
        row.append(Cell(fmt(ranks.get(checkpoint, math.nan), 2)))
        rows.append(tuple(row))
    caption = (f"Test CER (%) mean ± sd over seeds. Bold: best or not significantly different from the best "
               f"(Conover-Iman, {a.p_adjust} correction, alpha {a.alpha}); letters: significance groups per language; "
               f"last column: average rank over languages (Friedman).")
    frame = merged.sort_values(["language", "mean", "checkpoint"])[
        ["checkpoint", "language", "mean", "sd", "n", "min", "max", "mean_rank", "letters", "best"]]
    return Table("cer_table", caption, ("checkpoint", *languages, "avg rank"), tuple(rows)), frame


def _wins_table(a: Analysis) -> Table:
    frame = a.wins[["checkpoint", "wins", "sole_wins", "languages", "best_on"]]
    return Table.from_frame("wins", "Languages on which each checkpoint is best or tied best "
                            "(not significantly different from the best).", frame)


def _kruskal_table(a: Analysis) -> Table:
    frame = a.omnibus.assign(p=a.omnibus["p"].map(fmt_p))
    return Table.from_frame("kruskal", "Per language: Kruskal-Wallis test across checkpoints (seeds as samples), "
                            "effect size epsilon squared.", frame)


def _families_table(a: Analysis) -> Table:
    frame = a.families.assign(p=a.families["p"].map(fmt_p))
    return Table.from_frame("families", "Indo-European vs other target languages, per checkpoint (samples: "
                            "languages' seed-mean CER) and overall; Mann-Whitney U, rank-biserial effect "
                            "(negative: Indo-European lower CER).", frame)


def _typology_table(a: Analysis) -> Table:
    frame = a.typology.assign(p_permutation=a.typology["p_permutation"].map(fmt_p),
                              p_scipy=a.typology["p_scipy"].map(fmt_p))
    return Table.from_frame("typology", "Spearman correlation of relative CER (cell / language median) with the "
                            "URIEL distance from the checkpoint's closest pre-training language to the target; "
                            "p from a seeded permutation test within languages.", frame)


def _gender_table(a: Analysis) -> Table:
    runs = a.gender_runs.dropna(subset=["gap"])
    frame = runs.groupby("checkpoint").agg(runs=("gap", "size"), cer_female=("cer_female", "mean"),
                                           cer_male=("cer_male", "mean"), median_gap=("gap", "median"),
                                           female_worse=("gap", lambda g: int((g > 0).sum()))).reset_index()
    return Table.from_frame("gender", "Test CER by speaker gender per checkpoint (gap = female − male).", frame)


def _cost_table(a: Analysis) -> Table:
    return Table.from_frame("cost", "Cost per run: mean wall-clock hours (sd), total device hours, audio seconds "
                            "trained per second, peak memory (MB).", a.cost.reset_index(), 3)


def tables(a: Analysis) -> dict[str, tuple[Table, pd.DataFrame]]:
    """name → (rendered table, raw frame for the CSV), in report order; empty analyses left out."""
    paper, frame = cer_table(a)
    out = {"cer_table": (paper, frame), "wins": (_wins_table(a), a.wins), "kruskal": (_kruskal_table(a), a.omnibus)}
    if a.friedman is not None:
        ranks = a.friedman.average_ranks.rename("average_rank").rename_axis("checkpoint").reset_index()
        out["friedman_ranks"] = (Table.from_frame("friedman_ranks", "Average rank over languages (1 = best).", ranks),
                                 ranks)
    out["families"] = (_families_table(a), a.families)
    if not a.transfer.empty:
        transfer = (100 * a.transfer).round(1).reset_index()
        out["transfer"] = (Table.from_frame("transfer", "Monolingual transfer: mean CER (%) by pre-training "
                                            "language (rows) and target language (columns).", transfer, 1),
                           a.transfer.reset_index())
    if not a.typology.empty:
        out["typology"] = (_typology_table(a), a.typology)
    if a.gender_runs["gap"].notna().any():
        out["gender"] = (_gender_table(a), a.gender_runs)
    if not a.sensitivity.empty:
        out["sensitivity"] = (Table.from_frame("sensitivity", "Kendall's tau between checkpoint rankings under "
                                               "two values of a swept setting.", a.sensitivity), a.sensitivity)
    out["variance"] = (Table.from_frame("variance", "Share of CER variance by source (sequential sums of "
                                        "squares, terms in this order).", a.variance, 4), a.variance)
    out["cost"] = (_cost_table(a), a.cost.reset_index())
    missing = a.missing.assign(seed=a.missing["seed"].astype(str)) if len(a.missing) else a.missing
    out["missing"] = (Table.from_frame("missing", "Runs excluded from every analysis.", missing), a.missing)
    return out


# --- figures and findings ----------------------------------------------------------------------------


def make_figures(a: Analysis) -> dict[str, tuple[str, bytes]]:
    """name → (caption, PNG bytes), in report order."""
    from crossling import figures

    order = checkpoint_order(a)
    out = {}
    if a.friedman is not None:
        out["critical_difference"] = ("Critical-difference diagram: average ranks over languages; bars join "
                                      "checkpoints not significantly different (Nemenyi)",
                                      figures.critical_difference(a.friedman.average_ranks, a.friedman.cd,
                                                                  f"Nemenyi CD at alpha {a.alpha}"))
    matrix = stats.cell_means(a.runs).T.reindex(order)
    out["heatmap"] = ("Mean test CER per checkpoint and language",
                      figures.heatmap(matrix, "Test CER (mean over seeds)"))
    out["boxplots"] = ("Test CER of every seed, per language", figures.language_boxplots(a.runs, order))
    if not a.transfer.empty:
        relative = a.transfer.div(a.transfer.median(axis=0), axis=1)  # remove target difficulty
        out["transfer"] = ("Monolingual transfer matrix: CER relative to the target's median over "
                           "pre-training languages (below 1: transfers better than usual)",
                           figures.heatmap(relative, "Pre-training language → target (relative CER)",
                                           "CER / target median", "{:.2f}", "RdYlGn_r"))
    labels = pd.Series({lang: factors.indo_european(lang) for lang in matrix.columns})
    out["families"] = ("Seed-mean CER of Indo-European and other targets per checkpoint",
                       figures.group_boxes(matrix.T[order], labels, "Target language family"))
    if not a.typology.empty:
        means = stats.cell_means(a.runs)
        cells = means.div(means.median(axis=1), axis=0).stack().rename("relative CER").reset_index()
        frame = cells.merge(a.distances, on=["checkpoint", "language"])
        kinds = list(a.typology["distance"])
        titles = [f"{r.distance}: rho {r.rho:.2f}, p {fmt_p(r.p_permutation)}" for r in a.typology.itertuples()]
        out["typology"] = ("Relative CER against URIEL distance of the closest pre-training language",
                           figures.scatter_panels(frame, kinds, "relative CER", titles, "CER / language median"))
    if a.gender_runs["gap"].notna().any():
        out["gender"] = ("CER of female vs male speakers, one point per run",
                         figures.gender_scatter(a.gender_runs, "Per-run CER by gender"))
    out["variance"] = ("Variance decomposition", figures.variance_bars(a.variance, "Where CER variance comes from"))
    if a.cost["wall_hours"].notna().any():
        out["cost"] = ("Wall-clock hours per run", figures.cost_bars(a.cost.reindex(order), "wall_hours",
                                                                     "Cost per run", "wall-clock hours (mean ± sd)"))
    return out


def findings(a: Analysis) -> list[str]:
    """A few plain-language sentences with their statistics (plain text; escaped when rendered)."""
    out = [f"{len(a.runs)} runs analysed: {a.runs['checkpoint'].nunique()} checkpoints × "
           f"{a.runs['language'].nunique()} languages; {len(a.missing)} runs missing (excluded, listed below)."]
    if a.swept:
        out.append(f"Swept settings ({', '.join(a.swept)}): main analyses use each setting's most frequent value.")
    if a.friedman is not None:
        f, top = a.friedman, a.friedman.average_ranks.index[0]
        out.append(f"Checkpoints differ across languages (Friedman chi2 = {f.result.statistic:.1f}, p = "
                   f"{fmt_p(f.result.p)}, Kendall's W = {f.kendall_w:.2f}, {f.result.n} languages). Best average "
                   f"rank: {top} ({f.average_ranks.iloc[0]:.2f}; Nemenyi CD = {f.cd:.2f}).")
    else:
        out.append(f"No Friedman test: {a.friedman_note}.")
    leader = a.wins.iloc[0]
    out.append(f"{leader['checkpoint']} is best or tied best on {leader['wins']} of {leader['languages']} languages "
               f"(sole best on {leader['sole_wins']}).")
    significant = int((a.omnibus["p"] < a.alpha).sum())
    out.append(f"Kruskal-Wallis finds differences between checkpoints in {significant} of {len(a.omnibus)} languages "
               f"(alpha {a.alpha}).")
    overall = a.families[a.families["checkpoint"] == "(all checkpoints)"].iloc[0]
    if overall["test"] == "mannwhitneyu" and math.isfinite(overall["p"]):
        out.append(f"Indo-European targets: median CER {overall.get('median[Indo-European]', math.nan):.3f} vs "
                   f"{overall.get('median[other]', math.nan):.3f} for other languages (Mann-Whitney p = "
                   f"{fmt_p(overall['p'])}, rank-biserial {overall['effect']:.2f}).")
    t = a.subgroup_test
    if math.isfinite(t.p):
        direction = "better" if t.effect < 0 else "worse"
        out.append(f"Monolingual checkpoints transfer {direction} to targets of their own subgroup (relative CER, "
                   f"Mann-Whitney p = {fmt_p(t.p)}, rank-biserial {t.effect:.2f}, {t.n} cells).")
    for row in a.typology.itertuples():
        out.append(f"CER vs {row.distance} distance of the pre-training languages: Spearman rho = {row.rho:.2f} "
                   f"(permutation p = {fmt_p(row.p_permutation)}).")
    g = a.gender_test
    if math.isfinite(g.p):
        side = "women" if g.effect > 0 else "men"
        out.append(f"Gender: CER is higher for {side} (Wilcoxon signed-rank over {g.n} runs, p = {fmt_p(g.p)}, "
                   f"rank-biserial {g.effect:.2f}).")
    shares = a.variance.set_index("source")["share"]
    if shares.notna().all():  # NaN when every run has the same CER (or there is one run)
        out.append("Variance of CER: " + ", ".join(f"{s} {100 * v:.1f}%" for s, v in shares.items()) + ".")
    return out


# --- documents -----------------------------------------------------------------------------------------

_SECTIONS = (
    ("summary", "Summary", (), ()),
    ("results", "Results per checkpoint and language", ("cer_table", "wins"), ("heatmap", "boxplots")),
    ("ranking", "Ranking across languages", ("friedman_ranks", "kruskal"), ("critical_difference",)),
    ("families", "Language families", ("families",), ("families",)),
    ("transfer", "Monolingual transfer", ("transfer",), ("transfer",)),
    ("typology", "Typology", ("typology",), ("typology",)),
    ("gender", "Speaker gender", ("gender",), ("gender",)),
    ("settings", "Hyper-parameter sensitivity", ("sensitivity",), ()),
    ("variance", "Variance decomposition", ("variance",), ("variance",)),
    ("predicted", "Predicted vs measured: checkpoints ranked before fine-tuning",
     ("rank_agreement", "rank_pooled", "rank_scores"), ("rank_vs_cer",)),
    ("cost", "Cost", ("cost",), ("cost",)),
    ("missing", "Missing runs", ("missing",), ()),
)

_CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:12px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child{text-align:left}caption{caption-side:top;text-align:left;font-style:italic;padding:4px 0}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-style:italic;font-size:12px}
nav a{margin-right:1em}.scroll{overflow-x:auto}"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _sections(a: Analysis, rendered: dict, figs: dict):
    """(id, title, tables, figures) of every section that has content, plus the summary."""
    for key, title, table_names, figure_names in _SECTIONS:
        chosen = [rendered[n][0] for n in table_names if n in rendered]
        pictures = [(n, *figs[n]) for n in figure_names if n in figs]
        if key == "summary" or chosen or pictures:
            yield key, title, chosen, pictures


def render_html(title: str, a: Analysis, rendered: dict, figs: dict, notes: dict | None = None) -> str:
    """The page; `notes` adds sentences at the top of sections other than the summary ({section: [text]})."""
    parts = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
             f"<title>{html_escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<h1>{html_escape(title)}</h1>"]
    sections = list(_sections(a, rendered, figs))
    parts.append("<nav>" + "".join(f'<a href="#{k}">{html_escape(t)}</a>' for k, t, _, _ in sections) + "</nav>")
    for key, heading, chosen, pictures in sections:
        parts.append(f'<section id="{key}">\n<h2>{html_escape(heading)}</h2>')
        said = findings(a) if key == "summary" else (notes or {}).get(key, [])
        if said:
            parts.append("<ul>\n" + "\n".join(f"<li>{html_escape(s)}</li>" for s in said) + "\n</ul>")
        parts.extend(f'<div class="scroll">{t.html()}</div>' for t in chosen)
        for name, caption, png in pictures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure id="figure-{name}"><img src="data:image/png;base64,{data}" alt="{html_escape(caption)}">'
                         f"<figcaption>{html_escape(caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def render_markdown(title: str, a: Analysis, rendered: dict, figs: dict, notes: dict | None = None) -> str:
    parts = [f"# {markdown_escape(title)}"]
    for key, heading, chosen, pictures in _sections(a, rendered, figs):
        parts.append(f"## {markdown_escape(heading)}")
        said = findings(a) if key == "summary" else (notes or {}).get(key, [])
        if said:
            parts.append("\n".join(f"- {markdown_escape(s)}" for s in said))
        parts.extend(t.markdown() for t in chosen)
        parts.extend(f"![{markdown_escape(caption)}](figures/{name}.png)" for name, caption, _ in pictures)
    return "\n\n".join(parts) + "\n"


def write_report(table: pd.DataFrame, out_dir: Path, title: str = "crossling study report", alpha: float = 0.05,
                 p_adjust: str = "holm", seed: int = 0, rank_records: dict | None = None) -> dict[str, Path]:
    """Analyse `table` and write report.html, report.md, figures/*.png and tables/*.{csv,tex} under
    `out_dir` (report.html last). Returns {relative name: path} of every file written. With the
    study's rank records ({language: RankRecord}) the report also sets them against the runs."""
    from crossling.rankreport import rank_section

    out_dir = Path(out_dir)
    a = analyse(table, alpha, p_adjust, seed)
    rendered = tables(a)
    figs = make_figures(a)
    predicted = rank_section(rank_records, table, alpha) if rank_records else None
    notes = {"predicted": list(predicted.findings)} if predicted else {}
    rendered.update(predicted.tables if predicted else {})
    figs.update(predicted.figures if predicted else {})
    written: dict[str, Path] = {}

    def record(path: Path) -> None:
        written[path.relative_to(out_dir).as_posix()] = path

    for name, (_, png) in figs.items():
        record(_write_bytes(paths.report_figure_path(out_dir, name), png))
    for name, (rendered_table, frame) in rendered.items():
        record(_write_text(paths.report_table_path(out_dir, name, "csv"), _csv(frame)))
        record(_write_text(paths.report_table_path(out_dir, name, "tex"), rendered_table.latex()))
    for name, frame in csv_only(a).items():
        record(_write_text(paths.report_table_path(out_dir, name, "csv"), _csv(frame)))
    record(_write_text(paths.report_page_path(out_dir, "md"), render_markdown(title, a, rendered, figs, notes)))
    record(_write_text(paths.report_page_path(out_dir, "html"), render_html(title, a, rendered, figs, notes)))
    log.info("report written to %s (%d files)", out_dir, len(written))
    return written


def csv_only(a: Analysis) -> dict[str, pd.DataFrame]:
    """Detail tables too large for the page: every post-hoc p-value, distances, transfer cells."""
    out = {"posthoc_conover": a.posthoc, "subgroup_cells": a.subgroup_cells, "distances": a.distances}
    if a.friedman is not None:
        out["friedman_nemenyi"] = a.friedman.nemenyi.rename_axis("checkpoint").reset_index()
        out["friedman_conover"] = a.friedman.conover.rename_axis("checkpoint").reset_index()
    return out


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def _write_text(path: Path, text: str) -> Path:
    write_text_atomic(path, text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# --- sources -------------------------------------------------------------------------------------------

TABLE_SUFFIXES = (".csv", ".json", ".parquet", ".pq")


def load_table(source: str | Path, store: Path | None = None) -> pd.DataFrame:
    """The tidy results table from a results file (.csv / .json / .parquet, as `crossling results`
    writes it), a study store directory, or a study (file or shipped example name) and its store."""
    path = Path(source).expanduser()
    if path.suffix.lower() in TABLE_SUFFIXES:
        if not path.is_file():
            raise DataError(f"{path}: results file not found")
        return _read_table_file(path)
    from crossling.results import load_results_table
    from crossling.study import find_study

    return load_results_table(path if path.is_dir() else find_study(str(source)), store)


def _read_table_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":  # only empty fields are missing: a checkpoint may be called 'NA'
            table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        elif suffix == ".json":
            table = pd.read_json(path, orient="records", dtype=False)
        else:
            table = pd.read_parquet(path)
    except (ValueError, OSError, ImportError) as error:
        raise DataError(f"{path}: cannot read the results table ({error})") from error
    stats.split_missing(table)  # checks the columns, naming the missing ones
    for column in ("checkpoint", "language", "status", "run_id"):
        if column in table:
            table[column] = table[column].astype(str)
    return table


def report_from(source: str | Path, out_dir: Path, store: Path | None = None, title: str | None = None,
                alpha: float = 0.05, p_adjust: str = "holm") -> dict[str, Path]:
    """`write_report` on the table of `source` (see `load_table`) and the rank records of its store, if
    any; the title defaults to its name."""
    from crossling.rankreport import source_records

    table = load_table(source, store)
    return write_report(table, out_dir, title or f"crossling report: {Path(str(source)).stem}", alpha, p_adjust,
                        rank_records=source_records(source, store, table))
