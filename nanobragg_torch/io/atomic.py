"""File access with the project's error rules: writes go to a temporary name renamed into place only when
they succeed (`atomic_write`), and a set of outputs is renamed together or not at all (`output_group`); stale
temporaries of killed runs are swept (`sweep_stale_temporaries`); reads of input files fail with a one-line
InputError naming the file (`read_input`)."""

from __future__ import annotations

import contextlib
import contextvars
import glob
import os
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nanobragg_torch.errors import InputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TEMP_SUFFIX = ".nbtmp"  # our temporaries: ".NAME.PID.RANDOM.nbtmp" next to NAME


@dataclass
class OutputGroup:
    """Outputs that appear together or not at all (`output_group`): temporaries renamed at commit; folders made
    for them removed on failure."""

    pending: list[tuple[str, Path]] = field(default_factory=list)  # (temporary, target)
    made_folders: list[Path] = field(default_factory=list)

    def makedirs(self, folder: Path) -> None:
        missing = []
        while str(folder) and not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for f in reversed(missing):
            f.mkdir()
            self.made_folders.append(f)

    def commit(self) -> None:
        """Rename every temporary into place, with SIGINT/SIGTERM/SIGHUP held off until all are renamed; if a
        rename fails, the targets renamed before it are removed again (none of the set stays)."""
        held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        done: list[Path] = []
        try:
            for tmp, target in self.pending:
                os.replace(tmp, target)
                done.append(target)
            self.pending.clear()
        except BaseException:
            for target in done:
                with contextlib.suppress(OSError):
                    target.unlink()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def discard(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.pending.clear()
        for folder in reversed(self.made_folders):
            with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile
                folder.rmdir()
        self.made_folders.clear()


_GROUP: contextvars.ContextVar[OutputGroup | None] = contextvars.ContextVar("output_group", default=None)


@contextlib.contextmanager
def output_group() -> Iterator[OutputGroup]:
    """Inside the block, every `atomic_write` keeps its temporary until the block ends: all are renamed into
    place when the block succeeds, all removed (and the folders made by `OutputGroup.makedirs`) when it raises,
    whatever the exception (KeyboardInterrupt and signals turned into exceptions included)."""
    group = OutputGroup()
    token = _GROUP.set(group)
    try:
        yield group
        group.commit()
    except BaseException:
        group.discard()
        raise
    finally:
        _GROUP.reset(token)


def sweep_stale_temporaries(path: str | os.PathLike[str]) -> list[str]:
    """Remove our temporaries of ``path`` left by processes that no longer run (killed by SIGKILL or a power
    cut); returns the names removed."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.glob(f".{glob.escape(target.name)}.*{TEMP_SUFFIX}"):
        parts = entry.name[len(target.name) + 2 :].split(".")
        if len(parts) != 3 or not parts[0].isdigit() or _alive(int(parts[0])):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(str(entry))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yield a file object open on a temporary file next to ``path``; on success rename it to ``path``.

    If the body raises, the temporary file is removed and ``path`` is left untouched (an existing file keeps
    its old contents). The new file gets the permissions a plain ``open()`` would give it (0666 & ~umask).
    ``mode`` must be a write mode ("w", "wb", "w+", ...); extra keyword arguments go to ``os.fdopen``.
    Inside `output_group` the rename waits for the end of the group.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        handle = os.fdopen(fd, mode, **open_kwargs)
    except BaseException:
        os.close(fd)
        os.unlink(tmp_name)
        raise
    group = _GROUP.get()
    try:
        with handle:
            os.chmod(tmp_name, 0o666 & ~_current_umask())
            yield handle
        if group is None:
            os.replace(tmp_name, target)
        else:
            group.pending.append((tmp_name, target))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


UTF8_BOM = b"\xef\xbb\xbf"


def read_input(path: str | os.PathLike[str], text: bool = False) -> bytes:
    """The whole input file; an unreadable one is an InputError naming it. ``text``: a text input, whose
    leading UTF-8 byte-order mark (written by some editors) is dropped."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InputError(f"{os.fspath(path)}: cannot read: {exc.strerror or exc}") from exc
    return data.removeprefix(UTF8_BOM) if text else data
