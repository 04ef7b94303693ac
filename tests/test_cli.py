"""The CLI entry point (the torch-free promise of the analysis half is checked in test_code.py)."""

import json
import subprocess
import sys

import pytest

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
