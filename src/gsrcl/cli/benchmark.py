"""``gsrcl benchmark``: the accuracy benchmark (`gsrcl.benchmark`) against the tools users would pick instead."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from ..errors import MissingPathError
from .common import add_common_arguments

CONFIG = Path("benchmarks") / "tasks.json"


def default_config() -> Path:
    """``benchmarks/tasks.json`` in the current folder, else in the source checkout this package runs from."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (base / CONFIG).is_file():
            return base / CONFIG
    raise MissingPathError(f"no {CONFIG} here or in the gsrcl checkout: pass --config FILE")


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def register(sub) -> None:
    from ..benchmark import METHOD_NAMES, QUICK_MAX_CELLS

    p = sub.add_parser(
        "benchmark", help="accuracy benchmark of GsRCL / AF-RCL against linear SVM and CellTypist-style LR",
        description="Train every method on each task's reference, annotate its query and write accuracy.md, "
                    "accuracy.json, accuracy.png and confusion_<task>.png (Abdelaal et al. 2019 protocol).")
    add_arguments(p, METHOD_NAMES, QUICK_MAX_CELLS)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser, methods=(), quick_cells: int = 0) -> None:
    p.add_argument("--config", metavar="FILE", help=f"task config (default: {CONFIG})")
    p.add_argument("--data", metavar="DIR", help="folder of the data files (default: the config's data_dir)")
    p.add_argument("--tasks", metavar="A,B", help="comma-separated task names (default: all; see --list)")
    p.add_argument("--methods", metavar="A,B", help=f"comma-separated methods (default: all: {','.join(methods)})")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny models, a few epochs and at most {quick_cells} cells per side (for tests)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: results/ beside the config); files there "
                                                "are replaced")
    p.add_argument("--merge", action="store_true",
                   help="keep the other tasks / methods of an earlier accuracy.json in --out")
    p.add_argument("--seed", type=int, default=1111, help="seed of every method (default 1111)")
    p.add_argument("--in-process", action="store_true",
                   help="run the methods in this process instead of one fresh process each (faster start, "
                        "memory figures less clean)")
    p.add_argument("--list", action="store_true", help="list the tasks and methods, run nothing")
    add_common_arguments(p)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed flags, after the thread-count variables that were set (they change
    the float reductions of training, hence the models)."""
    parts = [f"{var}={os.environ[var]}" for var in THREAD_VARIABLES if os.environ.get(var)]
    parts += ["gsrcl", "benchmark"]
    for flag in ("config", "data", "tasks", "methods", "out"):
        if getattr(args, flag):
            parts += [f"--{flag}", str(getattr(args, flag))]
    for flag in ("quick", "merge", "in_process"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    if args.seed != 1111:
        parts += ["--seed", str(args.seed)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from ..benchmark import METHOD_NAMES, load_config, run_benchmark

    config = load_config(args.config or default_config(), args.data)
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
