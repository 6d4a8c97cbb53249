"""Wall time and peak resident memory of one step, and the software and machine a run was made on."""

from __future__ import annotations

import datetime as dt
import gc
import os
import platform
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

#: How the memory figures are measured, for the results file.
MEMORY_NOTE = (
    "peak resident memory (VmHWM) of the worker process during the step; the high-water mark is reset just before "
    "the step through /proc/self/clear_refs; delta = that peak minus the resident memory when the step began (the "
    "data already loaded and the libraries imported are in the peak, not in the delta)"
)


def _proc_status(key: str) -> int | None:
    """A memory line of /proc/self/status in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _maxrss_kib() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if platform.system() == "Darwin" else rss


@contextmanager
def measure() -> Iterator[dict[str, Any]]:
    """Measure the enclosed step.

    Yields
    ------
    dict
        Filled when the step ends: ``seconds`` (wall clock), ``peak_mib`` (peak resident memory of the process
        during the step), ``delta_mib`` (that peak minus the resident memory at the start; None where unknown)
        and ``peak_reset`` (False where the high-water mark cannot be reset: the peak is then the process's so
        far).
    """
    gc.collect()
    record: dict[str, Any] = {}
    reset = _reset_peak()
    start = _proc_status("VmRSS")
    t0 = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = time.perf_counter() - t0
        peak = _proc_status("VmHWM") if reset else _maxrss_kib()
        record["peak_mib"] = peak / 1024 if peak is not None else None
        record["delta_mib"] = (peak - start) / 1024 if peak is not None and start is not None else None
        record["peak_reset"] = reset


def environment() -> dict[str, Any]:
    """Versions of gsrcl, Python, numpy, scikit-learn and torch (where installed), the platform and CPU counts."""
    import sklearn

    import gsrcl

    env = {"gsrcl": gsrcl.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "scikit-learn": sklearn.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        env["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
