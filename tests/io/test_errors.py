"""Bad input: the documented error class, one clear line, and the file's tree where the layout is the problem."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gsrcl import errors as E
from gsrcl.io import format_tree, open_query, read_query


def raises(cls, path, **kw) -> E.GsrclError:
    with pytest.raises(cls) as err:
        read_query(path, **kw)
    exc = err.value
    assert "\n" not in exc.message and str(path) in exc.message
    return exc


def _custom_tree(path, pbmc):
    with h5py.File(path, "w") as f:
        f.create_dataset("counts", data=pbmc.X[:, :300].toarray())
        f.create_dataset("cells", data=np.asarray(pbmc.obs_names, dtype="S"))
        f.create_group("annot").create_dataset("genes", data=np.asarray(pbmc.var_names[:300], dtype="S"))
    return path


def test_missing_path(tmp_path):
    exc = raises(E.MissingPathError, tmp_path / "nope.h5ad")
    assert exc.exit_code == E.MissingPathError.exit_code


def test_neither_hdf5_nor_text(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    assert raises(E.NotReadableError, path).exit_code == E.NotReadableError.exit_code
    fake = tmp_path / "fake.h5ad"
    fake.write_text("cell,GeneA\nc1,1\n")
    assert "HDF5" in raises(E.NotReadableError, fake).message
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert raises(E.NotReadableError, empty).exit_code == E.NotReadableError.exit_code


@pytest.mark.realdata
def test_truncated_hdf5(writers, tmp_path, cellbench):
    path = writers.write_10x_v3(tmp_path / "full.h5", cellbench)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    exc = raises(E.CorruptFileError, cut)
    assert exc.exit_code == E.CorruptFileError.exit_code and "truncated or corrupt" in exc.message


def test_hdf5_without_keys(tmp_path):
    path = tmp_path / "empty.h5"
    h5py.File(path, "w").close()
    assert raises(E.EmptyFileError, path).exit_code == E.EmptyFileError.exit_code


@pytest.mark.realdata
def test_unknown_layout_names_the_flags(tmp_path, pbmc):
    path = _custom_tree(tmp_path / "q.h5", pbmc)
    exc = raises(E.LayoutError, path)
    assert exc.exit_code == E.LayoutError.exit_code
    assert exc.detail == format_tree(path)
    assert "-mat counts -obs cells -var annot genes" in exc.message
    # the suggested flags work
    got = read_query(path, mat=["counts"], obs=["cells"], var=["annot", "genes"])
    assert got.shape == (pbmc.n_obs, 300)


@pytest.mark.realdata
@pytest.mark.parametrize("keys,cls,code", [
    ({"mat": ["nothing"], "obs": ["cells"], "var": ["annot", "genes"]}, E.MatrixKeyError, E.MatrixKeyError.exit_code),
    ({"mat": ["annot"], "obs": ["cells"], "var": ["annot", "genes"]}, E.MatrixKeyError, E.MatrixKeyError.exit_code),  # a group, no matrix
    ({"mat": ["a", "b", "c", "d"]}, E.MatrixKeyError, E.MatrixKeyError.exit_code),  # deeper than 3
    ({"mat": ["counts"], "obs": ["annot", "cellz"], "var": ["annot", "genes"]}, E.BarcodeKeyError, E.BarcodeKeyError.exit_code),
    ({"mat": ["counts"], "obs": ["cells"], "var": ["annot", "genes", "x"]}, E.GeneKeyError, E.GeneKeyError.exit_code),
    ({"mat": ["counts"], "obs": ["cells"], "var": ["counts"]}, E.GeneKeyError, E.GeneKeyError.exit_code),  # numbers, not names
])
def test_key_paths_that_do_not_resolve(tmp_path, pbmc, keys, cls, code):
    path = _custom_tree(tmp_path / "q.h5", pbmc)
    exc = raises(cls, path, **keys)
    assert exc.exit_code == code and exc.detail == format_tree(path)


@pytest.mark.realdata
def test_default_names_missing_when_only_some_keys_given(tmp_path, pbmc):
    path = _custom_tree(tmp_path / "q.h5", pbmc)
    exc = raises(E.GeneNamesError, path, mat=["counts"], obs=["cells"])
    assert exc.exit_code == E.GeneNamesError.exit_code and "-var" in exc.message and exc.detail


@pytest.mark.realdata
def test_names_that_do_not_match_the_matrix(tmp_path, pbmc):
    path = _custom_tree(tmp_path / "q.h5", pbmc)
    exc = raises(E.ShapeMismatchError, path, mat=["counts"], obs=["annot", "genes"], var=["cells"])
    assert exc.exit_code == E.ShapeMismatchError.exit_code
    assert f"{pbmc.n_obs} x 300" in exc.message and "-t" in exc.message and "swap -obs and -var" in exc.message


@pytest.mark.realdata
def test_10x_names_shorter_than_shape(writers, tmp_path, cellbench):
    path = writers.write_10x_v3(tmp_path / "q.h5", cellbench)
    with h5py.File(path, "a") as f:
        del f["matrix/barcodes"]
        f["matrix/barcodes"] = np.asarray(cellbench.obs_names[:-1], dtype="S")
    exc = raises(E.ShapeMismatchError, path)
    assert str(cellbench.n_obs) in exc.message and str(cellbench.n_obs - 1) in exc.message


@pytest.mark.realdata
def test_empty_matrix(tmp_path, pbmc):
    ad.AnnData(sp.csr_matrix((0, 50), dtype=np.float32), var=pd.DataFrame(index=pbmc.var_names[:50])).write_h5ad(
        tmp_path / "empty.h5ad")
    assert "0 cells" in raises(E.ValuesError, tmp_path / "empty.h5ad").message
    header_only = tmp_path / "header.csv"
    header_only.write_text(",GeneA,GeneB\n")
    assert raises(E.ValuesError, header_only).exit_code == E.ValuesError.exit_code


@pytest.mark.realdata
def test_nan_and_inf_are_caught_blockwise(tmp_path, pbmc):
    adata = pbmc.copy()
    row = 97
    adata.X.data[adata.X.indptr[row] + 2] = np.nan
    adata.write_h5ad(tmp_path / "nan.h5ad")
    src = open_query(tmp_path / "nan.h5ad")  # names only: no pass over the values yet
    blocks = src.iter_blocks(40)
    next(blocks), next(blocks)  # rows 0-79 are clean
    with pytest.raises(E.ValuesError) as err:
        next(blocks)
    assert repr(pbmc.obs_names[row]) in err.value.message
    with pytest.raises(E.ValuesError):
        src.to_memory()

    dense = pbmc[:20, :100].copy()
    dense.X = dense.X.toarray()
    dense.X[3, 4] = np.inf
    dense.write_h5ad(tmp_path / "inf.h5ad")
    assert repr(pbmc.var_names[4]) in raises(E.ValuesError, tmp_path / "inf.h5ad").message


def test_csv_values_must_be_numbers(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(",GeneA,GeneB,GeneC\ncell1,1,2,3\ncell2,4,x7,6\ncell3,7,8,9\n")
    exc = raises(E.ValuesError, path)
    assert "'x7'" in exc.message and "'cell2'" in exc.message and "'GeneB'" in exc.message and "line 3" in exc.message
    path.write_text(",GeneA,GeneB\ncell1,1,\ncell2,4,5\n")
    assert "'cell1'" in raises(E.ValuesError, path).message
    path.write_text(",GeneA,GeneB\ncell1,1,inf\ncell2,4,5\n")
    assert "NaN or infinite" in raises(E.ValuesError, path).message


def test_csv_names(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(",1,2,3\ncell1,1,2,3\ncell2,4,5,6\n")
    assert "header row holds numbers" in raises(E.NamesError, path).message
    path.write_text(",GeneA,GeneB\ncell1,1,2\ncell2,4,5\ncell1,7,8\n")
    exc = raises(E.NamesError, path)
    assert exc.exit_code == E.NamesError.exit_code and "'cell1'" in exc.message
    path.write_text(",GeneA,GeneB,GeneA,GeneC,GeneC\ncell1,1,2,3,4,5\n")
    exc = raises(E.DuplicateGenesError, path)
    assert exc.exit_code == E.DuplicateGenesError.exit_code and "2 gene names" in exc.message and "'GeneA'" in exc.message


@pytest.mark.realdata
def test_hdf5_names_that_are_numbers(tmp_path, pbmc):
    path = tmp_path / "q.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("exprs", data=pbmc.X[:, :20].toarray())
        f.create_dataset("obs_names", data=np.asarray(pbmc.obs_names, dtype="S"))
        f.create_dataset("var_names", data=np.arange(20))
    assert "holds numbers" in raises(E.NamesError, path).message


@pytest.mark.realdata
def test_orientation_is_checked(writers, tmp_path, pbmc):
    small = pbmc[:30, :200].copy()
    path = writers.write_table(tmp_path / "genes_by_cells.csv", small, transpose=True)
    exc = raises(E.NamesError, path)
    assert "pass -t" in exc.message
    cells_by_genes = writers.write_table(tmp_path / "cells_by_genes.csv", small)
    assert "drop -t" in raises(E.NamesError, cells_by_genes, transpose=True).message


def test_hdfstore_missing_parts_is_layout_error_with_tree(tmp_path):
    # read with h5py, not pandas (tests/io/test_hdfstore_safety.py): an incomplete store is refused with the tree
    path = tmp_path / "store.h5"
    with h5py.File(path, "w") as f:  # a 'fixed' frame without its block count and block column names
        g = f.create_group("df")
        g.attrs["pandas_type"] = np.bytes_(b"frame")
        g.attrs["pandas_version"] = np.bytes_(b"0.15.2")
        g.create_dataset("axis0", data=np.asarray([b"GeneA", b"GeneB"]))
        g.create_dataset("axis1", data=np.asarray([b"c1", b"c2", b"c3"]))
        g.create_dataset("block0_values", data=np.ones((3, 2)))
    exc = raises(E.LayoutError, path)
    assert "'nblocks'" in exc.message and exc.detail == format_tree(path)


@pytest.mark.realdata
def test_layer_and_raw_that_are_absent(writers, tmp_path, pbmc):
    pbmc[:, :50].copy().write_h5ad(tmp_path / "q.h5ad")
    assert "'counts'" in raises(E.MatrixKeyError, tmp_path / "q.h5ad", layer="counts").message
    assert "raw" in raises(E.MatrixKeyError, tmp_path / "q.h5ad", use_raw=True).message
    table = writers.write_table(tmp_path / "q.csv", pbmc[:5, :10].copy())
    raises(E.MatrixKeyError, table, layer="counts")


@pytest.mark.realdata
def test_h5ad_with_numbered_genes(tmp_path, pbmc):
    ad.AnnData(pbmc.X[:, :30]).write_h5ad(tmp_path / "q.h5ad")  # anndata names them '0', '1', ...
    assert "gene names are all numbers" in raises(E.NamesError, tmp_path / "q.h5ad").message


@pytest.mark.realdata
def test_duplicate_genes_in_hdf5_come_with_the_tree(writers, tmp_path, cellbench):
    names = list(cellbench.var_names)
    names[1] = names[0]
    path = writers.write_10x_v3(tmp_path / "q.h5", cellbench, names=names)
    exc = raises(E.DuplicateGenesError, path)
    assert exc.detail == format_tree(path) and "features/" in exc.detail


@pytest.mark.realdata
@pytest.mark.parametrize("rows,cols,fires", [
    ("pbmc_genes", "pbmc_cells", True),  # symbols x 10x barcodes
    ("ids", "cells_numbered", True),  # Ensembl ids as rows
    ("pbmc_cells", "pbmc_genes", False),
    ("cellbench_cells", "pbmc_genes", False),  # 'A1', 'A10' wells look like symbols: no call either way
    ("pbmc_genes", "cellbench_cells", False),
    ("psipred_cells", "psipred_genes", False),
    ("mouse_cells", "mouse_genes", False),
])
def test_orientation_heuristic_is_conservative(data_dir, pbmc, cellbench, rows, cols, fires):
    from gsrcl.io.names import looks_transposed

    mouse = ad.read_h5ad(data_dir / "mouse_immune_actinn_1k.h5ad", backed="r")
    names = {
        "pbmc_genes": list(pbmc.var_names), "pbmc_cells": list(pbmc.obs_names),
        "ids": list(cellbench.var["gene_ids"]), "cells_numbered": [f"cell_{i}" for i in range(300)],
        "cellbench_cells": list(cellbench.obs_names),
        "psipred_cells": [f"BarCode{i}" for i in range(1, 901)], "psipred_genes": [f"GeneId{i}" for i in range(1, 301)],
        "mouse_cells": list(mouse.obs_names), "mouse_genes": list(mouse.var_names),
    }
    assert (looks_transposed(names[rows], names[cols]) is not None) == fires


@pytest.mark.realdata
def test_damaged_chunk_found_while_reading_values(writers, tmp_path, cellbench):
    path = writers.write_10x_v3(tmp_path / "q.h5", cellbench)
    with h5py.File(path) as f:
        info = f["matrix/data"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    middle = info.byte_offset + info.size // 2
    raw[middle:middle + 256] = bytes(256)
    path.write_bytes(bytes(raw))
    src = open_query(path)  # names and indptr are intact
    with pytest.raises(E.CorruptFileError) as err:
        src.to_memory()
    assert "truncated or corrupt" in err.value.message
    with pytest.raises(E.CorruptFileError):
        list(src.iter_blocks(50))


def test_csv_row_without_a_name(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(",GeneA,GeneB\ncell1,1,2\n,4,5\n")
    assert "line 3 has no name" in raises(E.NamesError, path).message


@pytest.mark.realdata
def test_index_beyond_the_shape_is_corruption(writers, tmp_path, cellbench):
    path = writers.write_10x_v3(tmp_path / "q.h5", cellbench)
    with h5py.File(path, "a") as f:
        f["matrix/indices"][3] = cellbench.n_vars + 5
    src = open_query(path)
    with pytest.raises(E.CorruptFileError, match="outside"):
        src.to_memory()
    with pytest.raises(E.CorruptFileError, match="outside"):
        list(src.iter_blocks(10))
