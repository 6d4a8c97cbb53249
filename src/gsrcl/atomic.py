"""Atomic writes: a temporary file beside the target, renamed onto it once complete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def temp_file(folder: str | os.PathLike, name: str) -> Path:
    """An empty temporary file in ``folder`` for ``name``, with the permissions a plain new file gets."""
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(path, 0o666 & ~_umask())
    return Path(path)


def temp_dir(folder: str | os.PathLike, name: str, tag: str = "tmp") -> Path:
    """An empty temporary folder in ``folder`` for ``name``, with the permissions a plain new folder gets
    (``mkdtemp`` alone makes it private to its owner)."""
    path = tempfile.mkdtemp(prefix=f".{name}.{tag}-", dir=folder)
    os.chmod(path, 0o777 & ~_umask())
    return Path(path)
