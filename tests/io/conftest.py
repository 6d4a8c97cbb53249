"""Fixtures of the reader tests: small real subsets (realdata), writers of each input format the readers accept,
and the comparison of what a reader returned with what was written."""

from __future__ import annotations

import gzip
import types
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

STR = h5py.string_dtype()


def _subset(path: Path, n_cells: int) -> ad.AnnData:
    adata = ad.read_h5ad(path)[:n_cells].copy()
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


@pytest.fixture(scope="session")
def pbmc(data_dir) -> ad.AnnData:
    """150 PBMC cells with 10x barcodes and gene symbols (raw counts)."""
    return _subset(data_dir / "pbmc3k_seurat_clustifyr.h5ad", 150)


@pytest.fixture(scope="session")
def cellbench(data_dir) -> ad.AnnData:
    """120 CEL-seq2 cells with symbols and Ensembl ids; the last 3 genes are made all-zero so a reader that
    infers the gene count from the indices (instead of reading `shape`) would lose them."""
    adata = _subset(data_dir / "cellbench_celseq2_3cl.h5ad", 120)
    X = adata.X.copy()
    X.data[X.indices >= adata.n_vars - 3] = 0
    X.eliminate_zeros()
    adata.X = X
    assert X[:, -3:].nnz == 0 and X.indices.max() < adata.n_vars - 3
    return adata


def _assert_same(got: ad.AnnData, want: ad.AnnData) -> None:
    assert isinstance(got.X, sp.csr_matrix) and got.X.dtype == np.float32
    assert got.shape == want.shape
    assert (got.X != sp.csr_matrix(want.X)).nnz == 0
    assert list(got.obs_names) == list(want.obs_names)
    assert list(got.var_names) == list(want.var_names)


@pytest.fixture(scope="session")
def assert_same():
    """``assert_same(got, want)``: the same matrix (exactly), barcodes and genes, and X CSR float32."""
    return _assert_same


# --- writers: an AnnData (counts, obs['cell_type'], var['gene_ids']) into each input format -------------------


def _strings(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def write_10x_v3(path: Path, adata, *, extra_features: int = 0, names=None) -> Path:
    """Cell Ranger v3 layout: matrix/ CSC genes x cells (= CSR cells x genes), features/{id,name,feature_type}.
    ``extra_features`` appends that many 'Antibody Capture' features (all zero) that the reader must drop."""
    X = sp.csr_matrix(adata.X)
    n_genes = X.shape[1] + extra_features
    X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], n_genes))
    ids = list(adata.var["gene_ids"]) + [f"AB{i}" for i in range(extra_features)]
    gene_names = list(adata.var_names if names is None else names) + [f"CD{i}_TotalSeqB" for i in range(extra_features)]
    types = ["Gene Expression"] * adata.n_vars + ["Antibody Capture"] * extra_features
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.asarray(adata.obs_names, dtype="S"))
        g.create_dataset("data", data=X.data.astype(np.int32), compression="gzip")
        g.create_dataset("indices", data=X.indices.astype(np.int64), compression="gzip")
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.asarray([n_genes, X.shape[0]], dtype=np.int32))
        feats = g.create_group("features")
        feats.create_dataset("id", data=np.asarray(ids, dtype="S"))
        feats.create_dataset("name", data=np.asarray(gene_names, dtype="S"))
        feats.create_dataset("feature_type", data=np.asarray(types, dtype="S"))
        feats.create_dataset("genome", data=np.asarray(["GRCh38"] * n_genes, dtype="S"))
    return path


def write_10x_v2(path: Path, adata, genome: str = "GRCh38") -> Path:
    X = sp.csr_matrix(adata.X)
    with h5py.File(path, "w") as f:
        g = f.create_group(genome)
        g.create_dataset("barcodes", data=np.asarray(adata.obs_names, dtype="S"))
        g.create_dataset("data", data=X.data.astype(np.int32))
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.asarray([X.shape[1], X.shape[0]], dtype=np.int32))
        g.create_dataset("genes", data=np.asarray(adata.var["gene_ids"], dtype="S"))
        g.create_dataset("gene_names", data=np.asarray(adata.var_names, dtype="S"))
    return path


def write_10x_folder(folder: Path, adata, *, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    # scipy writes a path fast and a file object slowly: write plain, then compress
    scipy.io.mmwrite(str(folder / "matrix.mtx"), sp.coo_matrix(adata.X.T).astype(np.int64), field="integer")
    if gz:
        plain = folder / "matrix.mtx"
        with open(plain, "rb") as src, gzip.open(folder / "matrix.mtx.gz", "wb", compresslevel=1) as dst:
            dst.write(src.read())
        plain.unlink()
    feats = pd.DataFrame({"id": adata.var["gene_ids"], "name": adata.var_names, "type": "Gene Expression"})
    feats.to_csv(folder / f"features.tsv{ext}", sep="\t", header=False, index=False)
    pd.Series(adata.obs_names).to_csv(folder / f"barcodes.tsv{ext}", sep="\t", header=False, index=False)
    return folder


def write_sczidesk(path: Path, adata, *, dense: bool = False) -> Path:
    X = sp.csr_matrix(adata.X)
    with h5py.File(path, "w") as f:
        if dense:
            f.create_dataset("exprs", data=X.toarray())
        else:
            g = f.create_group("exprs")
            g.create_dataset("data", data=X.data)
            g.create_dataset("indices", data=X.indices)
            g.create_dataset("indptr", data=X.indptr)
            g.create_dataset("shape", data=np.asarray(X.shape))
        f.create_dataset("obs_names", data=np.asarray(adata.obs_names, dtype="S"))
        f.create_dataset("var_names", data=np.asarray(adata.var_names, dtype="S"))
        f.create_group("obs").create_dataset("cell_type1", data=_strings(adata.obs["cell_type"]), dtype=STR)
        f.create_group("var")
    return path


def write_loom(path: Path, adata, *, layer: np.ndarray | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("matrix", data=adata.X.T.toarray(), chunks=(64, 64), compression="gzip")
        rows = f.create_group("row_attrs")
        rows.create_dataset("Gene", data=_strings(adata.var_names), dtype=STR)
        rows.create_dataset("Accession", data=_strings(adata.var["gene_ids"]), dtype=STR)
        cols = f.create_group("col_attrs")
        cols.create_dataset("CellID", data=_strings(adata.obs_names), dtype=STR)
        cols.create_dataset("cell_type", data=_strings(adata.obs["cell_type"]), dtype=STR)
        if layer is not None:
            f.create_group("layers").create_dataset("spliced", data=layer.T)
        f.attrs["LOOM_SPEC_VERSION"] = "3.0.0"
    return path


def write_table(path: Path, adata, *, transpose: bool = False, sep: str = ",") -> Path:
    frame = pd.DataFrame(adata.X.toarray().astype(np.int64), index=adata.obs_names, columns=adata.var_names)
    (frame.T if transpose else frame).to_csv(path, sep=sep)
    return path


@pytest.fixture(scope="session")
def writers():
    """The writers as attributes (``writers.write_10x_v3(path, adata, ...)``); each returns the path it wrote."""
    return types.SimpleNamespace(write_10x_v3=write_10x_v3, write_10x_v2=write_10x_v2,
                                 write_10x_folder=write_10x_folder, write_sczidesk=write_sczidesk,
                                 write_loom=write_loom, write_table=write_table)
