"""Atomic writes: all-or-nothing, and artifacts get ordinary permissions."""

import os
import stat

import pytest

from crossling.atomic import atomic_path, read_json, write_json_atomic


def test_written_file_has_umask_permissions(tmp_path):
    target = tmp_path / "result.json"
    old = os.umask(0o022)
    try:
        write_json_atomic(target, {"cer": 0.5})
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert read_json(target) == {"cer": 0.5}


def test_failure_inside_block_keeps_old_content(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
