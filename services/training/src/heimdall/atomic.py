"""Atomic file writes that end with ordinary permissions.

A file is written to a temporary sibling (``tempfile.mkstemp`` in the same folder), flushed to disk
and renamed over the destination, so readers see the old file or the new one, never half of it.
``mkstemp`` creates its file with mode 0600; left like that, a ``model.onnx`` is unreadable for an
inference service running as another user. Every helper here therefore gives the final file the
mode a plain ``open(path, "w")`` would: ``0o666 & ~umask``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from heimdall.errors import UserError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "current_umask",
    "default_file_mode",
    "removed_on_failure",
]


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no other way to read it: set and restore at once
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write (e.g. by a library that takes a file name).

    When the block succeeds the temporary file gets :func:`default_file_mode`, is flushed and renamed
    onto ``path``; when it raises, the temporary file is removed and ``path`` is left untouched.
    An OS error creating or renaming the file (no such folder, permission denied, disk full) is a
    :class:`~heimdall.errors.UserError` naming ``path``; errors of the block itself pass unchanged.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            os.chmod(tmp, default_file_mode())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with ordinary permissions (``0o666 & ~umask``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, with ordinary permissions (``0o666 & ~umask``)."""
    return atomic_write_bytes(path, text.encode(encoding))


def check_output_dir(path: str | os.PathLike[str], what: str = "--output-dir") -> Path:
    """Refuse an output folder that is an existing file, or lies under one, before anything is written."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "" if p == path else f" ({p} is a file)"
                raise UserError(f"{what} {path} is not a directory{where}")
            break
    return path


@contextmanager
def removed_on_failure(folder: str | os.PathLike[str], keep_files: bool = False) -> Iterator[Path]:
    """For a folder the block is about to create: when the block raises, remove what it made.

    Nothing is removed when ``folder`` existed before; missing parents made along the way go too.
    ``keep_files=True`` only removes folders left empty (a failed training run keeps the checkpoints
    it wrote, for ``--resume``).
    """
    folder = Path(folder)
    top = None  # the highest missing folder on the way to `folder`: everything below it is ours
    for p in (folder, *folder.parents):
        if p.exists():
            break
        top = p
    try:
        yield folder
    except BaseException:
        if top is not None and top.is_dir():
            if keep_files:
                for sub in sorted((d for d in top.rglob("*") if d.is_dir()), reverse=True):
                    _rmdir_if_empty(sub)
                _rmdir_if_empty(top)
            else:
                shutil.rmtree(top, ignore_errors=True)
        raise


def _rmdir_if_empty(folder: Path) -> None:
    with suppress(OSError):
        folder.rmdir()
