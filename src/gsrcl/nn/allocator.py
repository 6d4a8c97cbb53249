"""Keep large freed blocks for reuse while training, on Linux with glibc.

Every training step allocates a dense gradient the size of the first layer (19,371 x 1,024 floats, 80 MB for
AF-RCL; 317 MB for GsRCL's 4,096 wide layer). glibc serves blocks that large with a fresh ``mmap`` and gives
them back on ``free``, so every step pays a page fault for each 4 KB of the gradient: allocating and zeroing
the 80 MB took 20-40 ms against 5 ms for zeroing a kept buffer, a third of an AF-RCL step on 2 cores
(``benchmarks/train_step.py``). PyTorch's CPU tuning guide meets this by preloading jemalloc or tcmalloc; the
same effect with glibc alone is ``mallopt``: serve every block from the heap (``M_MMAP_MAX`` 0) and keep freed
memory for the next step (a high ``M_TRIM_THRESHOLD``). Afterwards glibc's defaults are put back and the kept
memory returned (``malloc_trim``). Peak memory is unchanged: the freed gradient is reused, not added to.

Nothing is changed where the user tuned malloc (``MALLOC_*_`` or ``GLIBC_TUNABLES`` in the environment), on
other C libraries, or with ``GSRCL_KEEP_MALLOC=1``. Arithmetic is unaffected: a model is bitwise the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from typing import Iterator

__all__ = ["reuse_large_allocations", "malloc_tunable"]

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults, restored afterwards
DEFAULT_MMAP_MAX = 65536
KEEP_TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt takes: freed heap memory is kept while training

_lock = threading.Lock()
_depth = 0


def malloc_tunable() -> bool:
    """Whether this process's allocator is glibc's and left to gsrcl (see the module docstring)."""
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
    """Within the block, large freed blocks are kept for reuse (yields whether the setting was changed).
    Nested and concurrent uses are counted: the outermost exit restores glibc's defaults."""
    global _depth
    libc = _libc() if malloc_tunable() else None
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
