"""The ``gsrcl`` command. Each sub-command lives in its own module with ``register(subparsers)``, which adds
its parser and sets ``func`` to a handler taking the parsed arguments and returning an exit code."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import GsrclError

COMMANDS = ("verify", "train", "predict", "references", "demo")

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
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a command still being written is simply absent
            if exc.name and exc.name.startswith(__name__):
                continue
            raise
        module.register(sub)
    return parser


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
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
    setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    tuned = args.command in TRAINING_COMMANDS
    previous = allow_malloc_tuning() if tuned else False
    try:
        return int(args.func(args) or 0)
    except GsrclError as exc:
        print(f"gsrcl {args.command}: error: {exc.message}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"gsrcl {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"gsrcl {args.command}: error: out of memory; use a smaller --block-size or a subset", file=sys.stderr)
        return 1
    finally:
        if tuned:  # main() called from Python leaves the setting as it found it
            allow_malloc_tuning(previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
