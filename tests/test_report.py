"""The report: files, escaping, determinism, partial grids, speed, and rendering in headless Chromium."""

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_factory import synthetic_table

from crossling.errors import ConfigError, DataError
from crossling.markup import latex_escape, markdown_escape
from crossling.report import analyse, summary_sentences, write_report

EVIL = '<script>alert("x")</script> & 100%_$x$ #{1}~^\\'


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The full 864-run synthetic study (16 checkpoints × 18 languages × 3 seeds), one run failed."""
    table = synthetic_table()
    table.loc[7, "status"] = "failed"
    out = tmp_path_factory.mktemp("study")
    start = time.perf_counter()
    paths = write_report(table, out, title="Synthetic study")
    seconds = time.perf_counter() - start
    print(f"report on {len(table)} runs: {seconds:.1f} s")
    return table, out, paths, seconds


def _visible_text(html: str) -> str:
    return re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', html)


def test_study_report_is_fast_and_complete(study):
    table, out, paths, seconds = study
    assert seconds < 120
    for name in ("report.html", "report.md", "tables/cer_table.csv", "tables/cer_table.tex", "tables/missing.csv",
                 "figures/heatmap.png", "figures/boxplots.png", "figures/critical_difference.png",
                 "figures/transfer.png", "figures/families.png", "figures/gender.png", "figures/typology.png",
                 "figures/cost.png"):
        assert name in paths and (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text(encoding="utf-8")
    for section in ("summary", "results", "ranking", "families", "transfer", "typology", "gender", "variance", "cost",
                    "missing"):
        assert f'<section id="{section}">' in html
    assert html.count("<img ") == len([p for p in paths if p.startswith("figures/")])


def test_paper_table_content(study):
    table, out, _, _ = study
    cer = pd.read_csv(out / "tables" / "cer_table.csv", keep_default_na=False)
    assert len(cer) == 16 * 18
    row = cer[(cer["checkpoint"] == "vp-es") & (cer["language"] == "es")].iloc[0]
    runs = table[(table["checkpoint"] == "vp-es") & (table["language"] == "es") & (table["status"] == "done")]["cer"]
    assert row["mean"] == pytest.approx(runs.mean(), rel=1e-5) and row["sd"] == pytest.approx(runs.std(), rel=1e-5)
    assert row["n"] == 3
    best = cer[cer["best"].astype(str) == "True"]
    assert set(best["language"]) == set(cer["language"])  # every language has a best
    assert (best["letters"].str.contains("a")).all()
    tex = (out / "tables" / "cer_table.tex").read_text()
    assert r"\textbf{" in tex and r"\textsuperscript{a}" in tex and r"$\pm$" in tex
    blocks = re.findall(r"\\toprule\n(.*?)\\bottomrule", tex, re.S)  # 20 columns split to fit a page
    assert len(blocks) > 1 and r"\label{tab:cer-table}" in tex
    headers = [block.splitlines()[0].removesuffix(r" \\").split(" & ") for block in blocks]
    assert [h for header in headers for h in header[1:]] == [*sorted(set(cer["language"])), "avg rank"]
    for block, header in zip(blocks, headers, strict=True):
        rows = [line for line in block.splitlines() if line.endswith(r" \\")]
        assert len(rows) == 17 and all(len(re.findall(r"(?<!\\)&", row)) == len(header) - 1 for row in rows)
    unescaped = re.sub(r"\\[{}]", "", tex)
    assert unescaped.count("{") == unescaped.count("}")
    markdown = (out / "report.md").read_text()
    assert "| checkpoint | ar | de |" in markdown and "**" in markdown
    for link in re.findall(r"\]\((figures/[^)]+)\)", markdown):
        assert (out / link).is_file()


def test_detail_csvs(study):
    table, out, _, _ = study
    posthoc = pd.read_csv(out / "tables" / "posthoc_conover.csv")
    assert len(posthoc) == 18 * 16 * 15 // 2 and posthoc["p"].between(0, 1).all()
    nemenyi = pd.read_csv(out / "tables" / "friedman_nemenyi.csv").set_index("checkpoint")
    assert nemenyi.shape == (16, 16)
    distances = pd.read_csv(out / "tables" / "distances.csv")
    assert len(distances) == 16 * 18 and distances[distances["checkpoint"] == "random-init"]["genetic"].isna().all()


def test_summary_states_findings_with_p_values(study):
    _, out, _, _ = study
    html = (out / "report.html").read_text(encoding="utf-8")
    summary = html.split('<section id="summary">')[1].split("</section>")[0]
    assert "Friedman (languages as blocks), chi2 = " in summary and "xlsr300m" in summary
    assert re.search(r"best or tied best \(not significantly above the lowest mean\), of 18 languages: xlsr300m on "
                     r"(\d+), xlsr53 on \1[,;]", summary)
    assert "Indo-European targets" in summary and "Wilcoxon" in summary and "Spearman" in summary
    assert "1 runs missing" in summary
    missing = pd.read_csv(out / "tables" / "missing.csv")
    assert list(missing["reason"]) == ["status failed"]


def test_no_external_assets_and_no_nan(study):
    _, out, _, _ = study
    html = (out / "report.html").read_text(encoding="utf-8")
    visible = _visible_text(html)
    assert all(url.startswith(("data:image/png;base64,", "#")) for url in re.findall(r'(?:src|href)="([^"]*)"', html))
    assert "http://" not in visible and "https://" not in visible and "<script" not in visible
    assert not re.search(r"\bnan\b", visible, re.IGNORECASE)
    assert not re.search(r"\bnan\b", (out / "report.md").read_text(), re.IGNORECASE)


def _small(**kwargs) -> pd.DataFrame:
    return synthetic_table(checkpoints=("xlsr53", "lv60", "vp-es", "random-init"),
                           languages=("de", "es", "ja", "pt", "th"), **kwargs)


def test_everything_from_the_data_is_escaped(tmp_path):
    table = _small()
    table["checkpoint"] = table["checkpoint"].replace("vp-es", EVIL)
    table["language"] = table["language"].replace("th", "t<h>&")
    write_report(table, tmp_path, title="Report <b>bold</b>")
    html = _visible_text((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert "<script>" not in html and "<h>" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html and "t&lt;h&gt;&amp;" in html
    tex = (tmp_path / "tables" / "cer_table.tex").read_text()
    assert latex_escape(EVIL) in tex and "<script>" not in tex
    assert r"100\%\_\$x\$ \#\{1\}\textasciitilde{}\textasciicircum{}\textbackslash{}" in latex_escape(EVIL)
    markdown = (tmp_path / "report.md").read_text()
    assert "<script>" not in markdown and markdown_escape(EVIL) in markdown


def test_output_is_byte_identical_across_processes(tmp_path):
    table = _small()
    table.to_csv(tmp_path / "results.csv", index=False)
    code = ("import sys, pandas as pd; from crossling.report import write_report; "
            "write_report(pd.read_csv(sys.argv[1]), sys.argv[2], title='t')")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "results.csv"), str(tmp_path / name)], check=True,
                       env={"PYTHONHASHSEED": "1" if name == "a" else "2", "PATH": "/usr/bin:/bin"})
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 20
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_partial_grid_reports_missing_runs_and_empty_cells(tmp_path):
    table = _small()
    table.loc[(table["checkpoint"] == "lv60") & (table["language"] == "ja"), "status"] = "failed"
    table.loc[0, "cer"] = np.nan
    table.loc[1, "status"] = "pending"
    paths = write_report(table, tmp_path)
    missing = pd.read_csv(paths["tables/missing.csv"])
    assert len(missing) == 5 and {"no cer", "status pending", "status failed"} == set(missing["reason"])
    cer = pd.read_csv(paths["tables/cer_table.csv"])
    assert not ((cer["checkpoint"] == "lv60") & (cer["language"] == "ja")).any()
    assert cer["mean"].notna().all()
    html = _visible_text(paths["report.html"].read_text(encoding="utf-8"))
    assert "5 runs missing" in html and not re.search(r"\bnan\b", html, re.IGNORECASE)
    assert "Friedman" in html  # the incomplete language is dropped from the Friedman blocks, not the report


def test_swept_setting_adds_sensitivity_and_uses_one_value(tmp_path):
    base = _small()
    other = base.assign(**{"setting.learning_rate": 1e-4, "cer": base["cer"] * 1.1})
    paths = write_report(pd.concat([base, base.assign(seed=base["seed"] + 10), other]), tmp_path)
    assert "tables/sensitivity.csv" in paths
    sensitivity = pd.read_csv(paths["tables/sensitivity.csv"])
    assert sensitivity["tau"].iloc[0] == pytest.approx(1.0)
    cer = pd.read_csv(paths["tables/cer_table.csv"])
    assert (cer["n"] == 6).all()  # only the most frequent learning rate's runs


def test_no_usable_run_is_a_data_error(tmp_path):
    table = _small().assign(status="failed")
    with pytest.raises(DataError, match="no usable run"):
        write_report(table, tmp_path)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 5.0, -0.05])
def test_significance_level_outside_0_1_is_a_config_error(tmp_path, alpha):
    with pytest.raises(ConfigError, match="alpha"):
        write_report(_small(), tmp_path / "r", alpha=alpha)
    assert not (tmp_path / "r").exists()


def test_findings_are_plain_sentences():
    sentences = summary_sentences(analyse(_small()))
    assert all(isinstance(s, str) and s.endswith(".") for s in sentences)


# --- a real browser ------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = ("<script>window.addEventListener('load', () => { const w = [...document.images].map("
         "i => i.complete ? i.naturalWidth : -1); document.body.setAttribute('data-image-widths', w.join(',')); "
         "document.body.setAttribute('data-tables', document.querySelectorAll('table').length); });</script>")


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(study, tmp_path):
    _, out, paths, _ = study
    html = (out / "report.html").read_text(encoding="utf-8")
    # 1. the report as written: loads with no console message (CSP violations and errors are logged there)
    plain = _chromium((out / "report.html").as_uri(), tmp_path / "p1", "--dump-dom")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert _console(plain.stderr) == []
    assert "Synthetic study" in plain.stdout and 'id="table-cer_table"' in plain.stdout
    # 2. a copy with a probe script (CSP relaxed for it alone): every figure decoded
    probe = html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';")
    (out / "probe.html").write_text(probe.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium((out / "probe.html").as_uri(), tmp_path / "p2", "--dump-dom").stdout
    widths = [int(w) for w in re.search(r'data-image-widths="([^"]*)"', dom).group(1).split(",")]
    assert len(widths) == len([p for p in paths if p.startswith("figures/")])
    assert min(widths) > 100
    assert int(re.search(r'data-tables="(\d+)"', dom).group(1)) >= 8
    # 3. a screenshot is not blank
    shot = tmp_path / "shot.png"
    _chromium((out / "report.html").as_uri(), tmp_path / "p3", f"--screenshot={shot}", "--window-size=1400,2400")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels[..., :3].std() > 0.05


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_console_check_catches_external_assets(tmp_path):
    """The check above is not vacuous: an external image under the report's CSP is reported."""
    page = tmp_path / "bad.html"
    page.write_text("<html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">"
                    "</head><body><img src=\"http://127.0.0.1:9/x.png\"></body></html>")
    result = _chromium(page.as_uri(), tmp_path / "p", "--dump-dom")
    assert any("Content Security Policy" in line or "Refused" in line for line in _console(result.stderr))


# --- sources and the command line ------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    """A real (toy-trained) study store: 2 checkpoints × 3 languages × 3 seeds done, one checkpoint failing."""
    from grid_factory import TOY, make_prepared, write_study

    from crossling.grid import run_study
    from crossling.study import load_study

    root = tmp_path_factory.mktemp("toy")
    make_prepared(root / "prepared", languages=("de", "ja", "es"), counts=(1, 1, 1))
    path = write_study(root / "toy.toml", ["toy/a", "toy/bb", "toy/broken"], languages=("de", "ja", "es"),
                       seeds=(0, 1, 2), recipe={"max_steps": 3, "checkpoint_every": 3})
    (root / "prepared" / "fail-toy_broken").touch()
    run_study(load_study(path), run_function=TOY)
    return path


def test_report_cli_on_a_study_file_and_its_store(toy_study, tmp_path, capsys):
    from crossling.cli import main

    assert main(["report", str(toy_study), "--out", str(tmp_path / "a"), "--p-adjust", "bonferroni"]) == 0
    assert "report.html" in capsys.readouterr().out
    missing = pd.read_csv(tmp_path / "a" / "tables" / "missing.csv")
    assert len(missing) == 9 and set(missing["checkpoint"]) == {"toy/broken"}
    cer = pd.read_csv(tmp_path / "a" / "tables" / "cer_table.csv")
    assert set(cer["checkpoint"]) == {"toy/a", "toy/bb"} and (cer["n"] == 3).all()
    html = _visible_text((tmp_path / "a" / "report.html").read_text(encoding="utf-8"))
    assert "bonferroni" in html and not re.search(r"\bnan\b", html, re.IGNORECASE)
    # two checkpoints: the report says why the across-language question cannot be tested, instead of failing
    assert "Cannot be tested here whether checkpoints differ in CER across languages: Friedman test needs" in html
    assert main(["report", str(toy_study.parent / "toy.runs"), "--out", str(tmp_path / "b"), "--title", "t"]) == 0
    assert (tmp_path / "b" / "tables" / "cer_table.csv").read_bytes() == (tmp_path / "a" / "tables" / "cer_table.csv").read_bytes()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_report_cli_on_exported_results_files(toy_study, tmp_path, fmt):
    from crossling.cli import main
    from crossling.results import export_results, load_results_table

    table = load_results_table(toy_study)
    export_results(table, tmp_path / f"results.{fmt}", fmt)
    assert main(["report", str(tmp_path / f"results.{fmt}"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").is_file()


def test_report_cli_errors_are_for_people(tmp_path, capsys):
    from crossling.cli import main

    assert main(["report", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "results file not found" in capsys.readouterr().err
    pd.DataFrame({"checkpoint": ["a"], "language": ["de"]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["report", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "lacks column(s) seed, cer" in capsys.readouterr().err
    _small().to_csv(tmp_path / "ok.csv", index=False)
    assert main(["report", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "o"), "--p-adjust", "tukey"]) == 2
    assert "holm" in capsys.readouterr().err


def test_analysis_modules_never_import_torch(tmp_path):
    _small().to_csv(tmp_path / "ok.csv", index=False)
    code = ("import sys; from crossling import languages, typology, stats, factors, findings, design, recommend, "
            "report, figures; from crossling.study import find_study; design.design_check(find_study('demo')); "
            "report.report_from(sys.argv[1], sys.argv[2]); recommend.recommend_from('pt', sys.argv[1]); "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "ok.csv"), str(tmp_path / "o")]).returncode == 0


@pytest.mark.parametrize(("checkpoints", "languages", "seeds"), [
    (("lv60",), ("de",), (0,)), (("lv60", "xlsr53"), ("de",), (0,)), (("lv60", "xlsr53", "vp-es"), ("de", "ja"), (0,)),
])
def test_degenerate_grids_still_report(tmp_path, checkpoints, languages, seeds):
    table = synthetic_table(checkpoints=checkpoints, languages=languages, seeds=seeds)
    paths = write_report(table, tmp_path)
    html = _visible_text(paths["report.html"].read_text(encoding="utf-8"))
    assert not re.search(r"\bnan\b", html, re.IGNORECASE)
    assert len(pd.read_csv(paths["tables/cer_table.csv"])) == len(checkpoints) * len(languages)


def test_an_unknown_table_or_figure_in_a_section_is_an_error(monkeypatch, tmp_path):
    from crossling import report

    a = analyse(_small())
    assert set(report.tables(a)) <= set(report.TABLE_NAMES)
    assert set(report.make_figures(a)) <= set(report.FIGURE_NAMES)
    monkeypatch.setattr(report, "_SECTIONS", (*report._SECTIONS, ("extra", "Extra", ("cer_tabel",), ())))
    with pytest.raises(LookupError, match="cer_tabel"):
        report.write_analysis(a, tmp_path)


def test_report_has_findings_and_methods_with_units(tmp_path):
    paths = write_report(_small(), tmp_path)
    found = pd.read_csv(paths["tables/findings.csv"], keep_default_na=False)
    assert {"supported", "not supported", "cannot be tested here"} >= set(found["verdict"])
    assert (found[found["key"] == "gender"]["unit"].str.startswith("checkpoint x language cells")).all()
    html = _visible_text(paths["report.html"].read_text(encoding="utf-8"))
    assert 'id="table-methods"' in html and "unit of analysis" in html
    summary = html.split('<section id="summary">')[1].split("</section>")[0]
    from crossling.markup import html_escape

    headline = found[found["key"].isin(["friedman", "ranking", "families", "subgroup", "gender"]) |
                     found["key"].str.startswith(("baseline/", "typology/"))]
    assert len(headline) >= 5
    for sentence in headline["sentence"]:  # the summary states each headline finding exactly as rendered
        assert html_escape(sentence) in summary, sentence


# --- the study's own files: methods, training curves, error analysis (issue 12) ------------------------------


@pytest.fixture(scope="module")
def with_files(tmp_path_factory):
    """A small study's report with its store (metrics, hypotheses, result records) and prepared data."""
    from store_factory import write_run_files
    from tinydata_factory import make_prepared

    from crossling.methods import StudyFiles

    root = tmp_path_factory.mktemp("files")
    table = synthetic_table(checkpoints=("xlsr53", "lv60", "random-init"), languages=("de", "ja"), seeds=(0, 1, 2))
    write_run_files(root / "store", table, records=True)
    for language in ("de", "ja"):
        make_prepared(root / "prepared", language=language)
    paths = write_report(table, root / "report", files=StudyFiles(root / "store", root / "prepared"))
    return paths, _visible_text(paths["report.html"].read_text(encoding="utf-8"))


def _section(html: str, key: str) -> str:
    return html.split(f'<section id="{key}">')[1].split("</section>")[0]


def test_report_shows_training_curves_and_error_analysis_from_the_store(with_files):
    paths, html = with_files
    assert {"figures/training_loss.png", "figures/dev_cer_curve.png", "figures/cer_by_length.png",
            "tables/worst_utterances.tex", "tables/character_edits.csv", "tables/errors_worst_utterances.csv",
            "tables/errors_cer_by_length.csv"} <= set(paths)
    assert 'id="figure-training_loss"' in _section(html, "curves") and 'id="figure-dev_cer_curve"' in html
    results = _section(html, "results")  # CER beside WER, and no WER for Japanese (written without spaces)
    assert 'id="table-cer_wer"' in results and "No WER for ja" in results
    errors = _section(html, "errors")
    assert 'id="table-worst_utterances"' in errors and 'id="figure-cer_by_length"' in errors
    assert "lowest and highest mean test CER over seeds; descriptive" in errors
    worst = pd.read_csv(paths["tables/errors_worst_utterances.csv"], keep_default_na=False)
    assert {"reference", "hypothesis", "cer", "role"} <= set(worst.columns)


def test_methods_state_data_recipe_software_commit_hardware_and_compute(with_files):
    paths, html = with_files
    methods = _section(html, "methods")
    assert methods.index('id="table-setup"') < methods.index('id="table-data"') < methods.index('id="table-methods"')
    setup = pd.read_csv(paths["tables/setup.csv"]).set_index("item")["value"]
    assert setup["seeds"].startswith("0, 1, 2 (repeated runs") and setup["languages"] == "de, ja"
    assert "max_steps = 100" in setup["recipe"] and "eval_every = 25" in setup["recipe"]
    assert "torch 2.13.0" in setup["software"] and setup["commit"] == "0123456789ab"
    assert "cpu (Test CPU 9000), 2 threads: 18 runs" == setup["hardware"]
    assert setup["total compute"].startswith("27 min of wall-clock time over 18 runs")  # 18 × 90 s
    data = pd.read_csv(paths["tables/data.csv"])
    assert list(data["split"]) == ["train", "dev", "test"] * 2
    assert list(data["utterances"]) == [32, 6, 8] * 2 and (data["speakers"] > 0).all()
    assert data["seconds"].gt(0).all() and data.loc[data["split"] == "train", "vocabulary"].gt(3).all()


def test_without_the_study_files_those_sections_are_left_out(tmp_path):
    paths = write_report(_small(), tmp_path)
    html = _visible_text(paths["report.html"].read_text(encoding="utf-8"))
    for key in ("curves", "errors"):
        assert f'<section id="{key}">' not in html and f'href="#{key}"' not in html
    assert 'id="table-setup"' not in html and 'id="table-methods"' in html  # the tests' units are always there


def test_empty_tables_are_left_out_with_their_heading_and_files(tmp_path):
    """A complete grid has no missing run: no 'Missing runs' heading, no missing.tex (the old report wrote an
    empty tabular); an untestable family comparison shows no table of n/a (the summary says why)."""
    table = synthetic_table(checkpoints=("lv60", "xlsr53"), languages=("de", "es"), seeds=(0, 1, 2))
    paths = write_report(table, tmp_path)
    html = _visible_text(paths["report.html"].read_text(encoding="utf-8"))
    assert "Missing runs" not in html and "tables/missing.tex" not in paths and "tables/missing.csv" not in paths
    assert "tables/families.tex" not in paths and "all 2 targets are Indo-European" in _section(html, "summary")
    assert "no run missing" in html and "listed below" not in html
    for name, path in paths.items():
        if name.endswith(".tex"):
            assert r"\midrule" in path.read_text() and path.read_text().count(r" \\") >= 2, name


def test_summary_opens_with_a_short_headline_and_folds_the_rest(study):
    """At most five sentences first (the 18-language study states many more findings); the others, and what
    the design cannot answer, follow folded; then how to read the report."""
    from crossling.report import HEADLINE_SENTENCES

    _, out, _, _ = study
    summary = _section(_visible_text((out / "report.html").read_text(encoding="utf-8")), "summary")
    headline = summary.split('<div class="headline">')[1].split("</div>")[0]
    assert 3 <= headline.count("<li>") <= HEADLINE_SENTENCES == 5
    assert "Cannot be tested here" not in headline and "<details><summary>More findings:" in summary
    assert summary.index("</details>") < summary.index("How to read this report")
    small = _section(_visible_text(write_report(_small(), out / "small")["report.html"].read_text(encoding="utf-8")),
                     "summary")
    cannot = small.split("Questions this design cannot answer:")[1].split("</details>")[0]
    assert re.findall(r"<li>.*", cannot) and all(line.startswith("<li>Cannot be tested here")
                                                  for line in re.findall(r"<li>.*", cannot))


def test_figures_use_the_readable_forms_and_the_findings_p_values(monkeypatch, tmp_path):
    """relative_heatmap for the transfer matrix; the CD diagram with its alpha and number of languages;
    typology panels titled with the Holm-adjusted p of their findings (NaN, and no fit line, where a
    correlation cannot be tested); cost in human units."""
    from crossling import figures, report

    calls = {}
    for name in ("relative_heatmap", "critical_difference", "correlation_panels"):
        original = getattr(figures, name)
        monkeypatch.setattr(figures, name, lambda *args, _f=original, _n=name, **kw: calls.setdefault(_n, (args, kw))
                            and _f(*args, **kw))
    a = analyse(synthetic_table())
    shown = report.make_figures(a)
    assert {"transfer", "critical_difference", "typology"} <= set(shown)
    assert set(calls) == {"relative_heatmap", "critical_difference", "correlation_panels"}
    assert calls["critical_difference"][1] == {"alpha": 0.05, "blocks": a.friedman.matrix.shape[0]}
    assert "critical difference CD = " in shown["critical_difference"][0] and "over 18 languages" in shown["critical_difference"][0]
    kw = calls["correlation_panels"][1]
    expected = [next(f for f in a.findings if f.key == f"typology/{kind}") for kind in a.typology["distance"]]
    assert kw["p_values"] == [f.p_adjusted if f.verdict != "cannot be tested here" else pytest.approx(np.nan, nan_ok=True)
                              for f in expected]
    cost = report.tables(a)["cost"][0]
    assert all(cell.text.endswith((" s", " min", " h")) for cell in (row[2] for row in cost.rows))
    assert all(cell.text.endswith((" MB", " GB")) for cell in (row[5] for row in cost.rows))


def test_long_tables_are_folded_below_their_caption(study):
    """The 18-language study's findings table (hundreds of rows) does not push the results a screen away."""
    from crossling.report import FOLD_ROWS

    _, out, _, _ = study
    html = _visible_text((out / "report.html").read_text(encoding="utf-8"))
    findings = _section(html, "findings")
    assert findings.index('class="caption"') < findings.index("<details><summary>Show all") < findings.index(
        'id="table-findings"')
    paper = html.split('id="caption-cer_table"')[1].split('id="table-cer_table"')[0]
    assert "<details>" not in paper and 17 <= FOLD_ROWS  # the paper table (17 checkpoints) stays open
