"""``gsrcl train``: build a reference from labelled cells and save it as REFDIR/NAME."""

from __future__ import annotations

import argparse
import json
import logging
import os
import zlib
from pathlib import Path

from ..methods.presets import MAX_CELLS_PER_TYPE, preset_names
from .common import (add_common_arguments, add_input_arguments, fraction, gene_count, non_negative_int, positive_int,
                     reader_kwargs)

log = logging.getLogger("gsrcl.train")

LABEL_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a reference (AF-RCL or GsRCL) from labelled cells",
        description="Train a reference from labelled cells and save it as REFDIR/NAME. Labels are a column of "
        "the input's obs, or a CSV whose first column holds cell ids and second column labels (every cell "
        "needs a label). Raw counts get log1p; values already log1p are used as they are.",
    )
    add_input_arguments(p)
    p.add_argument("--labels", required=True, metavar="COLUMN|CSV",
                   help="obs column holding the cell types, or a CSV of cell id,label")
    p.add_argument("-r", "--reference", required=True, metavar="NAME", help="name of the new reference")
    p.add_argument("-mp", "--model-path", required=True, metavar="REFDIR", help="folder holding the references")
    p.add_argument("--method", choices=("afrcl", "gsrcl"), default="afrcl", help="method (default: afrcl)")
    p.add_argument("--preset", choices=preset_names(), default="default",
                   help="default: tuned for speed at the same accuracy; paper: the published settings; demo: the "
                   "default with few epochs, to try the tool in minutes")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="most epochs (default: from the preset)")
    p.add_argument("--seed", type=int, default=1111, help="random seed (default: 1111)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device (default: cpu)")
    p.add_argument("--top-genes", type=gene_count, metavar="N",
                   help="keep only the N most variable genes (default: all genes)")
    p.add_argument("--genes-from", metavar="QUERY",
                   help="train only on the genes this query has (any format the readers take, or a text file "
                   "of gene names, one per line): use it when the query lacks many of the training genes")
    p.add_argument("--validation-size", type=fraction, metavar="F",
                   help="share of each cell type kept for checkpoint selection (default: from the preset, 0.2)")
    p.add_argument("--ensemble", type=positive_int, metavar="N",
                   help="train N models with different seeds and average their scores (default: from the preset, "
                   "5 for AF-RCL's default, 1 for GsRCL and the paper preset); N times the training time")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for training (default: torch's choice; on a busy machine 1 can be faster)")
    p.add_argument("--max-cells-per-type", type=cells_cap, default=MAX_CELLS_PER_TYPE, metavar="N",
                   help=f"each cell type keeps at most N cells, drawn at random (default: {MAX_CELLS_PER_TYPE:,}; "
                   "0: every cell); only those rows are read from an h5ad or 10x HDF5 file")
    p.add_argument("--linear-pool", action=argparse.BooleanOptionalAction, default=None,
                   help="also fit a linear SVM on the genes, which decides more the further a query cell "
                   "lies from the reference, as for a query of another species (default: the preset's: on for "
                   "default and demo, off for paper)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing reference NAME")
    p.add_argument("--config", metavar="JSON",
                   help="more settings as a JSON object or the path of a JSON file, e.g. '{\"hidden\": [64, 64]}': "
                   "any parameter of gsrcl.train (the method's hyperparameters, listed in "
                   "gsrcl.methods.presets, and ensemble, pool, library_size); the flags above take precedence")
    add_common_arguments(p)
    p.set_defaults(func=run)


def cells_cap(text: str) -> int | None:
    """``--max-cells-per-type``: a whole number of cells; 0 means every cell (None). `gsrcl.train` checks it
    against ``min_cells``."""
    value = non_negative_int(text)
    return value or None


def run(args) -> int:
    """Train and save the reference; 0 on success.

    Raises
    ------
    GsrclError
        (a subclass, with its exit code) for an existing reference without ``--overwrite`` or a REFDIR that
        cannot be written, CUDA asked for but missing, bad settings (all checked before the input is read),
        unreadable input or labels.
    """
    from ..errors import GsrclError
    from ..reference import check_target

    # a name that is taken or a REFDIR that cannot be written fails now, not after the training
    check_target(args.model_path, args.reference, overwrite=args.overwrite)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise GsrclError("--device cuda was given but PyTorch sees no CUDA device here: use --device cpu")
    settings = _config(args.config)
    flags = {"epochs": args.epochs, "validation_size": args.validation_size, "ensemble": args.ensemble,
             "threads": args.threads}
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings.update(seed=args.seed, device=args.device, quiet=args.quiet)
    if args.linear_pool is not None:
        settings["linear_pool"] = args.linear_pool
    from ..training import check_settings, train

    check_settings(args.method, args.preset, **settings)  # unknown or bad settings fail before the input is read

    import anndata as ad

    from ..io import open_query

    genes_from = _query_genes(args.genes_from) if args.genes_from else None
    source = open_query(args.input, **reader_kwargs(args))  # rows are read by train, only those it keeps
    labels, labels_note = _labels(args.labels, ad.AnnData(obs=source.obs()))
    provenance = {"input": os.path.abspath(args.input), "labels": labels_note}
    if args.genes_from:
        provenance["genes_from"] = os.path.abspath(args.genes_from)
    ref = train(source, labels, args.method, name=args.reference, preset=args.preset, top_genes=args.top_genes,
                genes_from=genes_from, max_cells_per_type=args.max_cells_per_type, provenance=provenance,
                **settings)
    path = ref.save(args.model_path, args.reference, overwrite=args.overwrite)
    if not args.quiet:
        print(summary(ref, path))
    return 0


def summary(ref, path) -> str:
    """The lines ``gsrcl train`` prints about the reference it saved at ``path``."""
    t, v = ref.manifest["training"], ref.manifest["validation"]
    score = v.get("score")
    lines = [
        f"Trained {ref.method} reference {ref.name!r} ({ref.manifest['preset']} preset) in {t['seconds']:.0f} s",
        f"  cell types: {len(ref.cell_types)} ("
        + ", ".join(f"{k} {n}" for k, n in t["cells_per_type"].items()) + ")",
        f"  cells: {t['cells']} ({t['cells_train']} training, {t['cells_validation']} validation), genes: {t['genes']}",
    ]
    sel = t.get("gene_selection") or {}
    shared = next((s for s in (sel, sel.get("after") or {}) if s.get("method") == "shared with the query"), None)
    if shared:
        lines.append(f"  genes shared with the query: {shared['n']} of {shared['of']}")
    if t.get("dropped_classes"):
        lines.append("  dropped (too few cells): " + ", ".join(f"{k} {n}" for k, n in t["dropped_classes"].items()))
    seeds = t.get("member_seeds") or [t.get("seed")]
    lines.append(("  validation MCC: " if len(seeds) == 1 else f"  models: {len(seeds)} (seeds "
                  + ", ".join(map(str, seeds)) + "), validation MCC of the first: ")
                 + ("n/a (no validation cells)" if score is None else f"{score:.3f}"))
    lines.append(f"  saved to {path}")
    return "\n".join(lines)


def _query_genes(path: str):
    """The genes of ``--genes-from``: a text file of names (one per line), or any query the readers open
    (only its gene names are read)."""
    import pandas as pd

    from ..errors import GeneNamesError, MissingPathError

    if not os.path.exists(path):
        raise MissingPathError(f"--genes-from {path} does not exist: give the query file (or a list of genes)")
    if path.lower().endswith((".txt", ".txt.gz")):
        try:
            names = pd.read_csv(path, header=None, dtype=str, keep_default_na=False).iloc[:, 0].str.strip()
        except pd.errors.EmptyDataError:  # no line, or blank lines only
            names = pd.Series([], dtype=object)
        except (ValueError, UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:  # ParserError: a ValueError
            raise GeneNamesError(
                f"--genes-from {path} cannot be read as a list of gene names ({first_line(exc)}): give one gene "
                "name per line"
            ) from None
        names = names[names != ""]
        if names.empty:
            raise GeneNamesError(f"--genes-from {path} lists no gene: give one gene name per line")
        return pd.DataFrame(index=pd.Index(names.to_numpy(), dtype=object))
    from ..io import open_query

    return open_query(path).var


def _config(text: str | None) -> dict:
    """The settings of ``--config``: a JSON object, given inline or as the path of a JSON file ({} for None).

    Raises
    ------
    GsrclError
        For text that is not a JSON object and not a file holding one.
    """
    from ..errors import GsrclError

    if not text:
        return {}
    try:
        raw = Path(text).read_text() if not text.lstrip().startswith("{") and Path(text).is_file() else text
        value = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise GsrclError(f"--config is not a JSON object or a JSON file ({exc})") from None
    if not isinstance(value, dict):
        raise GsrclError("--config must be a JSON object of settings, e.g. '{\"hidden\": [64, 64]}'")
    return value


def _labels(spec: str, adata):
    """The labels for ``adata``'s cells: an obs column, or a CSV of cell id -> label."""
    from ..errors import LabelsError, MissingPathError

    looks_like_file = spec.lower().endswith(LABEL_FILE_SUFFIXES) or os.sep in spec
    if spec in adata.obs.columns and not (looks_like_file and os.path.isfile(spec)):
        return spec, f"obs[{spec!r}]"
    if not os.path.isfile(spec):
        if os.path.isdir(spec):
            raise LabelsError(f"--labels {spec} is a folder: give an obs column or a CSV file of cell id,label")
        if looks_like_file:
            raise MissingPathError(f"labels file {spec} does not exist: give an obs column or a CSV of cell id,label")
        cols = ", ".join(map(str, adata.obs.columns[:10])) or "none"
        raise LabelsError(
            f"--labels {spec!r} is neither a column of the input's obs (columns: {cols}) nor a file: name a "
            "column or give a CSV of cell id,label"
        )
    return read_label_file(spec, adata.obs_names), os.path.abspath(spec)


def read_label_file(path: str, obs_names):
    """Labels from a CSV/TSV: first column cell ids, second labels; a header row is recognised by its first
    cell not being a cell id. Every cell of the input needs a label; ids not in the input are ignored.

    Raises
    ------
    LabelsError
        For a file that is empty, cannot be read as a table of at least two columns, has lines without a cell id
        or lists a cell twice, or for a cell of the input without a line.
    """
    import pandas as pd

    from ..errors import LabelsError

    sep = _delimiter(path)
    try:
        table = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False, comment=None)
    except (ValueError, UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:  # ParserError: a ValueError
        raise LabelsError(
            f"labels file {path} cannot be read as a table ({first_line(exc)}): give a CSV of cell id,label"
        ) from None
    if table.shape[1] < 2:
        raise LabelsError(f"labels file {path} has {table.shape[1]} column(s): it needs cell ids and labels, "
                          "separated by a comma (or a tab)")
    names = pd.Index(pd.Index(obs_names).astype(str))
    ids = table.iloc[:, 0].fillna("").str.strip()
    if len(ids) and ids.iloc[0] not in names and ids.iloc[1:].isin(names).any():
        table, ids = table.iloc[1:], ids.iloc[1:]  # a header row
    if (ids == "").any():
        raise LabelsError(f"labels file {path} has {int((ids == '').sum())} line(s) without a cell id in the first "
                          "column: one line per cell, cell id first")
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()
        raise LabelsError(f"labels file {path} lists {len(dup)} cell id(s) twice (e.g. {dup[0]}): one line per cell")
    labels = pd.Series(table.iloc[:, 1].to_numpy(dtype=object), index=ids.to_numpy())
    missing = names.difference(labels.index)
    if len(missing):
        raise LabelsError(
            f"{len(missing)} of {len(names)} cells of the input have no line in labels file {path} "
            f"(e.g. {', '.join(missing[:3])}): label every cell or remove those cells from the input"
        )
    extra = len(labels.index.difference(names))
    if extra:
        log.warning("warning: %d cell id(s) of %s are not in the input and were ignored", extra, path)
    return labels.reindex(names)


def _delimiter(path: str) -> str:
    """The column separator of a labels file: a tab for ``.tsv``, else a comma, tab or semicolon as Python's
    csv sniffer finds it in the first lines (a comma when it finds none: a file of one column).

    Raises
    ------
    LabelsError
        For a file that cannot be opened (or decompressed) or holds nothing but white space.
    """
    import csv
    import gzip

    from ..errors import LabelsError

    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            sample = f.read(1 << 16)
    except (OSError, EOFError, zlib.error) as exc:  # gzip's BadGzipFile is an OSError
        raise LabelsError(f"labels file {path} cannot be read ({first_line(exc)}): give a CSV of cell id,label") from None
    if not sample.strip():
        raise LabelsError(f"labels file {path} is empty: give a CSV of cell id,label, one line per cell")
    if ".tsv" in path.lower():
        return "\t"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;").delimiter
    except csv.Error:
        return ","


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (the error stays one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
