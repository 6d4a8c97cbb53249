"""Every input format round-trips a real dataset: the same matrix (exactly), barcodes and genes."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gsrcl.errors import DuplicateGenesError
from gsrcl.io import open_query, read_query


@pytest.mark.realdata
@pytest.mark.parametrize("layout", ["csr", "csc", "dense"])
def test_h5ad_x_layouts(assert_same, tmp_path, pbmc, layout):
    adata = pbmc.copy()
    adata.X = {"csr": adata.X, "csc": sp.csc_matrix(adata.X), "dense": adata.X.toarray()}[layout]
    adata.write_h5ad(tmp_path / "q.h5ad")
    got = read_query(tmp_path / "q.h5ad")
    assert_same(got, pbmc)
    assert list(got.obs["cell_type"]) == list(pbmc.obs["cell_type"])  # the cell table comes along (labels)
    assert open_query(tmp_path / "q.h5ad").format == "h5ad"


@pytest.mark.realdata
def test_h5ad_layer_raw_and_columns(assert_same, tmp_path, cellbench):
    adata = cellbench.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X.log1p()
    adata.raw = adata
    genes = adata.var_names[::2]
    adata = adata[:, genes].copy()
    adata.var["feature_name"] = adata.var_names.str.lower()
    adata.write_h5ad(tmp_path / "q.h5ad")

    counts = read_query(tmp_path / "q.h5ad", layer="counts")
    assert_same(counts, cellbench[:, genes])
    assert list(counts.var["gene_ids"]) == list(cellbench[:, genes].var["gene_ids"])
    assert list(counts.var["feature_name"]) == list(genes.str.lower())

    logged = read_query(tmp_path / "q.h5ad")
    assert np.allclose(logged.X.toarray(), np.log1p(cellbench[:, genes].X.toarray()), atol=1e-6)

    raw = read_query(tmp_path / "q.h5ad", use_raw=True)
    assert raw.n_vars == cellbench.n_vars and list(raw.var_names) == list(cellbench.var_names)
    assert np.allclose(raw.X.toarray(), np.log1p(cellbench.X.toarray()), atol=1e-6)


@pytest.mark.realdata
def test_h5ad_index_taken_from_the_index_attribute(assert_same, tmp_path, pbmc):
    """The index dataset is whatever `_index` names, not a dataset literally called `_index`."""
    adata = pbmc.copy()
    adata.obs.index.name = "barcode_col"
    adata.var.index.name = "symbol_col"
    adata.write_h5ad(tmp_path / "q.h5ad")
    with h5py.File(tmp_path / "q.h5ad") as f:
        assert f["var"].attrs["_index"] == "symbol_col" and "_index" not in f["var"]
    assert_same(read_query(tmp_path / "q.h5ad"), pbmc)


@pytest.mark.realdata
def test_h5ad_with_ids_as_index_gets_symbols(tmp_path, cellbench):
    adata = cellbench.copy()
    adata.var["feature_name"] = adata.var_names
    adata.var_names = list(adata.var["gene_ids"])
    adata.write_h5ad(tmp_path / "q.h5ad")
    var = open_query(tmp_path / "q.h5ad").var
    assert list(var.index) == list(cellbench.var["gene_ids"])
    assert list(var["gene_symbols"]) == list(cellbench.var_names)


@pytest.mark.realdata
def test_10x_v3_keeps_trailing_zero_genes_and_drops_other_features(assert_same, writers, tmp_path, cellbench):
    path = writers.write_10x_v3(tmp_path / "q.h5", cellbench, extra_features=4)
    src = open_query(path)
    assert src.format == "10x-h5-v3"
    assert list(src.var["gene_ids"]) == list(cellbench.var["gene_ids"])
    assert set(src.var["feature_types"]) == {"Gene Expression"}
    assert_same(src.to_memory(), cellbench)


@pytest.mark.realdata
def test_10x_v3_duplicate_names_then_ids(writers, tmp_path, cellbench):
    names = list(cellbench.var_names)
    names[5] = names[4]
    names[9] = names[8]
    path = writers.write_10x_v3(tmp_path / "q.h5", cellbench, names=names)
    with pytest.raises(DuplicateGenesError) as err:
        read_query(path)
    assert "2 gene names" in err.value.message and repr(names[4]) in err.value.message
    assert "-var matrix features id" in err.value.message

    got = read_query(path, var=["matrix", "features", "id"])
    assert list(got.var_names) == list(cellbench.var["gene_ids"])
    assert list(got.var["gene_symbols"]) == names
    assert (got.X != cellbench.X).nnz == 0 and list(got.obs_names) == list(cellbench.obs_names)


@pytest.mark.realdata
def test_10x_v2(assert_same, writers, tmp_path, cellbench):
    path = writers.write_10x_v2(tmp_path / "q.h5", cellbench)
    src = open_query(path)
    assert src.format == "10x-h5-v2"
    assert list(src.var["gene_ids"]) == list(cellbench.var["gene_ids"])
    assert_same(src.to_memory(), cellbench)


@pytest.mark.realdata
@pytest.mark.parametrize("gz", [True, False])
def test_10x_folder(assert_same, writers, tmp_path, cellbench, gz):
    folder = writers.write_10x_folder(tmp_path / "filtered_feature_bc_matrix", cellbench, gz=gz)
    src = open_query(folder)
    assert src.format == "10x-mtx"
    assert list(src.var["gene_ids"]) == list(cellbench.var["gene_ids"])
    assert_same(src.to_memory(), cellbench)
    mtx = folder / ("matrix.mtx.gz" if gz else "matrix.mtx")
    assert_same(read_query(mtx), cellbench)  # the matrix file itself also works
    assert list(read_query(folder, var=["id"]).var_names) == list(cellbench.var["gene_ids"])


@pytest.mark.realdata
@pytest.mark.parametrize("dense", [False, True])
def test_sczidesk(assert_same, writers, tmp_path, pbmc, dense):
    path = writers.write_sczidesk(tmp_path / "q.h5", pbmc, dense=dense)
    src = open_query(path)
    assert src.format == "sczidesk-h5"
    got = src.to_memory()
    assert_same(got, pbmc)
    assert list(got.obs["cell_type1"]) == list(pbmc.obs["cell_type"].astype(str))


@pytest.mark.realdata
def test_loom_and_layer(assert_same, writers, tmp_path, cellbench):
    doubled = cellbench.X.toarray() * 2
    path = writers.write_loom(tmp_path / "q.loom", cellbench, layer=doubled)
    src = open_query(path)
    assert src.format == "loom"
    assert list(src.var["gene_ids"]) == list(cellbench.var["gene_ids"])
    got = src.to_memory()
    assert_same(got, cellbench)
    assert list(got.obs.columns) == ["cell_type"] and list(got.obs["cell_type"]) == list(cellbench.obs["cell_type"])
    layer = read_query(path, layer="spliced")
    assert np.array_equal(layer.X.toarray(), doubled)


@pytest.mark.realdata
def test_custom_tree_via_key_paths(assert_same, tmp_path, pbmc):
    """Any tree: a dense matrix and a CSC group (shape as a dataset, no encoding-type), names at depth 1-3."""
    X = pbmc.X
    with h5py.File(tmp_path / "q.h5", "w") as f:
        f.create_dataset("counts", data=X.toarray())
        meta = f.create_group("meta")
        meta.create_dataset("cells", data=np.asarray(pbmc.obs_names, dtype="S"))
        meta.create_group("genes").create_dataset("symbol", data=np.asarray(pbmc.var_names, dtype="S"))
        csc = X.tocsc()
        g = f.create_group("sparse")
        for key in ("data", "indices", "indptr"):
            g.create_dataset(key, data=getattr(csc, key))
        g.create_dataset("shape", data=np.asarray(csc.shape))
    keys = {"obs": ["meta", "cells"], "var": ["meta", "genes", "symbol"]}
    dense = read_query(tmp_path / "q.h5", mat=["counts"], **keys)
    assert_same(dense, pbmc)
    sparse = open_query(tmp_path / "q.h5", mat="sparse", **keys)  # a 'a/b' string also works
    assert sparse.format == "hdf5"
    assert_same(sparse.to_memory(), pbmc)


@pytest.mark.realdata
def test_key_paths_with_genes_as_rows_and_transpose(assert_same, tmp_path, pbmc):
    """With key paths rows = obs names and columns = var names; -t then turns genes x cells around."""
    with h5py.File(tmp_path / "q.h5", "w") as f:
        g = f.create_group("m")
        csr = sp.csr_matrix(pbmc.X.T)  # genes x cells, CSR, encoding-type recorded
        for key in ("data", "indices", "indptr"):
            g.create_dataset(key, data=getattr(csr, key))
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["shape"] = csr.shape
        f.create_dataset("genes", data=np.asarray(pbmc.var_names, dtype="S"))
        f.create_dataset("cells", data=np.asarray(pbmc.obs_names, dtype="S"))
    got = read_query(tmp_path / "q.h5", mat=["m"], obs=["genes"], var=["cells"], transpose=True)
    assert_same(got, pbmc)


@pytest.mark.realdata
@pytest.mark.parametrize("name,sep", [("q.csv", ","), ("q.tsv", "\t"), ("q.csv.gz", ","), ("q.tsv.gz", "\t")])
def test_tables(assert_same, writers, tmp_path, pbmc, name, sep):
    small = pbmc[:40, :400].copy()
    path = writers.write_table(tmp_path / name, small, sep=sep)
    src = open_query(path)
    assert src.format == ("tsv" if sep == "\t" else "csv")
    assert_same(src.to_memory(), small)


@pytest.mark.realdata
def test_table_in_several_chunks(assert_same, writers, tmp_path, pbmc, monkeypatch):
    from gsrcl.io import text
    monkeypatch.setattr(text, "CHUNK_VALUES", 400 * 7)  # 7 rows per chunk
    small = pbmc[:40, :400].copy()
    assert_same(read_query(writers.write_table(tmp_path / "q.csv", small)), small)


@pytest.mark.realdata
def test_table_genes_by_cells_with_transpose(assert_same, writers, tmp_path, pbmc):
    small = pbmc[:40, :400].copy()
    path = writers.write_table(tmp_path / "q.csv.gz", small, transpose=True)
    assert_same(read_query(path, transpose=True), small)


@pytest.mark.realdata
def test_h5ad_genes_by_cells_with_transpose(assert_same, tmp_path, pbmc):
    """An h5ad holding genes as obs: -t reads it; its CSC X then has the cells as compressed axis."""
    flipped = ad.AnnData(sp.csc_matrix(pbmc.X.T), obs=pd.DataFrame(index=pbmc.var_names),
                         var=pd.DataFrame(index=pbmc.obs_names))
    flipped.write_h5ad(tmp_path / "q.h5ad")
    src = open_query(tmp_path / "q.h5ad", transpose=True)
    assert_same(src.to_memory(), pbmc)
    blocks = sp.vstack([b for _, b in src.iter_blocks(33)]).tocsr()
    assert (blocks != pbmc.X).nnz == 0


def test_table_header_without_corner_and_quotes(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('"GeneA","Gene B"\n"c1",1,2\n"c2",3,0\n')  # R write.table: no corner field
    got = read_query(path)
    assert list(got.var_names) == ["GeneA", "Gene B"] and list(got.obs_names) == ["c1", "c2"]
    assert np.array_equal(got.X.toarray(), [[1, 2], [3, 0]])


@pytest.mark.realdata
def test_held_matrix_is_not_changed_through_the_anndata(assert_same, writers, tmp_path, pbmc):
    small = pbmc[:10, :50].copy()
    src = open_query(writers.write_table(tmp_path / "q.csv", small))
    first = src.to_memory()
    first.X.data[:] = -1
    assert_same(src.to_memory(), small)


@pytest.mark.realdata
def test_10x_v2_with_two_genomes_needs_a_choice(assert_same, writers, tmp_path, cellbench):
    from gsrcl.errors import LayoutError

    path = writers.write_10x_v2(tmp_path / "q.h5", cellbench, genome="hg19")
    half = cellbench[:, : cellbench.n_vars // 2].copy()
    writers.write_10x_v2(tmp_path / "half.h5", half, genome="mm10")
    with h5py.File(path, "a") as f, h5py.File(tmp_path / "half.h5") as g:
        g.copy("mm10", f)
    with pytest.raises(LayoutError, match="-mat GENOME"):
        read_query(path)
    assert_same(read_query(path, mat=["mm10"]), half)
    assert_same(read_query(path, mat=["hg19"]), cellbench)
