"""Small real subsets shared by the reader tests (read once per session)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from tests.conftest import dataset


def _subset(name: str, n_cells: int) -> ad.AnnData:
    adata = ad.read_h5ad(dataset(name))[:n_cells].copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


@pytest.fixture(scope="session")
def pbmc() -> ad.AnnData:
    """150 PBMC cells with 10x barcodes and gene symbols (raw counts)."""
    return _subset("pbmc3k_seurat_clustifyr.h5ad", 150)


@pytest.fixture(scope="session")
def cellbench() -> ad.AnnData:
    """120 CEL-seq2 cells with symbols and Ensembl ids; the last 3 genes are made all-zero so a reader that
    infers the gene count from the indices (instead of reading `shape`) would lose them."""
    adata = _subset("cellbench_celseq2_3cl.h5ad", 120)
    X = adata.X.copy()
    X.data[X.indices >= adata.n_vars - 3] = 0
    X.eliminate_zeros()
    adata.X = X
    assert X[:, -3:].nnz == 0 and X.indices.max() < adata.n_vars - 3
    return adata


def assert_same(got: ad.AnnData, want: ad.AnnData) -> None:
    """Same matrix (exactly), barcodes and genes; X CSR float32."""
    assert isinstance(got.X, sp.csr_matrix) and got.X.dtype == np.float32
    assert got.shape == want.shape
    assert (got.X != sp.csr_matrix(want.X)).nnz == 0
    assert list(got.obs_names) == list(want.obs_names)
    assert list(got.var_names) == list(want.var_names)
