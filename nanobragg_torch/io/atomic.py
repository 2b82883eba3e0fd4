"""File access with the project's error rules: writes go to a temporary name renamed into place only when
they succeed (`atomic_write`); reads of input files fail with a one-line InputError naming the file
(`read_input`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from nanobragg_torch.errors import InputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yield a file object open on a temporary file next to ``path``; on success rename it to ``path``.

    If the body raises, the temporary file is removed and ``path`` is left untouched (an existing file keeps
    its old contents). The new file gets the permissions a plain ``open()`` would give it (0666 & ~umask).
    ``mode`` must be a write mode ("w", "wb", "w+", ...); extra keyword arguments go to ``os.fdopen``.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        handle = os.fdopen(fd, mode, **open_kwargs)
    except BaseException:
        os.close(fd)
        os.unlink(tmp_name)
        raise
    try:
        with handle:
            os.chmod(tmp_name, 0o666 & ~_current_umask())
            yield handle
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def read_input(path: str | os.PathLike[str]) -> bytes:
    """The whole input file; an unreadable one is an InputError naming it."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise InputError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from exc
