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


def test_corrupt_json_names_the_file_and_line(tmp_path):
    from crossling.errors import DataError

    broken = tmp_path / "result.json"
    broken.write_text('{\n  "cer": 0.5,\n  oops\n}\n')
    with pytest.raises(DataError, match=r"result.json:3: not valid JSON"):
        read_json(broken)


def test_corrupt_jsonl_line_is_named_and_still_a_value_error(tmp_path):
    from crossling.atomic import read_jsonl

    broken = tmp_path / "index.jsonl"
    broken.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"index.jsonl:3: not valid JSON"):
        read_jsonl(broken)
