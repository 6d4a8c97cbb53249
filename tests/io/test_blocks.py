"""Block reading, memory, input files left untouched, and the HDF5 tree printer."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from gsrcl.errors import NamesError
from gsrcl.io import format_tree, open_query, read_query


def _sha(path) -> str:
    if path.is_dir():
        return "".join(_sha(p) for p in sorted(path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _formats(writers, tmp_path, adata):
    csc = adata.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    adata.write_h5ad(tmp_path / "csr.h5ad")
    return {
        "h5ad-csr": tmp_path / "csr.h5ad",
        "h5ad-csc": tmp_path / "csc.h5ad",
        "10x-v3": writers.write_10x_v3(tmp_path / "v3.h5", adata, extra_features=2),
        "10x-v2": writers.write_10x_v2(tmp_path / "v2.h5", adata),
        "loom": writers.write_loom(tmp_path / "q.loom", adata),
        "mtx": writers.write_10x_folder(tmp_path / "mtx", adata),
        "csv": writers.write_table(tmp_path / "q.csv", adata[:, :500].copy()),
    }


@pytest.mark.realdata
@pytest.mark.parametrize("block_size", [7, 1000])
def test_blocks_concatenate_to_the_whole_matrix_and_files_stay_unchanged(assert_same, writers, tmp_path, cellbench,
                                                                         block_size):
    for name, path in _formats(writers, tmp_path, cellbench).items():
        before = _sha(path)
        src = open_query(path)
        blocks = list(src.iter_blocks(block_size))
        starts = [start for start, _ in blocks]
        assert starts == list(range(0, src.n_obs, block_size)), name
        assert all(b.dtype == np.float32 and isinstance(b, sp.csr_matrix) for _, b in blocks), name
        assert all(b.shape[1] == src.n_vars for _, b in blocks), name
        whole = src.to_memory()
        assert (sp.vstack([b for _, b in blocks]).tocsr() != whole.X).nnz == 0, name
        want = cellbench if name != "csv" else cellbench[:, :500]
        assert_same(whole, want)
        assert _sha(path) == before, f"{name}: the input file changed"


def _peak_during(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.realdata
@pytest.mark.parametrize("fmt", ["h5ad", "10x-v3"])
def test_blocks_are_read_from_disk(writers, data_dir, tmp_path, fmt):
    """A pass over small blocks allocates a small part of the matrix (numpy arrays are traced by tracemalloc),
    and reading the whole file stays close to one CSR copy."""
    import anndata as ad

    adata = ad.read_h5ad(data_dir / "pbmc3k_seurat_clustifyr.h5ad")
    X = adata.X
    csr_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    if fmt == "h5ad":
        path = tmp_path / "q.h5ad"
        adata.write_h5ad(path)
    else:
        path = writers.write_10x_v3(tmp_path / "q.h5", _with_ids(adata))
    del adata
    src = open_query(path)
    total = []
    peak_blocks = _peak_during(lambda: total.extend(b.nnz for _, b in src.iter_blocks(100)))
    assert sum(total) == X.nnz
    assert peak_blocks < 0.2 * csr_bytes, (peak_blocks, csr_bytes)
    peak_whole = _peak_during(src.to_memory)
    assert peak_whole < 1.6 * csr_bytes, (peak_whole, csr_bytes)


def _with_ids(adata):
    adata = adata.copy()
    adata.var["gene_ids"] = [f"ID{i:05d}" for i in range(adata.n_vars)]
    return adata


@pytest.mark.realdata
def test_format_tree(writers, tmp_path, cellbench):
    path = writers.write_10x_v3(tmp_path / "q.h5", cellbench)
    tree = format_tree(path)
    lines = tree.splitlines()
    assert lines[0].startswith(str(path))
    assert "└── matrix/" in lines[1]
    assert f"├── barcodes  ({cellbench.n_obs},)" in tree
    assert f"│   ├── id  ({cellbench.n_vars},)" in tree  # nested one level deeper under features/
    assert f"data  ({cellbench.X.nnz},) int32" in tree and "shape  (2,) int32" in tree
    cellbench.write_h5ad(tmp_path / "q.h5ad")
    h5ad_tree = format_tree(tmp_path / "q.h5ad")
    assert f"X/  {{encoding-type=csr_matrix, shape=({cellbench.n_obs}, {cellbench.n_vars})}}" in h5ad_tree
    assert "var/  {encoding-type=dataframe, _index=_index}" in h5ad_tree


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_read_query_equals_anndata_on_every_dataset_file(assert_same, data_dir):
    """The real files themselves: same matrix, barcodes and genes as anndata reads."""
    import anndata as ad

    for path in sorted(data_dir.glob("*.h5ad")):
        want = ad.read_h5ad(path)
        if want.obs_names.has_duplicates:  # cellbench_celseq2_5cl repeats well names across its source files
            with pytest.raises(NamesError, match="obs_names_make_unique"):
                read_query(path)
            continue
        got = read_query(path)
        assert_same(got, want)
        if "gene_ids" in want.var:
            assert list(got.var["gene_ids"]) == list(want.var["gene_ids"])
