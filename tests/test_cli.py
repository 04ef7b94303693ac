"""The CLI entry point (the torch-free promise of the analysis half is checked in test_code.py)."""

import json
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
                   ("zoo", "build"), ("demo",)]


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
