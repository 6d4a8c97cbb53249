"""``gsrcl predict``: annotate a query with a reference and write probabilities.csv, tsne.svg, legend.txt and
annotated.h5ad into OUT (`gsrcl.outputs`). The flags' values are checked as they are parsed, by the same rules as
the Python API's (`gsrcl.cutoff`, `gsrcl.neighbours`), and trusted after."""

from __future__ import annotations

import logging

from .common import (add_common_arguments, add_input_arguments, neighbourhood, percentile, positive_int, probability,
                     reader_kwargs)

log = logging.getLogger("gsrcl.predict")


def register(sub) -> None:
    from ..neighbours import N_NEIGHBORS
    from ..predict import DEFAULT_BLOCK_SIZE, TSNE_MAX_CELLS

    p = sub.add_parser(
        "predict",
        help="annotate a query with a reference",
        description="Annotate the cells of a query with a reference built by 'gsrcl train'. The query is a raw "
        "file in any format 'gsrcl verify' reads (the same checks run first: gene matching and the rule that more "
        "than 50% of the query genes, or of the reference genes, must be matched), or the OUT/verified.h5ad that "
        "'gsrcl verify' "
        "wrote (the default when -i is not given). Writes into OUT: probabilities.csv (barcode, one column per "
        "reference cell type, 'Identified as'), tsne.svg, legend.txt (label, colour, number of cells) and "
        "annotated.h5ad (the query with obs['predicted_labels'], obs['conf_score'], obs['novelty_score'], "
        "obs['unseen_score'] (averaged over query neighbourhoods), obsm['probabilities'] and uns['gsrcl']). The query is read in blocks of rows, so memory does not grow with its size.",
        epilog="A cell is 'Unassigned' when the probability the cut-off applies to is at most -p (equal counts as "
        "Unassigned). For AF-RCL that is the cell's highest multi-class probability. For GsRCL it is, by default, "
        "the highest of the per-type probabilities after dividing them by their sum (the reported ones, as the "
        "original tool); with --raw-cutoff it is the highest un-normalised per-type probability (obs['max_raw_score']).",
    )
    add_input_arguments(p, required=False)
    p.add_argument("-r", "--reference", required=True, metavar="NAME", help="reference name under -mp")
    p.add_argument("-mp", "--model-path", required=True, metavar="REFDIR", help="folder holding the references")
    p.add_argument("-o", "--outdir", default=".", metavar="OUT",
                   help="output folder (default: .); without -i, OUT/verified.h5ad from 'gsrcl verify' is the query")
    p.add_argument("-p", "--probability", type=probability, default=0.5, metavar="P",
                   help="probability cut-off in [0, 1] (default 0.5): a cell whose probability is <= P is "
                   "'Unassigned'; scPred and the GsRCL authors suggest 0.9 for a stricter call")
    p.add_argument("--raw-cutoff", action="store_true",
                   help="GsRCL only: apply -p to the highest UN-normalised per-type probability instead of the "
                   "row-normalised (reported) one. Normalising makes a cell that every one-vs-rest task rejects "
                   "look confident, so this is the cut-off that flags cells of types the reference lacks. "
                   "No effect for AF-RCL")
    p.add_argument("--novelty-cutoff", type=percentile, metavar="PCT",
                   help="also call a cell 'Unassigned' when its novelty score (obs['novelty_score']: how unlike "
                   "every reference cell type it is) is above that of PCT%% of the reference cells (each scored by a "
                   "model fitted without it, as a query cell is), e.g. 99.5; off by default")
    p.add_argument("--neighbours", type=neighbourhood, default=N_NEIGHBORS, metavar="K",
                   help=f"average obs['unseen_score'] over each cell's K nearest query cells, found in the query's "
                   f"own principal components (default {N_NEIGHBORS}; 0: each cell on its own). Cells of a type the "
                   "reference lacks come in groups, so their neighbourhoods tell them apart better than each cell "
                   "alone; obs['unseen_score_cell'] keeps the per-cell score. Labels do not depend on it")
    p.add_argument("--majority-voting", action="store_true",
                   help="also label each cell with the majority label of its over-cluster of the query (CellTypist's "
                   "option of that name: Leiden on the query's neighbour graph): obs['majority_voting'] and a "
                   "'majority_voting' column in probabilities.csv, beside the per-cell labels")
    p.add_argument("-l", "--log", choices=("auto", "0", "1"), default="auto",
                   help="auto (default): detect the values; 1: the input is raw counts (log1p is applied); "
                   "0: the input is already natural log(1+x)")
    p.add_argument("--block-size", type=positive_int, default=DEFAULT_BLOCK_SIZE, metavar="N",
                   help=f"cells read and predicted at a time (default {DEFAULT_BLOCK_SIZE}); lower it to use less memory")
    p.add_argument("--tsne-cells", type=positive_int, default=TSNE_MAX_CELLS, metavar="N",
                   help=f"at most N cells (a seeded random subset) in the t-SNE (default {TSNE_MAX_CELLS:,})")
    p.add_argument("--no-plot", action="store_true", help="do not compute the t-SNE or write tsne.svg")
    p.add_argument("--insert-prob", action="store_true",
                   help="also write each reference type's probability into annotated.h5ad as obs['prob_<type>'] "
                   "('/' in a type name becomes '_'), to colour a plot by one type")
    p.add_argument("--seed", type=int, default=0, help="seed of the t-SNE and of its subset (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist in OUT")
    p.add_argument("--dask", type=dask_address, metavar="ADDRESS",
                   help="predict on a Dask cluster: a scheduler address (tcp://host:8786), or local:N to start N "
                   "worker processes of one thread each on this machine. The outputs are the same as without it. "
                   "The workers read the query and the reference from their paths and write nothing; the query, the "
                   "reference folder and OUT (where a format that cannot be read by rows is converted once) must be "
                   "on storage every worker sees. Exit code 89 when the scheduler cannot be reached or the cluster "
                   "fails (nothing is written)")
    add_common_arguments(p)
    p.set_defaults(func=run)


def dask_address(text: str) -> str:
    """``--dask``: ``local:N`` (N >= 1) or a scheduler address, which Dask checks when connecting."""
    import argparse

    text = str(text).strip()
    if text.startswith("local:"):
        n = text[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"local:N needs a positive whole number of worker processes, not {text!r}")
        return f"local:{int(n)}"
    if not text:
        raise argparse.ArgumentTypeError("give a scheduler address (tcp://host:8786) or local:N")
    return text


def run(args) -> int:
    import contextlib

    from ..errors import GsrclError, PredictionError
    from ..outputs import write_prediction_files
    from ..cutoff import UNASSIGNED
    from ..predict import Settings
    from ..reference import resolve

    if args.majority_voting and not args.neighbours:
        raise GsrclError("--majority-voting needs the query's neighbourhoods: leave out --neighbours 0")
    try:
        settings = Settings(p=args.probability, raw_cutoff=args.raw_cutoff, novelty_cutoff=args.novelty_cutoff,
                            neighbours=args.neighbours, log=args.log, block_size=args.block_size,
                            tsne_cells=args.tsne_cells, seed=args.seed, quiet=args.quiet,
                            majority_voting=args.majority_voting)
        if args.dask:
            from ..distributed import connect

            cluster = connect(args.dask)  # before anything is read or written: an unreachable scheduler stops here
        else:
            cluster = contextlib.nullcontext()
        with cluster as client:
            summary = write_prediction_files(args.input, resolve(args.model_path, args.reference), args.outdir,
                                             settings, overwrite=args.overwrite, plot=not args.no_plot,
                                             insert_prob=args.insert_prob, reader_kwargs=reader_kwargs(args),
                                             client=client)
    except (GsrclError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - anything else is a bug or the environment: one line, PredictionError
        log.debug("prediction failed", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        hint = "" if getattr(args, "verbose", False) else " (rerun with -v for the traceback)"
        raise PredictionError(f"prediction failed: {type(exc).__name__}: {first}{hint}") from None
    if not args.quiet:
        n = summary["n_cells"]
        print(f"Annotated {n} cells with reference {summary['reference']!r} ({summary['method']}) in "
              f"{summary['seconds_predict']:.1f} s" + (f" (t-SNE {summary['seconds_tsne']:.1f} s)" if not args.no_plot else ""))
        width = max(len(c) for c in summary["counts"])
        for label, count in summary["counts"].items():
            if count or label == UNASSIGNED:
                print(f"  {label:<{width}}  {count:>8}  {100 * count / max(n, 1):5.1f}%")
        for path in summary["paths"].values():
            print(f"Wrote {path}")
    return 0
