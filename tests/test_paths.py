"""Artifact paths: one function per artifact, and the places that read them agree with the writers."""

from pathlib import Path

from crossling import paths


def test_default_store_sits_beside_the_study_file():
    assert paths.default_store_dir(Path("/x/y/reference.toml")) == Path("/x/y/reference.runs")


def test_store_data_and_its_corpus_are_siblings_inside_the_store():
    prepared = paths.store_prepared_dir(Path("/s"), "synthetic", "abc")
    assert prepared == Path("/s/data/synthetic-abc")
    assert paths.store_corpus_dir(prepared) == Path("/s/data/synthetic-abc-corpus")


def test_report_files_live_under_the_report_folder():
    root = Path("/r")
    assert paths.report_page_path(root, "html") == root / "report.html"
    assert paths.report_figure_path(root, "heatmap").parent == root / "figures"
    assert paths.report_table_path(root, "cer", "tex") == root / "tables" / "cer.tex"


def test_every_run_artifact_is_inside_the_run_directory():
    run = Path("/runs/a")
    builders = [paths.run_config_path, paths.run_resume_path, paths.run_legacy_resume_path, paths.run_model_dir, paths.run_scores_path,
                paths.run_log_path, paths.run_result_path, paths.run_error_path]
    built = [build(run) for build in builders] + [paths.run_hypotheses_path(run, "test")]
    assert all(path.parent == run for path in built)
    assert len(set(built)) == len(built)
