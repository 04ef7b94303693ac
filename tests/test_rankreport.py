import pandas as pd
from rank_factory import make_record, results_for

CERS = {"a": [0.50, 0.52], "b": [0.60, 0.61], "c": [0.70, 0.69], "d": [0.80, 0.82], "e": [0.99, 1.0]}


def test_report_section_has_the_tables_figure_and_claims(tmp_path):
    from crossling import paths
    from crossling.rankrecord import write_record
    from crossling.rankreport import rank_section, store_records

    write_record(make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}, estimator="probe-loss"),
                 paths.store_rank_path(tmp_path, "pt"))
    records = store_records(tmp_path, ["pt", "nl"])
    assert list(records) == ["pt"]
    section = rank_section(records, results_for(CERS))
    table, frame = section.tables["rank_agreement"]
    assert len(frame) == 4 and "Spearman ρ" in table.header and "seed-to-seed ρ" in table.header
    scores = section.tables["rank_scores"][1]
    assert scores["predicted rank"].tolist() == scores["measured rank"].tolist() == [1, 2, 3, 4, 5]
    assert section.figures["rank_vs_cer"][1].startswith(b"\x89PNG")
    keys = [f.key for f in section.findings]
    assert keys == ["rank/probe-loss/pt", "rank/goal/pt", "rank/estimators"]  # one language: nothing pooled
    agreement, goal = section.findings[:2]
    assert agreement.verdict == "supported" and agreement.unit.startswith("checkpoints") and agreement.n == 5
    assert section.sentences[0] == agreement.sentence()
    assert section.sentences[0].startswith("The ranking by probe-loss before fine-tuning agrees with the fine-tuned "
                                           "order on pt")
    # the goal is decided by the test and the interval's lower end, never by a point estimate alone
    assert goal.verdict == ("supported" if agreement.effect.low >= 0.8 else "not supported")
    assert "compute 2.7 % of fine-tuning each checkpoint once" in goal.sentence()
    assert section.sentences[-1].startswith("probe-loss on pt: ranking took")  # the measured compute
    assert rank_section(records, results_for({"x": [0.5]})) is None  # no ranked checkpoint was measured
    # one or two measured checkpoints: the section says the agreement cannot be tested, and why
    few = rank_section(records, results_for({"a": [0.5], "b": [0.6]}))
    assert [f.verdict for f in few.findings] == ["cannot be tested here"] and set(few.tables) == {"rank_scores"}
    assert few.sentences[0] == ("Cannot be tested here whether the ranking by probe-loss before fine-tuning agrees "
                                "with the fine-tuned order on pt: 2 of the ranked checkpoints have usable runs on pt; "
                                "a rank correlation needs at least 3.")


def test_reading_records_checking_and_recommending_import_no_torch(tmp_path):
    import subprocess
    import sys

    from crossling.rankrecord import write_record

    write_record(make_record({"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}), tmp_path / "pt.json")
    results_for(CERS).to_csv(tmp_path / "results.csv", index=False)
    code = ("import sys, pandas as pd; from crossling import rankrecord, rankreport, recommend; "
            "record = rankrecord.read_record(sys.argv[1]); table = pd.read_csv(sys.argv[2]); "
            "assert rankreport.rank_section({'pt': record}, table) is not None; "
            "recommend.recommend('pt', table[table['language'] != 'pt'], rank=record); "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pt.json"), str(tmp_path / "results.csv")])
    assert done.returncode == 0


def test_report_has_the_predicted_vs_measured_section_when_the_store_has_records(tmp_path):
    from analysis_factory import synthetic_table

    from crossling import paths
    from crossling.rankrecord import write_record
    from crossling.report import report_from, write_report

    table = synthetic_table(checkpoints=("xlsr300m", "xlsr53", "wavlm", "lv60", "random-init"), languages=("pt", "nl"))
    records = {lang: make_record({"xlsr300m": 5.0, "xlsr53": 4.0, "wavlm": 3.0, "lv60": 2.0, "random-init": 1.0},
                                 language=lang) for lang in ("pt", "nl")}
    written = write_report(table, tmp_path / "report", rank_records=records)
    html = written["report.html"].read_text(encoding="utf-8")
    assert 'id="predicted"' in html and "The ranking by logme before fine-tuning agrees with the fine-tuned order on pt" in html
    assert "The rankings by logme agree with the fine-tuned order across 2 languages" in html
    assert 'id="figure-rank_vs_cer"' in html
    findings = pd.read_csv(written["tables/findings.csv"])  # every rank claim is a row of the findings table
    assert {"rank/logme/pt", "rank/logme/nl", "rank/goal/pt", "rank/logme/pooled"} <= set(findings["key"])
    assert "Predicted vs measured" in written["report.md"].read_text(encoding="utf-8")
    assert {"tables/rank_agreement.csv", "tables/rank_pooled.csv", "figures/rank_vs_cer.png"} <= set(written)
    assert 'id="predicted"' not in write_report(table, tmp_path / "plain")["report.html"].read_text(encoding="utf-8")
    # a store directory as the source: its rank records are found
    table.to_csv(tmp_path / "results.csv", index=False)
    for lang, record in records.items():
        write_record(record, paths.store_rank_path(tmp_path / "store", lang))
    from_store = report_from(tmp_path / "results.csv", tmp_path / "r2", store=tmp_path / "store")
    assert 'id="predicted"' in from_store["report.html"].read_text(encoding="utf-8")
