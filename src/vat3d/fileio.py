"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``.

A crash or Ctrl-C never leaves a half-written file under the final name, and an existing file
stays as it was until the new one is complete.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(temp_name: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give a finished temporary file the usual permissions (0666 less the umask; ``mkstemp`` makes
    0600) and move it to ``path`` in one step."""
    os.chmod(temp_name, 0o666 & ~_umask())
    os.replace(temp_name, path)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; it replaces ``path`` when the block ends
    without an exception and is removed otherwise. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, encoding=encoding) as temp:
            yield temp
            temp.flush()
            os.fsync(temp.fileno())
        publish(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (also via a symlink, a hard link or another spelling)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Write ``data`` to ``path`` atomically. Refuses (``ValueError``) to write over any path in
    ``protect`` (typically the command's input files)."""
    for p in protect:
        if same_file(path, p):
            raise ValueError(f"refusing to overwrite input file {os.fspath(p)!r}")
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` to ``path``, atomically."""
    with atomic_open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
