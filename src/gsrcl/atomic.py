"""Atomic writes: a temporary file beside the target, renamed onto it once complete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temp_file(folder: str | os.PathLike, name: str) -> Path:
    """An empty temporary file in ``folder`` for ``name``, with the permissions a plain new file gets."""
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return Path(path)
