"""Accuracy benchmark of GsRCL / AF-RCL against linear SVM, SVMrejection and CellTypist-style logistic regression.

Trains every method on each task's reference, annotates its query and writes accuracy.md, accuracy.json,
accuracy.png and confusion_<task>.png (Abdelaal et al. 2019 protocol; see ``benchmarks/harness``). Tasks are in
``benchmarks/tasks.json``, results go to ``benchmarks/results/``. Examples::

    .venv/bin/python benchmarks/accuracy.py --list
    .venv/bin/python benchmarks/accuracy.py --methods svm,svm_rejection,celltypist
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/accuracy.py --tasks xin_to_wang_all --methods gsrcl --merge

Exit codes: 0 done (a method that failed on a task is recorded as failed in the report); 2 bad flags; a
``gsrcl.errors`` code for a bad config, data folder or output folder (one line on stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

# run as ``python benchmarks/accuracy.py``, this script's folder (and so the harness) is first on sys.path
from harness.methods import METHOD_NAMES
from harness.tasks import DEFAULT_CONFIG, DEFAULT_SEED, QUICK_MAX_CELLS

PROG = "benchmarks/accuracy.py"
#: Thread-count variables recorded with the command: they change the float reductions of training, hence the models.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def build_parser() -> argparse.ArgumentParser:
    """The flags of the benchmark."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog="Writes accuracy.md, accuracy.json, accuracy.png and confusion_<task>.png.")
    p.add_argument("--config", metavar="FILE", help=f"task config (default: {DEFAULT_CONFIG.name} beside this script)")
    p.add_argument("--data", metavar="DIR", help="folder of the data files (default: the config's data_dir)")
    p.add_argument("--tasks", metavar="A,B", help="comma-separated task names (default: all; see --list)")
    p.add_argument("--methods", metavar="A,B",
                   help=f"comma-separated methods (default: all: {','.join(METHOD_NAMES)})")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny models, a few epochs and at most {QUICK_MAX_CELLS} cells per side (for tests)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/ beside the config); files there "
                                                "are replaced")
    p.add_argument("--merge", action="store_true",
                   help="keep the other tasks / methods of an earlier accuracy.json in --out")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of every method (default {DEFAULT_SEED})")
    p.add_argument("--in-process", action="store_true",
                   help="run the methods in this process instead of one fresh process each (faster start, "
                        "memory figures less clean)")
    p.add_argument("--list", action="store_true", help="list the tasks and methods, run nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no messages but errors")
    p.add_argument("-v", "--verbose", action="store_true", help="more messages")
    return p


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed flags, after the thread-count variables that were set.

    Parameters
    ----------
    args : argparse.Namespace
        As `build_parser` parses them.

    Returns
    -------
    str
        A shell-quoted ``python benchmarks/accuracy.py ...`` with the flags that differ from the defaults.
    """
    parts = [f"{var}={os.environ[var]}" for var in THREAD_VARIABLES if os.environ.get(var)]
    parts += ["python", PROG]
    for flag in ("config", "data", "tasks", "methods", "out"):
        if getattr(args, flag):
            parts += [f"--{flag}", str(getattr(args, flag))]
    for flag in ("quick", "merge", "in_process"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    if args.seed != DEFAULT_SEED:
        parts += ["--seed", str(args.seed)]
    return shlex.join(parts)


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("harness", "gsrcl"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the flags ask for (or list the tasks); returns the exit code."""
    from harness.runner import run_benchmark
    from harness.tasks import load_config

    config = load_config(args.config or DEFAULT_CONFIG, args.data)
    if args.list:
        for name, task in config.tasks.items():
            print(f"{name}\t{task.kind}\t{task.description}")
        print("methods: " + ", ".join(METHOD_NAMES))
        return 0
    out = Path(args.out) if args.out else config.path.parent / "results"
    results = run_benchmark(config, _names(args.tasks), _names(args.methods), out, quick=args.quick,
                            seed=args.seed, isolate=not args.in_process, merge=args.merge,
                            command=command_line(args), quiet=args.quiet)
    failed = [f"{t}/{m}" for t, r in results["tasks"].items() for m, e in r["methods"].items()
              if e.get("status") == "failed"]
    if not args.quiet:
        print(f"wrote {out / 'accuracy.md'}, accuracy.json and accuracy.png"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run, and turn errors into one line and an exit code.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        0, the ``exit_code`` of a ``gsrcl.errors.GsrclError``, or 130 when interrupted (argparse exits with 2 on
        bad flags).
    """
    from gsrcl.errors import GsrclError

    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet, args.verbose)
    try:
        return run(args)
    except GsrclError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
