"""Result files written whole or not at all: a reader never sees half a file, and a failed write leaves the old
one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def jsonable(x: Any) -> Any:
    """``x`` with numpy values as Python ones, tuples as lists, keys as text and non-finite floats as None.

    Parameters
    ----------
    x : object

    Returns
    -------
    object
        What ``json.dumps`` writes as strict JSON.
    """
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    return x


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write a file through a temporary one in the same folder, then rename it over ``path``.

    Parameters
    ----------
    path : path-like
        The file; its folder must exist.
    write : callable
        Called with the temporary file's path; writes the whole content there.

    Raises
    ------
    Exception
        Whatever ``write`` raises; the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the report private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see `atomic_write`)."""

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (through `jsonable`) to ``path`` atomically."""
    write_text(path, json.dumps(jsonable(data), indent=1) + "\n")
