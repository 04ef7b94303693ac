"""Atomic writes: all-or-nothing, artifacts get ordinary permissions, and what the target is decides how
it is written (never replacing a link, device, FIFO or socket crossling did not create)."""

import errno
import os
import socket
import stat
import threading
from pathlib import Path

import pytest
from faults import tmpfs

from crossling.atomic import (
    IN_PLACE,
    REPLACE,
    SOCKET,
    TO_STDOUT,
    atomic_path,
    output_kind,
    read_json,
    write_json_atomic,
    write_text_atomic,
)
from crossling.errors import OutputError


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


# --- what the target is decides how it is written (never replace what crossling did not create) ------


def test_a_missing_file_is_created_and_a_regular_file_replaced_keeping_its_mode(tmp_path):
    target = tmp_path / "new" / "out.csv"
    write_text_atomic(target, "a\n")
    assert target.read_text() == "a\n"
    target.chmod(0o640)
    write_text_atomic(target, "b\n")
    assert target.read_text() == "b\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.csv"]


def test_a_symlink_stays_a_link_and_its_destination_gets_the_content(tmp_path):
    destination = tmp_path / "real" / "results.csv"
    destination.parent.mkdir()
    destination.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(destination)
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and link.resolve() == destination
    assert destination.read_text() == "new\n"


def test_a_dangling_symlink_creates_its_destination(tmp_path):
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "target.csv")
    write_text_atomic(link, "x\n")
    assert link.is_symlink() and (tmp_path / "target.csv").read_text() == "x\n"


def test_a_fifo_is_written_in_place_for_its_reader(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    write_text_atomic(fifo, "streamed\n")
    reader.join(timeout=10)
    assert received == ["streamed\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO, not a file renamed over it
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_proc_file_descriptor_is_written_in_place(tmp_path):
    """/dev/stdout is a link to /proc/self/fd/1: a pipe or terminal there must receive the output."""
    read_end, write_end = os.pipe()
    try:
        target = Path(f"/proc/self/fd/{write_end}")
        assert output_kind(target)[0] == IN_PLACE
        write_text_atomic(target, "via fd\n")
        assert os.read(read_end, 100) == b"via fd\n"
    finally:
        os.close(read_end)
        os.close(write_end)
    regular = tmp_path / "redirected.txt"
    with open(regular, "w") as handle:  # `> file`: the shell holds the file open through fd 1
        assert output_kind(f"/proc/self/fd/{handle.fileno()}")[0] == IN_PLACE
    assert output_kind(regular) == (REPLACE, regular)


def test_a_unix_socket_receives_the_output(tmp_path):
    path = tmp_path / "out.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    received = []

    def serve():
        connection, _ = server.accept()
        with connection:
            received.append(b"".join(iter(lambda: connection.recv(4096), b"")))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert output_kind(path)[0] == SOCKET
    write_text_atomic(path, "to the socket\n")
    thread.join(timeout=10)
    server.close()
    assert received == [b"to the socket\n"]


def test_dash_is_standard_output(capfdbinary):
    assert output_kind("-")[0] == TO_STDOUT
    write_text_atomic("-", "printed\n")
    assert capfdbinary.readouterr().out == b"printed\n"


def test_a_directory_where_a_file_is_expected_is_a_clear_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match=r"out: is a directory; expected a file name"):
        write_text_atomic(tmp_path / "out", "x")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_file_in_the_path_where_a_folder_is_expected_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputError, match="cannot write"):
        write_text_atomic(tmp_path / "file" / "out.csv", "x")
    assert (tmp_path / "file").read_text() == "mine"


def test_a_read_only_file_system_is_a_clear_error_and_changes_nothing(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "keep.csv").write_text("old")
    with tmpfs(tmp_path / "ro", read_only=True) as folder:
        with pytest.raises(OutputError, match=r"keep.csv: cannot write \(the file system is read-only\)"):
            write_text_atomic(folder / "keep.csv", "new")


def test_a_full_disk_is_a_clear_error_keeping_the_old_content(tmp_path):
    with tmpfs(tmp_path / "small", size="64k") as folder:
        write_text_atomic(folder / "results.csv", "old\n")
        with pytest.raises(OutputError, match=r"results.csv: cannot write \(no space left on the device\)"):
            write_text_atomic(folder / "results.csv", "x" * 200_000)
        assert (folder / "results.csv").read_text() == "old\n"
        assert [p.name for p in folder.iterdir()] == ["results.csv"]


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_injected_write_errors_become_clear_errors(tmp_path, code, reason):
    """The same guarantees where no tmpfs can be mounted: the failing write is named, nothing is left."""
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(OutputError, match=reason), atomic_path(target) as tmp:
        raise OSError(code, os.strerror(code), str(tmp))
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_other_errors_inside_the_block_are_not_mistaken_for_output_errors(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.csv"):
        open(tmp_path / "missing-input.csv")
