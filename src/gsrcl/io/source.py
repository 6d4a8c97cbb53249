"""`QuerySource`: a query matrix (cells x genes) with its names, read block by block without densifying.

A backend yields CSR float32 row blocks in cells x genes order. ``CSRRowsOnDisk`` reads row ranges of a
compressed matrix straight from the HDF5 file (slice ``indptr``, then ``data``/``indices``), so memory does not
grow with the number of cells; ``DenseRowsOnDisk`` reads slabs of a dense dataset; ``InMemory`` holds a matrix
built by a loader (text formats, CSC matrices, transposed input) or given in memory (``QuerySource.from_anndata``),
whose X may also be a backed AnnData's (an HDF5 dataset or anndata's backed sparse matrix: sliced by rows, so
it is read from disk a block at a time). Every block is checked for NaN/inf.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CorruptFileError, ValuesError
from .names import check_unique_barcodes
from .sniff import open_h5

log = logging.getLogger("gsrcl.io")

DENSE_SLAB_VALUES = 1 << 24  # values per dense slab read (64 MiB of float32)
_INT32_MAX = np.iinfo(np.int32).max


def _index_dtype(nnz: int, n_cols: int):
    return np.int32 if max(nnz, n_cols) < _INT32_MAX else np.int64


class Backend:
    """Rows ``start:stop`` of a cells x genes matrix as CSR float32 (unchecked)."""

    shape: tuple[int, int]

    rows_on_disk = False  # rows start:stop are read from the file alone (any process that sees it can)

    def blocks(self, block_size: int, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, sp.csr_matrix]]:
        """Rows ``lo:hi`` (None: to the end) in blocks of ``block_size``, the first starting at ``lo``."""
        raise NotImplementedError

    def _range(self, block_size: int, lo: int, hi: int | None) -> Iterator[tuple[int, int]]:
        hi = self.shape[0] if hi is None else min(int(hi), self.shape[0])
        for start in range(int(lo), hi, block_size):
            yield start, min(start + block_size, hi)

    def whole(self) -> sp.csr_matrix:
        blocks = [b for _, b in self.blocks(max(1, DENSE_SLAB_VALUES // max(1, self.shape[1])))]
        if not blocks:
            return sp.csr_matrix(self.shape, dtype=np.float32)
        return sp.vstack(blocks, format="csr", dtype=np.float32)


def _csr32(block) -> sp.csr_matrix:
    """``block`` (sparse or dense rows) as CSR float32; a CSR float32 block is returned as it is."""
    if sp.issparse(block) and block.format == "csr":
        return block.astype(np.float32, copy=False)
    return sp.csr_matrix(block, dtype=np.float32)


class InMemory(Backend):
    """A CSR matrix made by ``loader`` for each pass and dropped after it, or one held since opening
    (text tables must be read whole to know their names); a held matrix is handed out as a copy, so
    changing the AnnData never changes the source, except by ``release`` (read_query's one-shot use).

    A held matrix may be dense or sparse (an AnnData's X): each block is converted to CSR float32 as it is
    handed out, so a dense matrix is never copied whole.
    """

    def __init__(self, loader: Callable[[], sp.csr_matrix], shape: tuple[int, int]):
        self.loader = loader
        self.shape = shape
        self._held = None

    @classmethod
    def holding(cls, X) -> "InMemory":
        """A backend holding ``X`` (cells x genes; CSR, another sparse format, or a dense array)."""
        if sp.issparse(X) and X.format != "csr":
            X = X.tocsr()
        backend = cls(None, X.shape)
        backend._held = X
        return backend

    def release(self) -> sp.csr_matrix:
        X, self._held = self._held, None
        self.loader = self._consumed
        return X

    @staticmethod
    def _consumed():
        raise RuntimeError("this QuerySource handed its matrix to read_query and holds no values any more")

    def whole(self, copy: bool = True) -> sp.csr_matrix:
        if self._held is not None:
            return self._held.copy() if copy else self._held
        X = self.loader()
        if X.shape != self.shape:
            raise CorruptFileError(f"the matrix read is {X.shape[0]} x {X.shape[1]}, expected {self.shape[0]} x {self.shape[1]}")
        return X

    def blocks(self, block_size, lo=0, hi=None):
        X = self.whole(copy=False)  # slices are copies anyway
        for start, stop in self._range(block_size, lo, hi):
            yield start, _csr32(X[start:stop])


class CSRRowsOnDisk(Backend):
    """A compressed HDF5 group whose compressed axis is the cells: rows are read from disk range by range."""

    def __init__(self, path: Path, group: str, indptr: np.ndarray, n_cols: int, keep: np.ndarray | None = None):
        self.path, self.group, self.indptr, self.n_cols, self.keep = path, group, indptr, n_cols, keep
        n_genes = n_cols if keep is None else len(keep)
        self.shape = (len(indptr) - 1, n_genes)

    def _check_indices(self, indices: np.ndarray) -> None:
        # scipy does not bound-check indices when building a matrix; a damaged file must not get that far
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n_cols):
            raise CorruptFileError(f"{self.path}: a column index in '{self.group}/indices' lies outside"
                                   f" 0..{self.n_cols - 1}: the file is corrupt")

    def _rows(self, g: h5py.Group, start: int, stop: int) -> sp.csr_matrix:
        ptr = self.indptr[start:stop + 1]
        lo, hi = int(ptr[0]), int(ptr[-1])
        itype = _index_dtype(hi - lo, self.n_cols)
        # HDF5 converts to the destination dtype while reading: no second copy in the file's dtypes
        data = np.empty(hi - lo, dtype=np.float32)
        indices = np.empty(hi - lo, dtype=itype)
        if hi > lo:
            g["data"].read_direct(data, np.s_[lo:hi])
            g["indices"].read_direct(indices, np.s_[lo:hi])
        self._check_indices(indices)
        block = sp.csr_matrix((data, indices, (ptr - lo).astype(itype)), shape=(stop - start, self.n_cols), copy=False)
        return block if self.keep is None else block[:, self.keep]

    rows_on_disk = True

    def blocks(self, block_size, lo=0, hi=None):
        with open_h5(self.path) as f:
            g = f[self.group]
            for start, stop in self._range(block_size, lo, hi):
                yield start, self._rows(g, start, stop)

    def whole(self) -> sp.csr_matrix:
        if self.keep is not None:
            return super().whole()
        # Preallocate the result and read into it chunk by chunk: peak memory stays near one CSR matrix.
        nnz = int(self.indptr[-1])
        itype = _index_dtype(nnz, self.n_cols)
        data = np.empty(nnz, dtype=np.float32)
        indices = np.empty(nnz, dtype=itype)
        step = 1 << 24
        with open_h5(self.path) as f:
            g = f[self.group]
            if g["data"].shape[0] < nnz or g["indices"].shape[0] < nnz:
                raise CorruptFileError(f"{self.path}: '{self.group}' holds fewer values than its indptr says: the file is corrupt")
            for lo in range(0, nnz, step):
                hi = min(lo + step, nnz)
                g["data"].read_direct(data, np.s_[lo:hi], np.s_[lo:hi])
                g["indices"].read_direct(indices, np.s_[lo:hi], np.s_[lo:hi])
                self._check_indices(indices[lo:hi])
        indptr = self.indptr.astype(itype, copy=False)
        return sp.csr_matrix((data, indices, indptr), shape=self.shape, copy=False)


class DenseRowsOnDisk(Backend):
    """A dense 2-D dataset; the cells lie along ``cell_axis`` (1 for genes x cells storage such as loom)."""

    def __init__(self, path: Path, key: str, shape: tuple[int, int], cell_axis: int):
        self.path, self.key, self.cell_axis = path, key, cell_axis
        self.shape = shape if cell_axis == 0 else (shape[1], shape[0])

    rows_on_disk = True

    def blocks(self, block_size, lo=0, hi=None):
        with open_h5(self.path) as f:
            ds = f[self.key]
            for start, stop in self._range(block_size, lo, hi):
                slab = ds[start:stop] if self.cell_axis == 0 else ds[:, start:stop].T
                yield start, sp.csr_matrix(np.asarray(slab, dtype=np.float32))


def check_finite(block: sp.csr_matrix, start: int, obs_names: pd.Index, var_names: pd.Index, path) -> None:
    step = 1 << 24  # in chunks: a mask over all values of a big matrix would cost 1 byte per value
    for lo in range(0, len(block.data), step):
        bad = ~np.isfinite(block.data[lo:lo + step])
        if bad.any():
            _raise_not_finite(block, lo + int(np.argmax(bad)), start, obs_names, var_names, path)


def _raise_not_finite(block, k, start, obs_names, var_names, path):
    row = int(np.searchsorted(block.indptr, k, side="right")) - 1
    col = int(block.indices[k])
    raise ValuesError(
        f"{path}: the matrix holds NaN or infinite values ({block.data[k]} for cell {obs_names[start + row]!r},"
        f" gene {var_names[col]!r}): fill or drop them before annotating"
    )


class QuerySource:
    """A query matrix (cells x genes) with barcodes and genes; values are read on demand.

    ``obs_names`` is a pd.Index of str, ``var`` a DataFrame indexed by gene names (with ``gene_ids`` /
    ``gene_symbols`` columns where the file holds them), ``format`` a short name such as ``"h5ad"``.
    """

    def __init__(self, path: str | os.PathLike, fmt: str, obs_names: pd.Index, var: pd.DataFrame, backend: Backend,
                 origin: dict | None = None, obs_loader: Callable[[], pd.DataFrame] | None = None):
        self.path = Path(path)
        self.format = fmt
        self.obs_names = obs_names
        self.var = var
        self.origin = origin or {}
        self._backend = backend
        self._obs_loader = obs_loader

    @property
    def n_obs(self) -> int:
        return len(self.obs_names)

    @property
    def n_vars(self) -> int:
        return len(self.var)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_obs, self.n_vars

    @classmethod
    def from_anndata(cls, adata: ad.AnnData) -> "QuerySource":
        """An AnnData seen as a query: its X (dense or sparse, never copied whole; a backed AnnData's X is read
        from its file a block of rows at a time), ``obs_names`` as str, its ``var`` (index and
        ``gene_ids``/``gene_symbols`` columns as they are) and its ``obs``.

        Parameters
        ----------
        adata : anndata.AnnData
            Cells x genes, in memory or backed. It is read, never changed.

        Returns
        -------
        QuerySource
            ``format`` is ``"anndata"``; reading blocks raises ``ValuesError`` when ``adata.X`` is None.

        Raises
        ------
        NamesError
            When cell names repeat (as every file reader refuses them).
        """
        obs_names = pd.Index(adata.obs_names.astype(str))
        check_unique_barcodes("the AnnData", obs_names)
        if adata.X is None:
            def missing():
                raise ValuesError("the AnnData has no X: put the expression values in X (or pass layer/use_raw "
                                  "to the reader)")

            backend = InMemory(missing, adata.shape)
        else:
            backend = InMemory.holding(adata.X)
        return cls("AnnData in memory" if not adata.isbacked else str(adata.filename), "anndata", obs_names,
                   adata.var, backend, obs_loader=lambda: adata.obs)

    def __repr__(self) -> str:
        return f"QuerySource({str(self.path)!r}, format={self.format!r}, {self.n_obs} cells x {self.n_vars} genes)"

    @property
    def rows_on_disk(self) -> bool:
        """Whether any row range is read from the file alone (h5ad/10x HDF5 compressed by cells, a dense HDF5
        matrix), so that another process that sees the file reads the same rows (`gsrcl.distributed`)."""
        return bool(self._backend.rows_on_disk)

    def iter_blocks(self, block_size: int = 10_000, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, sp.csr_matrix]]:
        """Yield ``(start, X)``: rows ``start:start + X.shape[0]`` as CSR float32, cells x genes, in blocks of
        ``block_size`` rows from row ``start`` (default 0) to ``stop`` (default: the last)."""
        block_size = int(block_size)
        if block_size < 1:
            raise ValueError("block_size must be a positive integer")
        for first, block in self._backend.blocks(block_size, start, stop):
            check_finite(block, first, self.obs_names, self.var.index, self.path)
            yield first, block

    def to_memory(self, _release: bool = False) -> ad.AnnData:
        """The whole matrix as AnnData (X CSR float32, obs_names = barcodes, var = genes); never densified."""
        backend = self._backend
        X = backend.release() if _release and isinstance(backend, InMemory) and backend._held is not None \
            else backend.whole()
        if not isinstance(X, sp.csr_matrix) or X.dtype != np.float32:
            X = sp.csr_matrix(X, dtype=np.float32)
        check_finite(X, 0, self.obs_names, self.var.index, self.path)
        log.debug("read %s (%s): %d cells x %d genes, %d non-zeros", self.path, self.format, *X.shape, X.nnz)
        return ad.AnnData(X=X, obs=self.obs(), var=self.var.copy())

    def obs(self) -> pd.DataFrame:
        """The cell table: the file's own per-cell columns where it has them (h5ad obs, loom col_attrs,
        scziDesk obs), indexed by ``obs_names``."""
        obs = None
        if self._obs_loader is not None:
            try:
                obs = self._obs_loader()
            except Exception as exc:  # the cell metadata is a bonus: never a reason to refuse the matrix
                log.warning("%s: the per-cell columns could not be read (%s); continuing without them", self.path, exc)
        if obs is None or len(obs) != self.n_obs:
            obs = pd.DataFrame(index=self.obs_names.copy())
        else:
            obs = obs.copy()
            obs.index = self.obs_names.copy()
        return obs
