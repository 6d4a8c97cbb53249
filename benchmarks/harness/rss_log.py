"""``gsrcl`` with each log line prefixed by the process's memory: ``python benchmarks/harness/rss_log.py train ...``.

Used by ``benchmarks/train_large.py --stages`` (with ``-q -v``: messages without progress bars) to see where a
command's memory goes: the resident set and its peak so far (``VmRSS``, ``VmHWM`` of /proc/self/status), GiB.
"""

from __future__ import annotations

import logging
import sys

import gsrcl.cli as cli


def memory_gib() -> tuple[float, float]:
    """(resident, peak resident) of this process, GiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 2**20
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


class MemoryFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rss, peak = memory_gib()
        return f"[rss {rss:.2f} peak {peak:.2f} GiB] {record.getMessage()}"


_setup = cli.setup_logging


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    _setup(quiet, verbose)
    for handler in logging.getLogger("gsrcl").handlers:
        handler.setFormatter(MemoryFormatter())


cli.setup_logging = setup_logging

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
