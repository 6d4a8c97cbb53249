"""``gsrcl references``: list the references in a folder, show one in detail (``references show NAME``), list the
original tool's published references (``references available``) and fetch them by name (``references download
NAME...``)."""

from __future__ import annotations

import logging
import os

from ..errors import InvalidReferenceError
from ..reference import list_references, read_manifest, resolve
from ..reference_summary import describe
from .common import add_common_arguments

log = logging.getLogger("gsrcl.references")

ACTIONS = ("show", "available", "download")


def register(sub) -> None:
    p = sub.add_parser(
        "references", help="list the references in a folder, show one, or download a published one",
        usage="%(prog)s -mp REFDIR [--names] [-q] [-v]\n"
              "       %(prog)s show NAME -mp REFDIR [--all-genes]\n"
              "       %(prog)s available [-mp REFDIR] [--method gsrcl|afrcl] [--names]\n"
              "       %(prog)s download NAME [NAME ...] -mp REFDIR [--method gsrcl|afrcl] [--url BASE] "
              "[--overwrite] [-q]",
        description="List the references under REFDIR with their method, cell types and genes; "
                    "'gsrcl references show NAME -mp REFDIR' shows one: cells per type, validation scores, genes, "
                    "value handling, novelty score, creation. Only manifests are read. "
                    "'gsrcl references available' lists the original GsRCL / AF-RCL tool's published references "
                    "(with -mp: which REFDIR holds); 'gsrcl references download NAME -mp REFDIR' fetches one, "
                    "checks it, imports it as REFDIR/NAME and removes the download. Downloads arrive in "
                    "$GSRCL_CACHE (default ~/.cache/gsrcl/downloads), never in REFDIR; an interrupted one is "
                    "resumed by the same command.",
    )
    p.add_argument("action", nargs="?", choices=ACTIONS, metavar="{show,available,download}",
                   help="show: the reference NAME in detail; available: the published references; download: "
                        "fetch published references by NAME and import them")
    p.add_argument("names", nargs="*", metavar="NAME", help="the reference to show, or the ones to download")
    p.add_argument("-mp", "--model-path", metavar="REFDIR", help="folder holding the references")
    p.add_argument("--names", dest="names_only", action="store_true", help="list the names only, one a line")
    p.add_argument("--all-genes", action="store_true", help="show: name every gene, not only the first few")
    p.add_argument("--method", choices=["gsrcl", "afrcl"],
                   help="available: only this method's; download: whose published reference (default gsrcl)")
    p.add_argument("--url", metavar="BASE",
                   help="download: a mirror's address, serving BASE/<archive> (default: $GSRCL_REFERENCES_URL, "
                        "else the published record)")
    p.add_argument("--overwrite", action="store_true", help="download: replace a reference of the same name")
    add_common_arguments(p)
    p.set_defaults(func=run, parser=p)


def run(args) -> int:
    parser, action = args.parser, args.action
    if action != "download":
        for flag, given in (("--url", args.url is not None), ("--overwrite", args.overwrite)):
            if given:
                parser.error(f"{flag} goes with download: gsrcl references download NAME -mp REFDIR {flag} ...")
    if action not in ("available", "download") and args.method is not None:
        parser.error("--method goes with available or download")
    if action != "show" and args.all_genes:
        parser.error("--all-genes goes with show: gsrcl references show NAME -mp REFDIR --all-genes")
    if action == "available":
        if args.names:
            parser.error("available takes no NAME: gsrcl references available [-mp REFDIR]")
        return available(args.model_path, method=args.method, names_only=args.names_only)
    if args.model_path is None:
        what = {"show": "show NAME", "download": "download NAME"}.get(action, "")
        parser.error(f"the following arguments are required: -mp/--model-path "
                     f"(gsrcl references {what + ' ' if what else ''}-mp REFDIR)")
    if action == "download":
        if not args.names:
            parser.error("download needs the NAME of a published reference (see 'gsrcl references available')")
        if args.names_only:
            parser.error("--names lists references; it does not go with download")
        return download(args.names, args.model_path, method=args.method or "gsrcl", url=args.url,
                        overwrite=args.overwrite, quiet=args.quiet)
    if action == "show":
        if len(args.names) != 1:
            parser.error("show needs the NAME of one reference: gsrcl references show NAME -mp REFDIR")
        if args.names_only:
            parser.error("--names lists the references; it does not go with show")
        return show(args.model_path, args.names[0], all_genes=args.all_genes)
    if args.names:
        parser.error(f"unexpected NAME {args.names[0]!r}: to see one reference, gsrcl references show NAME -mp "
                     "REFDIR")
    return list_all(args.model_path, names_only=args.names_only, quiet=args.quiet)


def available(refdir: str | None, *, method: str | None, names_only: bool) -> int:
    """Print the published references as a table: name, method, species and tissue, platform, cells and cell
    types of the training dataset, archive size; with ``refdir``, whether it holds each (a usable reference of
    that name and method; a ``refdir`` that does not exist yet holds none). ``names_only``: the names, one a
    line."""
    from ..original.published import RECORDS, published, size_text

    refs = published(method)
    if names_only:
        for name in dict.fromkeys(r.name for r in refs):
            print(name)
        return 0
    present: dict[str, str] = {}
    if refdir is not None and os.path.exists(refdir):  # a folder not made yet holds none
        for row in list_references(refdir):
            present[row["name"]] = row.get("method", "not usable")
    header = ["name", "method", "tissue", "platform", "cells", "types", "size"] + (["in REFDIR"] if refdir else [])
    rows = []
    for r in refs:
        row = [r.name, r.method, r.where, r.platform, str(r.cells), str(r.cell_types), size_text(r.size)]
        if refdir is not None:
            held = present.get(r.name)
            row.append("" if held is None else "yes" if held == r.method else f"name taken ({held})")
        rows.append(row)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    print()
    print("cells and types: the training dataset's. GsRCL: " + RECORDS["gsrcl"] + "; AF-RCL: " + RECORDS["afrcl"]
          + " (its file names are not known to gsrcl: download with --url from a mirror, or by hand and "
          "'gsrcl import').")
    print("Download with: gsrcl references download NAME -mp REFDIR [--method afrcl]")
    return 0


def download(names: list[str], refdir: str, *, method: str, url: str | None, overwrite: bool,
             quiet: bool) -> int:
    """Fetch and import each published reference of ``names`` (`gsrcl.original.download.download`); unless
    ``quiet``, print the one-line summary of each imported one (as `gsrcl import` does)."""
    from ..original.download import download as fetch_all
    from ..reference_summary import one_line

    for path in fetch_all(names, refdir, method=method, url=url, overwrite=overwrite, quiet=quiet):
        if not quiet:
            print(one_line(read_manifest(path)))
    return 0


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
