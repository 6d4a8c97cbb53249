"""The versions recorded with a result (a reference's manifest, an annotation's ``uns``, a benchmark)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from . import __version__


def versions(*packages: str) -> dict[str, str]:
    """gsrcl's and Python's versions, then each installed one of ``packages`` (absent ones are left out)."""
    out = {"gsrcl": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
