"""Writing files whole or not at all: the one writer of every file flowforge writes (training states,
run folders, pictures, converted tables)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FilePath = str | os.PathLike


@contextmanager
def atomic_path(path: FilePath, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file is named ``.NAME.PID.RANDOM.partial`` and removed if the block fails (a full
    disk, an interruption), so ``path`` is either its old self or complete. An :class:`OSError` that
    names the temporary file, or no file, is raised again naming ``path``. With ``durable`` the
    file's data are flushed to the disk (``fsync``) before the move and the folder after it, so the
    new file also survives a crash of the machine.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield temporary
        if durable:
            _sync(temporary, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
        os.replace(temporary, path)
    except OSError as error:
        if error.filename is None or Path(error.filename) == temporary:
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)
    if durable:
        _sync_folder(path.parent)


def _sync(path: Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it is on the disk; not possible (nor needed) on Windows."""
    if os.name != "nt":
        _sync(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
