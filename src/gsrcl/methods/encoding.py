"""The model input as CSR float32 and its encoding by an encoder, in blocks of rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

BLOCK = 4096  # rows encoded at once at prediction time: bounds memory whatever the number of cells


def as_csr(X) -> sp.csr_matrix:
    """The model input ``X`` (sparse or dense) as CSR float32; no copy when it is one already."""
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


def keep_columns(X: sp.csr_matrix, columns: np.ndarray) -> sp.csr_matrix:
    """``X[:, columns]`` for sorted ``columns`` that hold every non-zero value of CSR ``X``: the same matrix,
    entry for entry, sharing ``X``'s values (only the column numbers are new). Where a stored zero lies
    outside ``columns``, the slice itself."""
    new = np.full(X.shape[1], -1, dtype=X.indices.dtype)
    new[columns] = np.arange(len(columns))
    indices = new[X.indices]
    if indices.size and indices.min() < 0:
        return X[:, columns]
    return sp.csr_matrix((X.data, indices, X.indptr), shape=(X.shape[0], len(columns)), copy=False)


def sparse_tensor(X: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR block as a torch sparse CSR tensor (the encoder's first layer multiplies it as is)."""
    from ..nn import to_torch_sparse

    return to_torch_sparse(X, device=device)


def row_blocks(parts, block: int):
    """Blocks of ``block`` rows of the CSR matrices ``parts`` stacked (the rows of each in turn), as the blocks of
    their `vstack` would be, without building the stacked matrix: only a block that straddles two parts is
    stacked."""
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

    ``X``: a matrix, or a tuple of matrices of the same genes whose rows are encoded in turn (as their `vstack`,
    without building it). Encoded ``block`` rows at a time, in eval mode and without autograd (memory stays
    bounded whatever the number of cells); the encoder's training mode is restored after."""
    parts = [as_csr(M) for M in (X if isinstance(X, tuple) else (X,))]
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
