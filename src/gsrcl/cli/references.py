"""``gsrcl references``: list the references in a folder, or show one in detail (``references show NAME``)."""

from __future__ import annotations

import logging

from ..errors import InvalidReferenceError
from ..reference import list_references, read_manifest, resolve
from ..reference_summary import describe
from .common import add_common_arguments

log = logging.getLogger("gsrcl.references")


def register(sub) -> None:
    p = sub.add_parser(
        "references", help="list the references in a folder, or show one in detail",
        usage="%(prog)s -mp REFDIR [--names] [-q] [-v]\n       %(prog)s show NAME -mp REFDIR [--all-genes]",
        description="List the references under REFDIR with their method, cell types and genes; "
                    "'gsrcl references show NAME -mp REFDIR' shows one: cells per type, validation scores, genes, "
                    "value handling, novelty score, creation. Only manifests are read.",
    )
    p.add_argument("show", nargs="?", choices=["show"], metavar="show",
                   help="show the reference NAME in detail instead of listing them all")
    p.add_argument("name", nargs="?", metavar="NAME", help="the reference to show")
    p.add_argument("-mp", "--model-path", required=True, metavar="REFDIR", help="folder holding the references")
    p.add_argument("--names", action="store_true", help="list the names only, one a line")
    p.add_argument("--all-genes", action="store_true", help="show: name every gene, not only the first few")
    add_common_arguments(p)
    p.set_defaults(func=run, parser=p)


def run(args) -> int:
    if args.show:
        if not args.name:
            args.parser.error("show needs the NAME of a reference: gsrcl references show NAME -mp REFDIR")
        if args.names:
            args.parser.error("--names lists the references; it does not go with show")
        return show(args.model_path, args.name, all_genes=args.all_genes)
    if args.all_genes:
        args.parser.error("--all-genes goes with show: gsrcl references show NAME -mp REFDIR --all-genes")
    return list_all(args.model_path, names_only=args.names, quiet=args.quiet)


def list_all(refdir: str, *, names_only: bool, quiet: bool) -> int:
    """Print one line per reference, a reference ``predict`` would refuse (`gsrcl.reference.list_references`
    applies its rules) as "not usable" with the reason. ``names_only``: the names of the usable references only,
    one a line (the others are named in a warning). An empty folder prints a hint, unless ``quiet``."""
    rows = list_references(refdir)
    if not rows and not quiet and not names_only:
        print(f"No references in {refdir}. Build one with 'gsrcl train'.")
    for row in rows:
        if names_only:
            if "error" in row:
                log.warning("warning: %s is not usable (%s)", row["name"], row["error"])
            else:
                print(row["name"])
        elif "error" in row:
            print(f"{row['name']}: not usable ({row['error']})")
        else:
            types = ", ".join(row["cell_types"])
            print(f"{row['name']}: {row['method']} ({row['preset']}), {row['n_genes']} genes, "
                  f"{len(row['cell_types'])} cell types: {types}; "
                  f"created {row['created']} by gsrcl {row['gsrcl_version']}")
    return 0


def show(refdir: str, name: str, *, all_genes: bool) -> int:
    """Print the manifest of ``refdir/name`` as `gsrcl.reference_summary.describe` words it.

    Raises
    ------
    InvalidReferenceError
        The folder or the reference does not exist, or its manifest is not a valid one.
    """
    path = resolve(refdir, name)
    if not path.is_dir():
        available = [row["name"] for row in list_references(refdir)]
        raise InvalidReferenceError(
            f"no reference {name!r} in {refdir}"
            + (f" (there: {', '.join(available)})" if available else " (it holds none: build one with 'gsrcl train')")
        )
    print(describe(read_manifest(path), all_genes=all_genes))
    return 0
