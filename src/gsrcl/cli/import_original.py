"""``gsrcl import``: an original GsRCL / AF-RCL reference folder (or its zip) as a gsrcl reference."""

from __future__ import annotations

import argparse

from .common import add_common_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import",
        help="convert a reference of the original GsRCL / AF-RCL tool into a gsrcl reference",
        description="Convert one reference folder of the original GsRCL or AF-RCL tool (or a .zip of it, as "
                    "published) into a gsrcl reference that 'gsrcl predict' uses like any other. The original's "
                    "pickled SVMs are read as plain data only, never run.",
    )
    p.add_argument("-i", "--input", required=True, metavar="PATH",
                   help="the original reference's folder (MP/REF) or its .zip")
    p.add_argument("-r", "--reference", required=True, metavar="NAME", help="name of the new gsrcl reference")
    p.add_argument("-mp", "--model-path", required=True, metavar="REFDIR", help="folder of gsrcl references")
    p.add_argument("--method", choices=("gsrcl", "afrcl"),
                   help="the original's method (default: recognised from the file names)")
    p.add_argument("--overwrite", action="store_true", help="replace a gsrcl reference of that name")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..original.importer import import_original
    from ..reference import Reference

    path = import_original(args.input, args.model_path, args.reference, method=args.method,
                           overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(repr(Reference.load(path)))
    return 0
