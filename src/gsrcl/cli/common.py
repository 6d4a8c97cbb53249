"""Flags shared by the commands that read a query or a training file."""

from __future__ import annotations

import argparse


def add_input_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = parser.add_argument_group("input")
    g.add_argument("-i", "--input", required=required, metavar="FILE",
                   help="h5ad, 10x HDF5 or matrix folder, loom, CSV/TSV (optionally .gz), or any HDF5 file")
    g.add_argument("-t", "--transpose", action="store_true",
                   help="the file holds genes as rows and cells as columns")
    g.add_argument("-mat", "--matrix-key", nargs="+", metavar="KEY",
                   help="HDF5 path of the matrix, as space-separated keys (depth 1-3), e.g. -mat X")
    g.add_argument("-obs", "--obs-key", nargs="+", metavar="KEY",
                   help="HDF5 path of the row names, e.g. -obs matrix barcodes")
    g.add_argument("-var", "--var-key", nargs="+", metavar="KEY",
                   help="HDF5 path of the column names, e.g. -var matrix features id")
    g.add_argument("--layer", metavar="NAME", help="h5ad: take values from this layer instead of X")
    g.add_argument("--use-raw", action="store_true", help="h5ad: take values and genes from .raw")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing but an error: no progress bars, messages or warnings")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="more messages (with -q: the messages and warnings, without progress bars)")


def reader_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for ``gsrcl.io.read_query`` / ``open_query`` from the input flags."""
    return {
        "transpose": args.transpose,
        "mat": args.matrix_key,
        "obs": args.obs_key,
        "var": args.var_key,
        "layer": args.layer,
        "use_raw": args.use_raw,
    }


# --- argparse value types ----------------------------------------------------------------------------------
def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def gene_count(text: str) -> int:
    """``--top-genes``: a whole number of genes, at least `gsrcl.training.MIN_GENES` (2)."""
    value = _number(text, int, "a whole number of genes")
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} is too few: a reference needs at least 2 genes")
    return value


def _checked(rule, value):
    """``rule(value)`` (one of prediction's checks), its ValueError as argparse's usage error (exit code 2)."""
    try:
        return rule(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def neighbourhood(text: str) -> int:
    """``--neighbours``: 0 or at least 2 cells (`gsrcl.neighbours.check_neighbours`)."""
    from ..neighbours import check_neighbours

    return _checked(check_neighbours, _number(text, int, "a whole number of cells"))


def probability(text: str) -> float:
    """``-p``: a number in [0, 1] (`gsrcl.cutoff.check_p`)."""
    from ..cutoff import check_p

    return _checked(check_p, _number(text, float, "a number"))


def fraction(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 0 and below 1")
    return value


def percentile(text: str) -> float:
    """``--novelty-cutoff``: a percentile above 0 and at most 100 (`gsrcl.cutoff.check_percentile`)."""
    from ..cutoff import check_percentile

    return _checked(check_percentile, _number(text, float, "a number"))
