"""Step 1 of the original tool: read a query, check it, match its genes to a reference and write ONE file,
``verified.h5ad``, that prediction reads (docs/methods.md §1, with the fixes of §5 items 1, 4, 5 and 10).

The verified file holds the query aligned to the reference genes (values as read, not yet transformed), and in
``uns['gsrcl_verify']`` what was matched, dropped and zero-filled, the value kind and where the data came from.
The gene matching and the overlap rule are `gsrcl.genes.check_overlap`, shared with prediction.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import anndata as ad
import pandas as pd

from .atomic import disk_full_as_error, held_stderr, remove_stale, temp_file, write_error
from .errors import OutputError
from .genes import GeneMatch, align, check_overlap, gene_record
from .reference import Reference, read_manifest
from .values import ValueReport, detect_values

log = logging.getLogger("gsrcl.verify")

VERIFIED = "verified.h5ad"
UNS_KEY = "gsrcl_verify"


def reference_summary(reference: Reference | dict) -> dict[str, Any]:
    """Name, method, genes, cell types and values record of a reference, or of its manifest (``dict``)."""
    manifest = reference.manifest if isinstance(reference, Reference) else reference
    return {
        "name": manifest.get("name", ""),
        "method": manifest["method"],
        "genes": manifest["genes"],
        "cell_types": manifest["cell_types"],
        "values": manifest["values"],
    }


def _record(match: GeneMatch, source: dict[str, Any], ref: dict[str, Any], report: ValueReport) -> dict:
    return {
        "reference": ref["name"],
        "method": ref["method"],
        "source": source,
        **gene_record(match),
        "reference_genes_zero_filled": list(map(str, match.missing_reference_genes(50))),
        "query_genes_dropped": list(map(str, match.dropped_query_genes(50))),
        "values": report.kind,
        "values_log_base": float(report.log_base or 0.0),  # 0: not log values
        "values_message": report.message,
    }


def verify_adata(adata: ad.AnnData, reference: Reference | dict, *, source: dict[str, Any] | None = None) -> ad.AnnData:
    """Align an in-memory query to a reference: what ``verified.h5ad`` holds.

    Parameters
    ----------
    adata : anndata.AnnData
        The query, cells x genes, values as read.
    reference : Reference or dict
        A reference or its manifest.
    source : dict, optional
        Where the query came from, recorded.

    Returns
    -------
    anndata.AnnData
        X: the query over the reference genes (CSR float32, missing genes zero-filled, values not transformed);
        obs: the barcodes; var: the reference genes; ``uns['gsrcl_verify']``: the gene-match numbers, the first
        50 zero-filled and dropped genes, the value kind.

    Raises
    ------
    GeneOverlapError
        When half or fewer of the query genes are reference genes (`gsrcl.genes.check_overlap`).
    ValuesError
        When the values are unusable: any negative value (scaled), as prediction refuses it
        (`gsrcl.predict.refuse_negative`: the same error and exit code).
    InvalidReferenceError
        When a reference cell type is named ``Unassigned`` or repeats (`gsrcl.cutoff.check_cell_types`).
    """
    from .cutoff import check_cell_types
    from .predict import refuse_negative

    ref = reference_summary(reference)
    check_cell_types(ref["cell_types"], ref["name"])  # a reference prediction would refuse: refused here already
    match = check_overlap(adata.var, ref["genes"], ref["name"])
    report = detect_values(adata.X)
    refuse_negative(adata.X)
    (log.warning if report.warn else log.info)(report.message)
    X = align(adata.X, match)
    out = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(adata.obs_names.astype(str), name=None)),
        var=pd.DataFrame(index=pd.Index(list(ref["genes"]), name=None)),
    )
    out.uns[UNS_KEY] = _record(match, source or {}, ref, report)
    return out


def verify(path: str | os.PathLike, reference: Reference | dict | str | os.PathLike, **reader_kwargs) -> ad.AnnData:
    """Read a query file with any reader and align it to a reference (`verify_adata`).

    Parameters
    ----------
    path : path-like
        The query file.
    reference : Reference, dict or path-like
        A reference, its manifest, or its directory (only the manifest is read).
    **reader_kwargs
        For ``gsrcl.io.open_query`` (transpose, mat, obs, var, layer, use_raw).

    Returns
    -------
    anndata.AnnData
        As `verify_adata`.

    Raises
    ------
    GsrclError
        The reader's errors (codes 64-74, 77-80), ``GeneOverlapError`` (75), ``InvalidReferenceError`` (81).
    """
    from .io import open_query

    if isinstance(reference, (str, os.PathLike)):
        reference = read_manifest(reference)
    source = open_query(path, **reader_kwargs)
    adata = source.to_memory()
    return verify_adata(adata, reference, source={"path": str(path), "format": source.format})


def is_verified(adata: ad.AnnData) -> bool:
    """Whether ``adata`` was written by ``gsrcl verify`` (it holds ``uns['gsrcl_verify']``)."""
    return UNS_KEY in adata.uns


def write_verified(adata: ad.AnnData, out_dir: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``out_dir/verified.h5ad`` atomically (a temporary file in ``out_dir``, then a rename).

    The temporary is ``.verified.h5ad.tmp-PID.HOST-*`` (`gsrcl.atomic.temp_file`); those of killed runs in
    ``out_dir`` are removed first. On any failure, a full disk included, the temporary is removed before the
    error leaves.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    OutputError
        When it exists and not ``overwrite``, or ``out_dir`` cannot be written.
    DiskFullError
        When the disk holding ``out_dir`` fills up.
    """
    out_dir = Path(out_dir)
    target = out_dir / VERIFIED
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists: pass --overwrite to replace it")
    tmp = None
    made = not out_dir.exists()

    def discard() -> None:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if made:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty

    with disk_full_as_error(out_dir, cleanup=discard):
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale(out_dir)
            tmp = temp_file(out_dir, VERIFIED)
        except OSError as exc:
            raise write_error(exc, out_dir) from None
        with held_stderr():
            adata.write_h5ad(tmp)
        os.replace(tmp, target)
    return target


def load_verified(path: str | os.PathLike) -> ad.AnnData:
    """Read a ``verified.h5ad`` (or the folder holding one) written by ``gsrcl verify``.

    Raises
    ------
    MissingPathError
        When there is no such file.
    LayoutError
        When the file was not written by ``gsrcl verify``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / VERIFIED
    if not path.is_file():
        from .errors import MissingPathError

        raise MissingPathError(f"{path} does not exist: run 'gsrcl verify -i QUERY -o {path.parent}' first, or pass -i")
    adata = ad.read_h5ad(path)
    if not is_verified(adata):
        from .errors import LayoutError

        raise LayoutError(f"{path} was not written by 'gsrcl verify' (no uns['{UNS_KEY}'])")
    return adata


def describe(record: dict[str, Any]) -> str:
    """One line for the user about a verification record (``uns['gsrcl_verify']``): genes matched, dropped and
    zero-filled."""
    q, qm = record["n_query_genes"], record["n_query_genes_matched"]
    r, rm = record["n_reference_genes"], record["n_reference_genes_matched"]
    return (
        f"{qm} of {q} query genes ({100 * qm / max(q, 1):.1f}%) and {rm} of {r} reference genes "
        f"({100 * rm / max(r, 1):.1f}%) matched; {q - qm} query genes dropped, {r - rm} reference genes zero-filled"
    )


__all__ = [
    "VERIFIED",
    "describe",
    "is_verified",
    "load_verified",
    "verify",
    "verify_adata",
    "write_verified",
]
