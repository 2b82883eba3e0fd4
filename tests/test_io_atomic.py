"""atomic_write: the file appears only after a successful write."""

from __future__ import annotations

import os
import stat

import pytest

from nanobragg_torch.io.atomic import atomic_write


def test_success_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as handle:
        handle.write(b"new contents")
        assert path.read_bytes() == b"old"  # not visible until the block ends
    assert path.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_error_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path) as handle:
        handle.write(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_error_on_new_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyError), atomic_write(tmp_path / "new.txt", "w") as handle:
        handle.write("partial")
        raise KeyError("x")
    assert os.listdir(tmp_path) == []


def test_text_mode_and_permissions(tmp_path):
    path = tmp_path / "t.txt"
    with atomic_write(path, "w", encoding="ascii") as handle:
        handle.write("hello\n")
    assert path.read_text() == "hello\n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_relative_path_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with atomic_write("rel.bin") as handle:
        handle.write(b"x")
    assert (tmp_path / "rel.bin").read_bytes() == b"x"


def test_read_mode_refused(tmp_path):
    with pytest.raises(ValueError), atomic_write(tmp_path / "x", "rb"):
        pass
