"""`open_query` / `read_query`: pick the reader from the file's content, then apply ``transpose`` and the
checks shared by every format (sizes, names, orientation, duplicates)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CorruptFileError, DuplicateGenesError, MatrixKeyError, NamesError
from . import hdf5, hdfstore, text
from .names import check_names, tidy_var
from .sniff import open_h5, sniff
from .source import Backend, CSRRowsOnDisk, DenseRowsOnDisk, InMemory, QuerySource

log = logging.getLogger("gsrcl.io")


def open_query(path: str | os.PathLike, *, transpose: bool = False, mat=None, obs=None, var=None,
               layer: str | None = None, use_raw: bool = False) -> QuerySource:
    """Open a query file (h5ad, 10x HDF5 v2/v3 or matrix folder, loom, scziDesk HDF5, pandas HDFStore, any
    HDF5 tree via key paths, CSV/TSV[.gz]) as cells x genes without reading all values.

    ``transpose``: the file holds genes x cells. ``mat``/``obs``/``var``: HDF5 key paths (lists of 1-3 keys)
    of the matrix, the row names and the column names. ``layer``/``use_raw``: h5ad (loom: layer) only.
    """
    kind = sniff(path)
    path = Path(path)
    if kind == "dir" or path.name.lower().endswith((".mtx", ".mtx.gz")):
        return _open_mtx(path, transpose, mat, obs, var, layer, use_raw)
    if kind == "text":
        return _open_table(path, transpose, mat, obs, var, layer, use_raw)
    with open_h5(path) as f:
        ctx = hdf5.Context(f, path)
        parsed = hdf5.parse(ctx, mat, obs, var, layer, use_raw)
        if not isinstance(parsed, str):
            try:
                return _finish_h5(path, parsed, bool(transpose))
            except (NamesError, DuplicateGenesError) as exc:  # names chosen by key: the tree shows the others
                if exc.detail is None:
                    exc.detail = ctx.tree
                raise
        rows, cols, values = hdfstore.read_hdfstore(ctx)  # with h5py: nothing is unpickled
    return _open_hdfstore(path, bool(transpose), rows, cols, values)


def read_query(path: str | os.PathLike, **kw) -> ad.AnnData:
    """``open_query(path, **kw).to_memory()``: AnnData with X CSR float32 cells x genes, never densified."""
    return open_query(path, **kw).to_memory(_release=True)


def _finish(path: Path, fmt: str, obs, genes, backend: Backend, *, transposed: bool, dup_hint: str, origin: dict,
            columns: dict | None = None, ids=None, symbols=None, obs_loader=None) -> QuerySource:
    obs_names = pd.Index(np.asarray(obs, dtype=object), dtype=object)
    var = tidy_var(genes, columns, ids=ids, symbols=symbols)
    check_names(path, obs_names, var.index, transposed=transposed, duplicate_hint=dup_hint)
    source = QuerySource(path, fmt, obs_names, var, backend, origin={**origin, "transposed": transposed},
                         obs_loader=obs_loader)
    log.debug("opened %r", source)
    return source


def _finish_h5(path: Path, p: hdf5.Parsed, transpose: bool) -> QuerySource:
    cell_axis = p.cell_axis ^ int(transpose)
    cells, genes = (p.row_names, p.col_names) if cell_axis == 0 else (p.col_names, p.row_names)
    keep = columns = ids = symbols = None
    if not transpose:  # per-gene columns and the feature-type filter belong to the layout's own gene axis
        keep, columns, ids, symbols = p.gene_keep, p.gene_columns, p.gene_ids, p.gene_symbols
        if keep is not None:
            genes = genes[keep]
            columns = {k: v[keep] for k, v in columns.items()}
            ids = ids[keep] if ids is not None else None
            symbols = symbols[keep] if symbols is not None else None
    backend = _backend(path, p.matrix, cell_axis, keep, len(cells), len(genes))
    obs_loader = None
    if not transpose and p.cell_columns is not None:
        def obs_loader(read=p.cell_columns):
            with open_h5(path) as f:
                return read(f)
    return _finish(path, p.fmt, cells, genes, backend, transposed=transpose, dup_hint=p.dup_hint, origin=p.origin,
                   columns=columns, ids=ids, symbols=symbols, obs_loader=obs_loader)


def _backend(path: Path, m: hdf5.Matrix, cell_axis: int, keep, n_cells: int, n_genes: int) -> Backend:
    if m.kind == "dense":
        return DenseRowsOnDisk(path, m.key, m.shape, cell_axis)
    compressed_axis = 0 if m.kind == "csr" else 1
    if compressed_axis == cell_axis:
        return CSRRowsOnDisk(path, m.key, m.indptr, m.shape[1 - cell_axis], keep)

    def load() -> sp.csr_matrix:  # the cells are the uncompressed axis: convert in memory
        nnz = int(m.indptr[-1])
        data = np.empty(nnz, dtype=np.float32)
        with open_h5(path) as f:
            g = f[m.key]
            if nnz:
                g["data"].read_direct(data, np.s_[:nnz], np.s_[:nnz])
            indices = g["indices"][:nnz]
        other = m.shape[1 - compressed_axis]
        if nnz and (indices.min() < 0 or indices.max() >= other):
            raise CorruptFileError(f"{path}: an index in '{m.key}/indices' lies outside 0..{other - 1}: the file is corrupt")
        cls = sp.csr_matrix if m.kind == "csr" else sp.csc_matrix
        M = cls((data, indices, m.indptr), shape=m.shape)
        X = (M.T if cell_axis == 1 else M).tocsr()
        return X if keep is None else X[:, keep]

    return InMemory(load, (n_cells, n_genes))


def _open_table(path: Path, transpose, mat, obs, var, layer, use_raw) -> QuerySource:
    if mat is not None or obs is not None or var is not None or layer or use_raw:
        raise MatrixKeyError(f"{path}: -mat/-obs/-var, --layer and --use-raw apply to HDF5 files, not to text tables")
    rows, cols, X, sep = text.read_table(path, names_are="gene names" if transpose else "cell ids")
    if transpose:
        rows, cols, X = cols, rows, X.T.tocsr()
    fmt = "tsv" if sep == "\t" else "csv"
    return _finish(path, fmt, rows, cols, InMemory.holding(X), transposed=bool(transpose),
                   dup_hint="the gene names in the header row must be unique",
                   origin={"matrix": "table", "obs": "first column" if not transpose else "header row",
                           "var": "header row" if not transpose else "first column"})


def _open_mtx(path: Path, transpose, mat, obs, var, layer, use_raw) -> QuerySource:
    if layer or use_raw:
        raise MatrixKeyError(f"{path}: --layer and --use-raw apply to h5ad files, not to a 10x matrix folder")
    parts = text.mtx_parts(path, mat, obs, var)
    genes, cells = parts["genes"], parts["cells"]
    keep, columns, ids, symbols = None, {}, parts["ids"], parts["names"]
    ftype = parts["ftype"]
    if not transpose and ftype is not None:
        columns["feature_types"] = ftype
        gex = ftype == "Gene Expression"
        if gex.any() and not gex.all():
            keep = np.flatnonzero(gex)
            genes, ids, symbols, columns = genes[keep], ids[keep], symbols[keep], {"feature_types": ftype[keep]}
    mtx = parts["mtx"]

    def load() -> sp.csr_matrix:
        M = text.read_mtx(mtx)  # genes x cells
        X = M if transpose else M.T.tocsr()
        return X if keep is None else X[:, keep]

    if transpose:
        cells, genes, columns, ids, symbols = genes, cells, None, None, None
    backend = InMemory(load, (len(cells), len(genes)))
    return _finish(path, "10x-mtx", cells, genes, backend, transposed=bool(transpose), dup_hint=parts["hint"],
                   origin=parts["origin"], columns=columns, ids=ids, symbols=symbols)


def _open_hdfstore(path: Path, transpose: bool, rows: np.ndarray, cols: np.ndarray,
                   values: np.ndarray) -> QuerySource:
    """The query of a pandas HDFStore DataFrame, as `hdf5.read_hdfstore` read it (never with pandas' reader,
    which unpickles)."""
    X = text.frame_to_csr(pd.DataFrame(values, index=pd.Index(rows, dtype=object), copy=False), path, list(cols))
    del values
    for what, names in (("row", rows), ("column", cols)):
        if not all(isinstance(x, str) for x in names):
            raise NamesError(f"{path}: the HDFStore's {what} names are not strings: name cells and genes with strings")
    if transpose:
        rows, cols, X = cols, rows, X.T.tocsr()
    return _finish(path, "hdfstore", rows, cols, InMemory.holding(X), transposed=transpose,
                   dup_hint="the column names must be unique", origin={"matrix": "HDFStore values"})
