"""The model input as CSR float32 and its encoding by an encoder, in blocks of rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

BLOCK = 4096  # rows encoded at once at prediction time: bounds memory whatever the number of cells


class Rows:
    """Some rows of a CSR matrix, without a copy of them: a method's training or validation cells.

    Parameters
    ----------
    base : scipy.sparse.csr_matrix
        The matrix (CSR float32), shared, never changed.
    rows : array-like of int
        Which of its rows, in this order.
    columns : array-like of int, optional
        Sorted columns of ``base`` that hold every non-zero value of those rows: the rows over these columns
        only (`keep_columns`), renumbered block by block as they are read.

    Notes
    -----
    ``R[key]`` (a slice or an array of positions) is ``base[rows[key]]`` (over ``columns``), a CSR copy of those
    rows only, the same matrix entry for entry as the same rows of ``base[rows][:, columns]``.
    """

    def __init__(self, base: sp.csr_matrix, rows, columns=None):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        self._renumber = None
        if self.columns is not None:
            self._renumber = np.full(base.shape[1], -1, dtype=base.indices.dtype)
            self._renumber[self.columns] = np.arange(len(self.columns))

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.base.shape[1] if self.columns is None else len(self.columns))

    @property
    def dtype(self):
        return self.base.dtype

    def __getitem__(self, key) -> sp.csr_matrix:
        block = self.base[self.rows[key]]
        if self.columns is None:
            return block
        return keep_columns(block, self.columns, self._renumber)

    def blocks(self, size: int = BLOCK):
        """The rows as CSR blocks of ``size`` rows, in order."""
        for start in range(0, self.shape[0], size):
            yield self[start : start + size]

    def keep_columns(self, columns) -> "Rows":
        """The same rows over the sorted ``columns`` of this one (which hold every non-zero value)."""
        columns = np.asarray(columns, dtype=np.int64)
        return Rows(self.base, self.rows, columns if self.columns is None else self.columns[columns])

    def toarray(self, out: np.ndarray | None = None) -> np.ndarray:
        """The rows as a dense array (into ``out`` when given), filled `BLOCK` rows at a time."""
        if out is None:
            out = np.zeros(self.shape, dtype=self.dtype)
        for start, block in zip(range(0, self.shape[0], BLOCK), self.blocks()):
            block.toarray(out=out[start : start + BLOCK])
        return out

    def tocsr(self) -> sp.csr_matrix:
        """The rows as one CSR matrix (a copy)."""
        return self[:]


def rows_of(parts, rows) -> "Rows | sp.csr_matrix":
    """Rows ``rows`` (positions in the stack of ``parts``, a matrix or `Rows` or a tuple of them): `Rows` again
    when the parts are `Rows` of one matrix over the same columns, else a CSR copy of those rows."""
    parts = parts if isinstance(parts, tuple) else (parts,)
    rows = np.asarray(rows, dtype=np.int64)
    first = parts[0]
    if all(isinstance(P, Rows) and P.base is first.base and _same_columns(P.columns, first.columns) for P in parts):
        return Rows(first.base, np.concatenate([P.rows for P in parts])[rows], first.columns)
    return sp.vstack([as_csr(P) for P in parts], format="csr")[rows]


def _same_columns(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None) == (b is None) and (a is None or np.array_equal(a, b))


def as_csr(X) -> sp.csr_matrix:
    """The model input ``X`` (sparse or dense, or `Rows`) as CSR float32; no copy when it is one already."""
    if isinstance(X, Rows):
        X = X.tocsr()
    if sp.issparse(X):
        X = X.tocsr()
    else:
        X = sp.csr_matrix(np.asarray(X))
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    return X


def vstack(A, B) -> sp.csr_matrix:
    """The rows of ``A`` then those of ``B``, as one CSR matrix."""
    return sp.vstack([A, B], format="csr")


def keep_columns_of(parts, columns: np.ndarray) -> list:
    """`keep_columns` of each CSR matrix in ``parts``; `Rows` are renumbered as they are read
    (`Rows.keep_columns`), so their shared matrix is neither copied nor changed."""
    return [X.keep_columns(columns) if isinstance(X, Rows) else keep_columns(X, columns) for X in parts]


def keep_columns(X: sp.csr_matrix, columns: np.ndarray, renumber: np.ndarray | None = None) -> sp.csr_matrix:
    """``X[:, columns]`` for sorted ``columns`` that hold every non-zero value of CSR ``X``: the same matrix,
    entry for entry, sharing ``X``'s values (only the column numbers are new). Where a stored zero lies
    outside ``columns``, the slice itself. ``renumber``: each column's new number (-1 outside ``columns``),
    when the caller has it already."""
    if renumber is None:
        renumber = np.full(X.shape[1], -1, dtype=X.indices.dtype)
        renumber[columns] = np.arange(len(columns))
    indices = renumber[X.indices]
    if indices.size and indices.min() < 0:
        return X[:, columns]
    return sp.csr_matrix((X.data, indices, X.indptr), shape=(X.shape[0], len(columns)), copy=False)


def sparse_tensor(X: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR block as a torch sparse CSR tensor (the encoder's first layer multiplies it as is)."""
    from ..nn import to_torch_sparse

    return to_torch_sparse(X, device=device)


def row_blocks(parts, block: int):
    """Blocks of ``block`` rows of the CSR matrices (or `Rows`) ``parts`` stacked (the rows of each in turn), as
    the blocks of their `vstack` would be, without building the stacked matrix: only a block that straddles two
    parts is stacked."""
    pending, held = [], 0
    for X in parts:
        start = 0
        while start < X.shape[0]:
            take = min(block - held, X.shape[0] - start)
            pending.append(X[start : start + take])
            held += take
            start += take
            if held == block:
                yield pending[0] if len(pending) == 1 else sp.vstack(pending, format="csr")
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else sp.vstack(pending, format="csr")


def encode(encoder: torch.nn.Module, X, device: torch.device, block: int = BLOCK) -> np.ndarray:
    """The encoder's output for every row of ``X``, float32 (n, out).

    ``X``: a matrix or `Rows`, or a tuple of them, of the same genes, whose rows are encoded in turn (as their
    `vstack`, without building it). Encoded ``block`` rows at a time, in eval mode and without autograd (memory
    stays bounded whatever the number of cells); the encoder's training mode is restored after."""
    parts = [M if isinstance(M, Rows) else as_csr(M) for M in (X if isinstance(X, tuple) else (X,))]
    was_training = encoder.training
    encoder.eval()
    out = []
    with torch.inference_mode():
        for rows in row_blocks(parts, block):
            out.append(encoder(sparse_tensor(rows, device)).float().cpu().numpy())
    encoder.train(was_training)
    if not out:
        return np.zeros((0, encoder_out_features(encoder)), dtype=np.float32)
    return np.concatenate(out)


def encoder_out_features(encoder: torch.nn.Module) -> int:
    """The width of the encoder's output (its last linear layer)."""
    last = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    return int(last.out_features)
