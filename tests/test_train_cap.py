"""The per-type cap of `gsrcl.train` (``max_cells_per_type``, ``--max-cells-per-type``) and training from a file
read by rows: scanpy's bundled pbmc68k_reduced, tiny networks."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest

import gsrcl
from gsrcl.cli import main
from gsrcl.errors import GsrclError
from gsrcl.methods.labels import cap_per_type
from gsrcl.training import train
from tests.conftest import TINY_SETTINGS

LABELS = "bulk_labels"


def test_cap_per_type_keeps_at_most_cap_cells_of_each_type_at_random():
    y = np.array(["a"] * 50 + ["b"] * 7 + ["c"] * 20)
    rows = cap_per_type(y, 10, seed=3)
    assert np.all(np.diff(rows) > 0)
    kept = dict(zip(*np.unique(y[rows], return_counts=True)))
    assert kept == {"a": 10, "b": 7, "c": 10}
    assert np.array_equal(rows, cap_per_type(y, 10, seed=3))
    assert not np.array_equal(rows, cap_per_type(y, 10, seed=4))
    assert rows[rows < 50].max() > 10  # drawn from the whole type, not its first cells
    assert cap_per_type(y, 50, seed=3) is None and cap_per_type(y, None, seed=3) is None


@pytest.fixture(scope="module")
def reference_file(pbmc68k, tmp_path_factory):
    """The reference part of pbmc68k as an h5ad file (log1p values, CSR)."""
    import scipy.sparse as sp

    a = pbmc68k[0].copy()
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    path = tmp_path_factory.mktemp("cap") / "reference.h5ad"
    a.write_h5ad(path)
    return a, path


def _train(data, cap):
    return train(data, LABELS, "afrcl", name="capped", top_genes=200, quiet=True, max_cells_per_type=cap,
                 **{**TINY_SETTINGS, "epochs": 2, "min_epochs": 1})


def test_capped_training_from_memory_a_backed_file_and_a_source_gives_one_model(reference_file):
    adata, path = reference_file
    counts = adata.obs[LABELS].value_counts()
    cap = int(counts.iloc[2])  # the two largest types are capped
    in_memory = _train(adata, cap)
    t = in_memory.manifest["training"]
    assert t["max_cells_per_type"] == cap
    assert t["cells_per_type_input"] == {str(k): int(v) for k, v in counts.sort_index().items()}
    assert max(t["cells_per_type"].values()) == cap
    assert t["cells"] == int(np.minimum(counts, cap).sum())
    backed = ad.read_h5ad(path, backed="r")
    try:
        from_backed = _train(backed, cap)
    finally:
        backed.file.close()
    from_source = _train(gsrcl.open_query(path), cap)
    for other in (from_backed, from_source):
        assert other.genes == in_memory.genes
        assert set(other.arrays) == set(in_memory.arrays)
        assert all(np.array_equal(other.arrays[k], v) for k, v in in_memory.arrays.items())


def test_no_cap_and_a_cap_no_type_reaches_train_on_every_cell(reference_file):
    adata, _ = reference_file
    top = int(adata.obs[LABELS].value_counts().max())
    a, b = _train(adata, None), _train(adata, top)
    assert a.manifest["training"]["cells"] == b.manifest["training"]["cells"] == adata.n_obs
    assert all(np.array_equal(a.arrays[k], v) for k, v in b.arrays.items())


@pytest.mark.parametrize("cap", [0, 4, 2.5, True])
def test_a_cap_below_min_cells_or_not_a_whole_number_is_refused(reference_file, cap):
    with pytest.raises(GsrclError, match="max_cells_per_type"):
        _train(reference_file[0], cap)


def test_cli_flag_caps_the_cells_and_zero_means_every_cell(reference_file, tmp_path, capsys):
    adata, path = reference_file
    common = ["train", "-i", str(path), "--labels", LABELS, "-mp", str(tmp_path), "--epochs", "2", "--top-genes",
              "200", "--ensemble", "1", "-q", "--config", json.dumps({"hidden": [16], "out": 8, "head": [8, 4],
                                                                      "min_epochs": 1, "svm_cv": 2})]
    assert main(common + ["-r", "capped", "--max-cells-per-type", "20"]) == 0
    m = json.loads((tmp_path / "capped" / "manifest.json").read_text())["training"]
    assert m["max_cells_per_type"] == 20 and max(m["cells_per_type"].values()) == 20
    assert main(common + ["-r", "all", "--max-cells-per-type", "0"]) == 0
    m = json.loads((tmp_path / "all" / "manifest.json").read_text())["training"]
    assert m["max_cells_per_type"] is None and m["cells"] == adata.n_obs
    with pytest.raises(SystemExit) as exc:
        main(common + ["-r", "bad", "--max-cells-per-type", "-3"])
    assert exc.value.code == 2 and "must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_rows_read_block_by_block_grow_one_matrix_equal_to_slicing():
    import scipy.sparse as sp

    from gsrcl.training import _RowBuffer

    rng = np.random.default_rng(1)
    # a sparse first block, then denser ones: the arrays must grow, more than once
    blocks = [sp.random(n, 50, density=d, format="csr", dtype=np.float32, random_state=rng)
              for n, d in ((20, 0.01), (30, 0.3), (5, 0.0), (40, 0.9))]
    buf = _RowBuffer(sum(b.shape[0] for b in blocks), 50)
    for b in blocks:
        buf.append(b)
    X, expected = buf.matrix(), sp.vstack(blocks, format="csr")
    assert X.dtype == np.float32 and X.indices.dtype == np.int32 and X.shape == expected.shape
    np.testing.assert_array_equal(X.indptr, expected.indptr)
    np.testing.assert_array_equal(X.indices, expected.indices)
    np.testing.assert_array_equal(X.data, expected.data)


def test_training_leaves_a_callers_float32_matrix_as_it_was(reference_file):
    """The values read from a file are transformed where they lie; a caller's own CSR float32 matrix is not."""
    adata, _ = reference_file
    a = adata.copy()
    before = a.X.copy()
    train(a, LABELS, "afrcl", library_size=1e4, max_cells_per_type=None, novelty=False, quiet=True,
          **{**TINY_SETTINGS, "epochs": 1, "min_epochs": 1})
    assert a.X.dtype == np.float32 and (a.X != before).nnz == 0
