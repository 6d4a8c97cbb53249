"""The ``gsrcl`` command. Each sub-command lives in its own module with ``register(subparsers)``, which adds
its parser and sets ``func`` to a handler taking the parsed arguments and returning an exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from .. import __version__
from ..errors import EXIT_INTERRUPTED, GsrclError, OutOfMemoryError

COMMANDS = ("verify", "train", "predict", "references", "import", "demo", "serve")
MODULES = {"import": "import_original"}  # a command whose module has another name ("import" is a keyword)

TRAINING_COMMANDS = ("train", "demo")  # the commands that train a model: malloc is tuned for them

log = logging.getLogger("gsrcl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gsrcl",
        description="Annotate single-cell RNA-seq cells with a reference trained by GsRCL or AF-RCL.",
    )
    parser.add_argument("--version", action="version", version=f"gsrcl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{MODULES.get(name, name)}")
        except ModuleNotFoundError as exc:  # a command still being written is simply absent
            if exc.name and exc.name.startswith(__name__):
                continue
            raise
        module.register(sub)
    return parser


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """gsrcl's messages to stderr: info and warnings by default, none with ``quiet`` (the error line is printed
    by `main`), debug ones too with ``verbose``, which wins over ``quiet`` (``-q -v``: messages without progress
    bars, for a batch job's log)."""
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("gsrcl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def allow_malloc_tuning(allowed: bool = True) -> bool:
    """Let training keep large freed blocks for reuse in this process (``gsrcl.nn.allocator``); returns the
    previous setting.

    malloc's settings are process-wide, so only the command, which owns its process, turns this on; the Python
    API leaves them alone. Imported here, not at the top, because it imports torch.
    """
    from ..nn.allocator import allow_malloc_tuning as allow

    return allow(allowed)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    logger = logging.getLogger("gsrcl")
    saved = (logger.handlers[:], logger.level, logger.propagate)  # main() called from Python restores them
    setup_logging(quiet, verbose)
    tuned = args.command in TRAINING_COMMANDS
    previous = allow_malloc_tuning() if tuned else False
    try:
        with warnings.catch_warnings():
            if quiet and not verbose:  # the libraries' warnings too: -q prints the error line only
                warnings.simplefilter("ignore")
            return int(args.func(args) or 0)
    except GsrclError as exc:
        print(f"gsrcl {args.command}: error: {exc.message}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        if getattr(exc, "exit_at_once", False):  # HDF5 failed mid-write (a full disk): its clean-up at exit can crash
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"gsrcl {args.command}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(f"gsrcl {args.command}: error: out of memory; use a smaller --block-size or a subset", file=sys.stderr)
        return OutOfMemoryError.exit_code
    finally:
        if tuned:  # main() called from Python leaves the setting as it found it
            allow_malloc_tuning(previous)
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
