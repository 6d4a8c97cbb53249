"""The matrices the baselines are given, built with ``gsrcl.values`` and ``gsrcl.genes``.

GsRCL and AF-RCL get the raw file (`harness.ours`); the baselines get natural log1p values (`model_input`) or,
CellTypist, log1p counts per 10,000 (`log1p_cp10k`), each aligned to the genes it was trained on (`align_to`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Counts per cell after library-size normalisation, as CellTypist expects.
CP10K = 10_000


def read_labelled(path, key: str = "cell_type"):
    """A benchmark's data file and its labels, or None (with a line on stderr) when ``../shared/data`` lacks it.

    Returns
    -------
    (anndata.AnnData, numpy.ndarray of str) or None
    """
    import sys

    import anndata as ad

    if not os.path.exists(path):
        print(f"{path} is absent: this benchmark needs ../shared/data", file=sys.stderr)
        return None
    adata = ad.read_h5ad(path)
    return adata, adata.obs[key].astype(str).to_numpy()


def model_input(adata) -> sp.csr_matrix:
    """The matrix as natural log1p values.

    Parameters
    ----------
    adata : anndata.AnnData
        Counts, or log values of any base (``gsrcl.values.detect_values`` tells them apart).

    Returns
    -------
    scipy.sparse.csr_matrix
        log1p of counts; log values in their natural log1p form, never logged twice.
    """
    from gsrcl.values import detect_values, to_model_input

    return to_model_input(adata.X, detect_values(adata.X))


def log1p_cp10k(adata) -> sp.csr_matrix:
    """log1p of counts per 10,000 over the file's own genes, as CellTypist expects.

    Parameters
    ----------
    adata : anndata.AnnData
        Counts or log values; log values are first taken back to their linear scale (``expm1`` of their natural
        log1p form).

    Returns
    -------
    scipy.sparse.csr_matrix
    """
    from gsrcl.values import detect_values, library_size_normalize, to_model_input

    linear = to_model_input(adata.X, detect_values(adata.X))
    np.expm1(linear.data, out=linear.data)
    out = library_size_normalize(linear, CP10K)
    np.log1p(out.data, out=out.data)
    return out


def align_to(X, var: pd.DataFrame, genes: Sequence[str]) -> sp.csr_matrix:
    """A query matrix on the training genes.

    Parameters
    ----------
    X : matrix
        Cells x the query's genes.
    var : pandas.DataFrame
        The query's gene table (index: names; columns the matching may use).
    genes : sequence of str
        The training genes.

    Returns
    -------
    scipy.sparse.csr_matrix
        Cells x ``genes``, zero where the query lacks a gene (``gsrcl.genes.match_genes`` and ``align``).
    """
    from gsrcl.genes import align, match_genes

    return align(X, match_genes(var, list(genes)))
