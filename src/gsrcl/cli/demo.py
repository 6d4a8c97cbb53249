"""``gsrcl demo``: train both methods on data shipped with scanpy, annotate held-out cells, print a table."""

from __future__ import annotations

from .common import add_common_arguments


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train both methods on a small PBMC set shipped with scanpy and annotate held-out cells",
        description="Split scanpy's pbmc68k_reduced (700 PBMCs, 10 bulk_labels, read from the scanpy package: "
        "no download) into a reference part (70%) and a query part (30%), train a reference with AF-RCL and "
        "with GsRCL (the demo preset: the default with few epochs), annotate the query with each and print "
        "accuracy, macro-F1, % Unassigned and timings. Writes OUT/query.h5ad, OUT/references/ and the predict "
        "outputs in OUT/afrcl/ and OUT/gsrcl/; running it again replaces those and leaves anything else in OUT "
        "alone. Needs scanpy (pip install 'gsrcl[demo]').",
    )
    p.add_argument("-o", "--outdir", default="demo_output", metavar="OUT", help="output folder (default: demo_output)")
    p.add_argument("--overwrite", action="store_true",
                   help="also replace files at the demo's output paths in an OUT that no demo wrote (the demo "
                   "replaces its own earlier outputs without it)")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run the demo and print its table; 0 on success (GsrclError without scanpy, OutputError for an OUT that
    cannot be written or that no demo wrote, without --overwrite)."""
    from ..demo import CAVEAT, format_table, run_demo
    from ..errors import GsrclError

    try:
        import scanpy  # noqa: F401
    except ImportError:
        raise GsrclError("the demo needs scanpy for its data: pip install 'gsrcl[demo]' (or pip install scanpy)") from None
    rows = run_demo(args.outdir, overwrite=args.overwrite, quiet=args.quiet)
    print(f"pbmc68k_reduced: {rows[0]['n_query']} query cells; references and outputs in {args.outdir}/")
    print(format_table(rows))
    print(CAVEAT)
    if not args.quiet:
        print(f"Try: gsrcl predict -i {args.outdir}/query.h5ad -r pbmc68k_afrcl -mp {args.outdir}/references "
              f"-o {args.outdir}/my_run")
    return 0
