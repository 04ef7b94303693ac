"""The CLI entry point (the torch-free promise of the analysis half is checked in test_code.py)."""

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from grid_factory import environment

from crossling.cli import main


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "models" in capsys.readouterr().out


def test_models_lists_every_reference_checkpoint(capsys):
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    aliases = {row["alias"] for row in rows}
    assert {"xlsr53", "xlsr300m", "vp-es", "wavlm", "hubert", "random-init"} <= aliases
    assert sum(row["source"].count("/") == 1 for row in rows) >= 15


def test_python_dash_m_runs():
    result = subprocess.run([sys.executable, "-m", "crossling", "models"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "facebook/wav2vec2-xls-r-300m" in result.stdout


# --- issue 13: conventions, driven through the real CLI in a subprocess ---------------------------------

STUDIES = Path(str(resources.files("crossling").joinpath("studies")))


def crossling(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m crossling ARGS` in a separate process, stdout and stderr captured (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "crossling", *args], cwd=cwd, env=environment(),
                          capture_output=True, text=True, timeout=timeout)


def disk(root: Path) -> dict[str, str]:
    """Every file and folder under `root`, with the files' contents (to compare before and after)."""
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else p.read_bytes().hex()) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory) -> Path:
    from analysis_factory import synthetic_table

    path = tmp_path_factory.mktemp("results") / "results.csv"
    synthetic_table(checkpoints=("xlsr53", "vp-es", "random-init"), languages=("pt", "nl", "de"),
                    seeds=(0, 1)).to_csv(path, index=False)
    return path


def test_version():
    import crossling as package

    done = crossling("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"crossling {package.__version__}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_crosslings_debug_lines_and_no_third_party_ones(results_csv, tmp_path, where):
    command = ["report", str(results_csv), "--out", str(tmp_path / "report")]
    done = crossling(*(["-v", *command] if where == "before" else [*command, "-v"]))
    assert done.returncode == 0, done.stderr
    debug = [line for line in done.stderr.splitlines() if line.startswith("DEBUG")]
    assert any(line.startswith("DEBUG crossling.report: wrote") for line in debug)
    assert all(line.startswith("DEBUG crossling") for line in debug), debug[:3]  # no matplotlib chatter


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_shows_only_warnings(results_csv, tmp_path, where):
    command = ["report", str(results_csv), "--out", str(tmp_path / "report")]
    loud = crossling(*command)
    assert "INFO crossling.report: report written" in loud.stderr
    quiet = crossling(*(["-q", *command] if where == "before" else [*command, "--quiet"]))
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr and "files written" in quiet.stdout


def test_did_you_mean_for_subcommands_aliases_and_languages(tmp_path):
    done = crossling("reprot", "x")
    assert done.returncode == 2 and "did you mean 'report'" in done.stderr and "Traceback" not in done.stderr
    done = crossling("study", "plna", "mini")
    assert done.returncode == 2 and "did you mean 'plan'" in done.stderr
    study = tmp_path / "typo.toml"
    study.write_text('checkpoints = ["xlsr-53"]\nlanguages = ["pt"]\nseeds = [0]\n[data]\nsource = "prepared"\n'
                     'path = "prepared"\n')
    done = crossling("study", "plan", str(study))
    assert done.returncode == 2 and "did you mean 'xlsr53'" in done.stderr
    done = crossling("recommend", "--language", "portugese")
    assert done.returncode == 2 and "did you mean 'pt' (Portuguese)" in done.stderr


def test_an_unknown_language_is_an_error_not_a_ranking():
    done = crossling("recommend", "--language", "klingon")
    assert done.returncode == 2 and done.stdout == ""
    assert "unknown language 'klingon'" in done.stderr and " pt " in done.stderr  # lists the known codes
    as_json = crossling("recommend", "--language", "klingon", "--json")
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["error"].startswith("unknown language 'klingon'")
    known = crossling("recommend", "--language", "pt", "--top", "1")
    assert known.returncode == 0 and known.stdout.startswith("pt: ")


def test_errors_are_json_objects_under_json(tmp_path):
    usage = crossling("models", "--json", "--bogus")
    assert usage.returncode == 2 and "unrecognized arguments: --bogus" in json.loads(usage.stdout)["error"]
    missing = crossling("study", "status", str(tmp_path / "nowhere.toml"), "--json")
    assert missing.returncode == 2 and missing.stderr == ""
    error = json.loads(missing.stdout)
    assert "nowhere.toml" in error["error"] and error["command"] == "crossling study"


#: (command path, what must be there): every command that produces a result takes --json.
RESULT_COMMANDS = [("models",), ("prepare",), ("finetune",), ("evaluate",), ("synth",), ("study", "plan"),
                   ("study", "run"), ("study", "status"), ("report",), ("recommend",), ("pretrain",),
                   ("zoo", "build"), ("demo",), ("rank",), ("export",), ("results",)]


@pytest.mark.parametrize("command", RESULT_COMMANDS, ids=" ".join)
def test_every_command_with_a_result_takes_json(command):
    done = crossling(*command, "--help")
    assert done.returncode == 0 and "--json" in done.stdout


def test_one_spelling_per_option_with_the_old_one_as_a_hidden_alias(tmp_path):
    from crossling.cli import build_parser

    given = ["finetune", "--data", "d", "--language", "xx", "--model", "m", "--out", "o"]
    assert build_parser().parse_args([*given, "--learning-rate", "0.001"]).learning_rate == 0.001
    assert build_parser().parse_args([*given, "--lr", "0.002"]).learning_rate == 0.002
    assert "--learning-rate" in crossling("pretrain", "--help").stdout
    help_text = crossling("finetune", "--help").stdout
    assert "--learning-rate" in help_text and "--lr " not in help_text
    done = crossling(*given[:2], str(tmp_path / "nowhere"), *given[3:8], str(tmp_path / "run"), "--lr", "1e-4")
    assert "--lr is deprecated; use --learning-rate" in done.stderr and done.returncode == 2


def test_report_json_names_the_files(results_csv, tmp_path):
    done = crossling("report", str(results_csv), "--out", str(tmp_path / "r"), "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert Path(printed["report"]) == tmp_path / "r" / "report.html" and Path(printed["report"]).is_file()
    assert all(Path(p).is_file() for p in printed["files"].values())


# --- read-only commands write nothing; example stores live under the current directory ----------------


def test_read_only_commands_create_no_store_and_no_plan(tmp_path):
    from grid_factory import make_prepared, write_study

    make_prepared(tmp_path / "prepared")
    study = str(write_study(tmp_path / "toy.toml", ["toy/alpha", "toy/beta"]))
    package = disk(STUDIES)
    work = tmp_path / "cwd"
    work.mkdir()
    before = disk(tmp_path)
    for command in (["study", "plan", "mini"], ["study", "status", "mini"], ["results", "mini"],
                    ["study", "plan", study], ["study", "status", study], ["results", study],
                    ["recommend", "--language", "pt", "--results", study], ["report", "demo", "--out", "-"],
                    ["recommend", "--language", "pt", "--results", "mini"]):
        done = crossling(*command, cwd=work)
        assert done.returncode in (0, 2) and "Traceback" not in done.stderr, (command, done.stderr)
        assert disk(tmp_path) == before, command  # neither toy.runs/ beside the study nor mini.runs/ here
    assert disk(STUDIES) == package  # nothing inside the installed package


def test_study_status_takes_a_store_directory(tmp_path):
    from grid_factory import TOY, make_prepared, write_study

    from crossling.grid import run_study
    from crossling.study import load_study

    make_prepared(tmp_path / "prepared")
    study = write_study(tmp_path / "toy.toml", ["toy/alpha", "toy/beta"])
    run_study(load_study(study), tmp_path / "store", run_function=TOY)
    by_store = crossling("study", "status", str(tmp_path / "store"), "--json")
    by_study = crossling("study", "status", str(study), "--store", str(tmp_path / "store"), "--json")
    assert by_store.returncode == 0, by_store.stdout + by_store.stderr
    assert json.loads(by_store.stdout) == json.loads(by_study.stdout)
    assert json.loads(by_store.stdout)["counts"]["done"] == 4
    not_a_store = crossling("study", "status", str(tmp_path / "prepared"))
    assert not_a_store.returncode == 2 and "not a study store (no plan.json" in not_a_store.stderr


def test_an_example_study_runs_into_a_store_under_the_current_directory(tmp_path):
    import os
    import signal

    package = disk(STUDIES)
    child = subprocess.Popen([sys.executable, "-m", "crossling", "study", "run", "mini"], cwd=tmp_path,
                             env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        first = child.stderr.readline()
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert first.strip() == f"store: {tmp_path.resolve() / 'mini.runs'}"
    assert disk(STUDIES) == package


# --- a failed command leaves the disk as it found it ------------------------------------------------------

#: One mistake per command that writes (paths relative to a folder holding prep/ (a prepared language xx),
#: adir/, afile, bad.toml, bad.csv and ckbad/ (a checkpoint folder without weights)).
FAILING = {
    "prepare": ["prepare", "nowhere", "--languages", "pt", "--out", "out"],
    "finetune data": ["finetune", "--data", "nowhere", "--language", "xx", "--model", "random-init", "--out", "run"],
    "finetune model": ["finetune", "--data", "prep", "--language", "xx", "--model", "nosuch", "--out", "run"],
    "finetune checkpoint": ["finetune", "--data", "prep", "--language", "xx", "--model", "ckbad", "--out", "run"],
    "evaluate": ["evaluate", "nowhere", "--data", "prep", "--language", "xx", "--out", "scores"],
    "synth": ["synth", "--languages", "klingon", "--hours", "0.01", "--out", "corpus"],
    "study plan": ["study", "plan", "bad.toml"],
    "study run": ["study", "run", "bad.toml"],
    "study status": ["study", "status", "bad.toml"],
    "results": ["results", "mini", "--out", "adir"],
    "report": ["report", "bad.csv", "--out", "report"],
    "recommend": ["recommend", "--language", "klingon", "--out", "recommendation.txt"],
    "pretrain": ["pretrain", "--data", "prep", "--languages", "yy", "--out", "pretrained"],
    "zoo build": ["zoo", "build", "--recipe", "bad.toml", "--work", "zoo-work", "--out", "zoo"],
    "demo": ["demo", "--quick", "--out", "afile/demo"],
    "rank": ["rank", "--data", "prep", "--language", "xx", "--models", "nosuch"],
    "export": ["export", "prep", "--language", "yy", "--to", "lhotse", "--out", "exported"],
}


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory) -> Path:
    from tinydata_factory import make_prepared

    root = tmp_path_factory.mktemp("mistakes")
    make_prepared(root / "prep", "xx", n_train=4, n_dev=2, n_test=2)
    (root / "adir").mkdir()
    (root / "afile").write_text("mine\n")
    (root / "bad.toml").write_text("x = 1\n")
    (root / "bad.csv").write_text("a,b\n1,2\n")
    (root / "ckbad").mkdir()
    (root / "ckbad" / "config.json").write_text('{"model_type": "wav2vec2"}')
    return root


@pytest.mark.parametrize("command", FAILING.values(), ids=FAILING.keys())
def test_a_failed_command_leaves_the_disk_as_it_found_it(mistakes, command):
    before = disk(mistakes)
    done = crossling(*command, cwd=mistakes)
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert disk(mistakes) == before


# --- live progress: plain lines when stderr is a log ----------------------------------------------------


def _event(**states):
    from crossling.grid import GridProgress

    values = dict(total=4, done=0, failed=0, running=1, elsewhere=0, pending=3, eta_seconds=None, run_id="r1",
                  event="started")
    return GridProgress(**{**values, **states})


def test_in_a_log_the_grid_display_prints_a_line_per_run_and_at_least_every_interval(capsys):
    import time

    from crossling.cli import _GridLog

    display = _GridLog(every=0.2)
    display(_event())
    time.sleep(0.7)  # no event meanwhile: the timer still reports
    display(_event(event="step", step="fine-tuning 3/6"))
    time.sleep(0.4)
    display(_event(event="done", done=1, running=0, pending=3, eta_seconds=90.0, seconds=30.0))
    display.close()
    lines = capsys.readouterr().err.splitlines()
    assert "runs 0/4: done 0, running 1, failed 0, pending 3; ETA ?; current run: fine-tuning 3/6" in lines
    periodic = [line for line in lines if line.startswith("runs 0/4: done 0, running 1")]
    assert len(periodic) >= 2
    assert "run r1 done in 30 s; runs 1/4: done 1, running 0, failed 0, pending 3; ETA 1.5 min" in lines
    assert lines[-1].startswith("ended: runs 1/4")
    assert "\r" not in "".join(lines)


def test_in_a_log_a_long_step_prints_done_over_total(capsys):
    from crossling.cli import tqdm_track

    assert list(tqdm_track(range(5), 5, "fine-tuning")) == list(range(5))  # capsys: stderr is no terminal
    err = capsys.readouterr().err
    assert err.startswith("fine-tuning: 5/5 (") and "\r" not in err


@pytest.mark.slow
def test_study_run_in_a_log_shows_each_run_and_its_steps(tmp_path):
    from grid_factory import REAL_RECIPE, write_study
    from tinydata_factory import make_prepared, make_tiny_checkpoint

    from crossling.executors import ProcessExecutor
    from crossling.grid import run_study
    from crossling.study import load_study

    for k, language in enumerate(("xx", "yy")):
        make_prepared(tmp_path / "prepared", language, n_train=8, n_dev=2, n_test=2, seed=k)
    make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    study = write_study(tmp_path / "real.toml", ["ckpt"], languages=("xx", "yy"),
                        recipe={**REAL_RECIPE, "max_steps": 6})
    done = crossling("study", "run", str(study), "--json", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["executed"] == 2 and summary["done"] == 2
    err = done.stderr
    assert "\r" not in err and err.startswith(f"store: {tmp_path.resolve() / 'real.runs'}")
    assert err.count("fine-tuning: 6/6 (") == 2  # the current run's steps (one worker, in this process)
    ended = [line for line in err.splitlines() if line.startswith("run ckpt-")]
    assert [line.split("; ")[1].split(":")[0] for line in ended] == ["runs 1/2", "runs 2/2"]
    assert all(" done in " in line for line in ended)
    quiet = crossling("-q", "study", "run", str(study), "--retry-failed", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and "0 run(s) executed" in quiet.stdout

    # One grid process (what --workers 1 --threads 1 starts): its run's steps reach this process's display.
    events = []
    run_study(load_study(study), tmp_path / "one", executor=ProcessExecutor(workers=1, threads=1),
              progress=events.append)
    steps = [event.step for event in events if event.step]
    assert steps.count("fine-tuning 6/6") == 2 and "fine-tuning 1/6" in steps  # each run's training...
    assert all(re.fullmatch(r"fine-tuning \d/6|decoding \d+/\d+", step) for step in steps)  # ...and scoring
    assert all(event.running == 1 for event in events if event.step)


# --- issue 20: report and recommend write to '-' and follow the output rules -----------------------------


def test_report_to_stdout_is_one_self_contained_page(results_csv, tmp_path):
    done = crossling("report", str(results_csv), "--out", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>") and done.stdout.rstrip().endswith("</html>")
    assert 'src="data:image/png;base64,' in done.stdout and 'src="figures/' not in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written beside it


def test_recommend_json_follows_the_output_rules(tmp_path):
    import os
    import threading

    def recommend(out: str) -> subprocess.CompletedProcess:
        return crossling("recommend", "--language", "pt", "--top", "2", "--json", "--out", out)

    printed = recommend("-")
    assert printed.returncode == 0 and json.loads(printed.stdout)["language"] == "pt"
    expected = printed.stdout
    regular = tmp_path / "r.json"
    assert recommend(str(regular)).returncode == 0 and regular.read_text() == expected
    link = tmp_path / "link.json"
    link.symlink_to(regular)
    regular.write_text("old\n")
    assert recommend(str(link)).returncode == 0
    assert link.is_symlink() and regular.read_text() == expected  # the link stays a link; its file is new
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    assert recommend(str(fifo)).returncode == 0
    reader.join(timeout=60)
    assert received == [expected] and fifo.is_fifo()
    folder = tmp_path / "folder"
    folder.mkdir()
    refused = recommend(str(folder))
    assert refused.returncode == 2 and "is a directory" in json.loads(refused.stdout)["error"]
    assert list(folder.iterdir()) == []


@pytest.mark.slow
def test_quiet_finetune_keeps_the_console_quiet_and_the_run_log_full(tmp_path):
    from tinydata_factory import make_prepared, make_tiny_checkpoint

    make_prepared(tmp_path / "prep", "xx", n_train=6, n_dev=2, n_test=2)
    make_tiny_checkpoint(tmp_path / "ckpt", "wav2vec2")
    done = crossling("-q", "finetune", "--data", "prep", "--language", "xx", "--model", "ckpt", "--out", "run",
                     "--steps", "2", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INFO" not in done.stderr and "fine-tuning" not in done.stderr and "test CER" in done.stdout
    assert "INFO crossling.finetune: step 1 " in (tmp_path / "run" / "train.log").read_text()
