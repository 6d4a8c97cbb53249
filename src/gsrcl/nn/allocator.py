"""Keep large freed blocks for reuse while training, on Linux with glibc, in the ``gsrcl`` command only.

Each training step allocates a dense gradient the size of the first layer. glibc serves blocks that large with
a fresh ``mmap`` and unmaps them on ``free``, so every step pays a page fault for each page of the gradient.
Within `reuse_large_allocations`, glibc serves every block from the heap (``M_MMAP_MAX`` 0) and keeps freed
memory for the next step (a high ``M_TRIM_THRESHOLD``); on exit its defaults are put back and the kept memory
is returned (``malloc_trim``). Peak memory is unchanged (the freed gradient is reused, not added to) and the
arithmetic is unaffected. The measurements are in ``docs/decisions.md``.

malloc's settings belong to the whole process, so a library must not change them behind its caller's back:
nothing is changed until `allow_malloc_tuning` has been called, which the ``gsrcl`` command does
(``gsrcl.cli.main``) and ``import gsrcl`` or the Python API never do. Nothing is changed either where the user
tuned malloc (``MALLOC_*_`` or ``GLIBC_TUNABLES`` in the environment), on other C libraries, or with
``GSRCL_KEEP_MALLOC=1``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from typing import Iterator

__all__ = ["allow_malloc_tuning", "malloc_tuning_allowed", "malloc_tunable", "reuse_large_allocations"]

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults, restored afterwards
DEFAULT_MMAP_MAX = 65536
KEEP_TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt takes: freed heap memory is kept while training

_lock = threading.Lock()
_depth = 0
_allowed = False


def allow_malloc_tuning(allowed: bool = True) -> bool:
    """Let `reuse_large_allocations` change malloc's settings in this process (or stop it, with False).

    Parameters
    ----------
    allowed : bool
        Whether later uses of `reuse_large_allocations` may change the settings. Off until called: only the
        process's owner (the ``gsrcl`` command, a benchmark script) should turn it on.

    Returns
    -------
    bool
        The previous setting, to restore it afterwards.
    """
    global _allowed
    previous, _allowed = _allowed, bool(allowed)
    return previous


def malloc_tuning_allowed() -> bool:
    """Whether `allow_malloc_tuning` has turned the tuning on in this process."""
    return _allowed


def malloc_tunable() -> bool:
    """Whether this process's allocator is glibc's and left to gsrcl by the environment.

    Returns
    -------
    bool
        False with ``GSRCL_KEEP_MALLOC=1``, a ``MALLOC_*_`` variable or a malloc setting in ``GLIBC_TUNABLES``,
        or off Linux/glibc; True otherwise. Independent of `allow_malloc_tuning`.
    """
    if os.environ.get("GSRCL_KEEP_MALLOC") == "1":
        return False
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _libc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # pragma: no cover - no C library to open
        return None


@contextlib.contextmanager
def reuse_large_allocations() -> Iterator[bool]:
    """Within the block, large freed blocks are kept for reuse, where `allow_malloc_tuning` was called and
    `malloc_tunable` holds; elsewhere the block runs with malloc untouched.

    Nested and concurrent uses are counted: the outermost exit restores glibc's defaults.

    Yields
    ------
    bool
        Whether malloc's settings were changed for the block.
    """
    global _depth
    libc = _libc() if _allowed and malloc_tunable() else None
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
