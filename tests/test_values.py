"""gsrcl.values: telling counts / log1p / normalised / scaled values apart, and the model-input transform."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from gsrcl.errors import ValuesError
from gsrcl.values import detect_values, library_size_normalize, to_model_input
from tests.conftest import dataset


def _X(name: str, n: int | None = None) -> sp.csr_matrix:
    X = ad.read_h5ad(dataset(name)).X
    X = sp.csr_matrix(X)
    return X if n is None else X[:n]


@pytest.fixture(scope="module")
def pbmc3k() -> sp.csr_matrix:
    return _X("pbmc3k_seurat_clustifyr.h5ad", 600)


def _with_data(X: sp.csr_matrix, fn) -> sp.csr_matrix:
    out = X.astype(np.float64)
    out.data = fn(out.data)
    return out.astype(np.float32)


@pytest.mark.realdata
def test_raw_counts_detected_on_real_file():
    r = detect_values(_X("cellbench_celseq2_3cl.h5ad"))
    assert r.kind == "counts"
    assert r.integer_fraction == 1.0 and r.min == 0.0 and r.max >= 1
    assert r.rows_checked == 274
    assert "raw counts" in r.message and not r.warn


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["pancreas_xin_scclassify_subset.h5ad", "pbmc68k_reduced_scanpy.h5ad"])
def test_real_log_values_detected_as_log1p(name):
    r = detect_values(_X(name))
    assert r.kind == "log1p"
    assert r.integer_fraction < 0.01 and r.max < 20


@pytest.mark.realdata
def test_log2_values_are_recognised_and_converted_exactly():
    # Xin's values are log2(1 + normalised counts): 2**x - 1 gives integers times a per-cell factor.
    X = _X("pancreas_xin_scclassify_subset.h5ad")
    r = detect_values(X)
    assert r.log_base == 2.0 and r.warn and "log2" in r.message
    Y = to_model_input(X, r)
    np.testing.assert_allclose(Y.toarray(), X.toarray() * math.log(2), rtol=1e-6)
    # The converted values are natural log1p: detected as such and passed through unchanged.
    r2 = detect_values(Y)
    assert r2.kind == "log1p" and r2.log_base == math.e
    np.testing.assert_array_equal(to_model_input(Y, r2).toarray(), Y.toarray())


@pytest.mark.realdata
def test_natural_log_of_pbmc68k():
    r = detect_values(_X("pbmc68k_reduced_scanpy.h5ad"))
    assert r.log_base == math.e and "used as they are" in r.message


@pytest.mark.realdata
def test_log1p_cp10k_reports_constant_row_sums(pbmc3k):
    X = to_model_input(library_size_normalize(pbmc3k, 1e4), "normalized")
    r = detect_values(X)
    assert r.kind == "log1p" and r.log_base == math.e
    assert "constant" in r.message and "10,000" in r.message and "CP10k" in r.message


@pytest.mark.realdata
def test_log1p_of_raw_counts_says_so(pbmc3k):
    for fn in (np.log1p, lambda d: np.log(d + 1 + 1e-6)):  # AF-RCL's and GsRCL's training transforms
        r = detect_values(_with_data(pbmc3k, fn))
        assert r.kind == "log1p" and "of raw counts" in r.message and "constant" not in r.message


@pytest.mark.realdata
def test_cp10k_without_log_is_normalized(pbmc3k):
    r = detect_values(library_size_normalize(pbmc3k, 1e4))
    assert r.kind == "normalized" and r.warn
    assert r.max > 30 and "10,000" in r.message and "log1p" in r.message


@pytest.mark.realdata
def test_cpm_without_log_is_normalized(pbmc3k):
    r = detect_values(library_size_normalize(pbmc3k, 1e6))
    assert r.kind == "normalized" and "CPM" in r.message


@pytest.mark.realdata
def test_counts_stored_as_float_or_int_are_counts(pbmc3k):
    # The original tool took float counts (1.0) as logged (docs/methods.md §5 item 10).
    for X in (pbmc3k.astype(np.float64), pbmc3k.astype(np.int32), pbmc3k.toarray().astype(np.float64)):
        r = detect_values(X)
        assert r.kind == "counts", X.dtype
    assert detect_values(pbmc3k + sp.random(*pbmc3k.shape, density=0.01, random_state=0) * 0.3).kind != "counts"


@pytest.mark.realdata
def test_zscored_values_are_scaled_and_refused(pbmc3k):
    import scanpy as sc

    a = ad.AnnData(pbmc3k[:200, :1500].toarray())
    sc.pp.log1p(a)
    sc.pp.scale(a, max_value=10)
    r = detect_values(a.X)
    assert r.kind == "scaled" and r.min < 0 and "raw counts" in r.message
    with pytest.raises(ValuesError, match="raw counts or log1p"):
        to_model_input(sp.csr_matrix(a.X), r)


def test_all_zero_matrix_is_an_error():
    with pytest.raises(ValuesError, match="only zeros"):
        detect_values(sp.csr_matrix((50, 20), dtype=np.float32))
    explicit = sp.csr_matrix((np.zeros(3, np.float32), np.array([0, 1, 2]), np.array([0, 3])), shape=(1, 5))
    with pytest.raises(ValuesError):
        detect_values(explicit)
    with pytest.raises(ValuesError):
        detect_values(np.zeros((4, 4)))


def test_unrecognised_non_integer_values_fall_back_on_the_maximum():
    rng = np.random.default_rng(1)
    small = sp.random(300, 200, density=0.2, random_state=2, data_rvs=lambda k: rng.uniform(0.1, 8, k))
    r = detect_values(small)
    assert r.kind == "log1p" and r.warn and "no log base" in r.message
    big = small.copy()
    big.data *= 40
    assert detect_values(big).kind == "normalized"


@pytest.mark.realdata
def test_sampling_is_seeded_and_bounded():
    X = _X("pbmc3k_seurat_clustifyr.h5ad")
    a, b = detect_values(X, sample_rows=100, seed=3), detect_values(X, sample_rows=100, seed=3)
    assert a == b and a.rows_checked == 100


@pytest.mark.realdata
def test_to_model_input_is_exact_log1p_and_sparse(pbmc3k):
    X = pbmc3k[:80]
    before = X.copy()
    for kind in ("counts", "normalized"):
        Y = to_model_input(X, kind)
        assert sp.isspmatrix_csr(Y) and Y.dtype == np.float32
        assert Y.nnz == X.nnz
        np.testing.assert_array_equal(Y.toarray(), np.log1p(X.toarray()))
    assert (X != before).nnz == 0  # input untouched
    L = _with_data(X, np.log1p)
    Z = to_model_input(L, "log1p")
    assert Z is not L and Z.dtype == np.float32
    np.testing.assert_array_equal(Z.toarray(), L.toarray())
    with pytest.raises(ValueError):
        to_model_input(X, "tpm")


def test_library_size_normalize_keeps_zero_rows():
    X = sp.csr_matrix(np.array([[1, 3, 0], [0, 0, 0], [2, 0, 2]], dtype=np.float32))
    Y = library_size_normalize(X, target=100)
    np.testing.assert_allclose(np.asarray(Y.sum(axis=1)).ravel(), [100, 0, 100], rtol=1e-6)
    np.testing.assert_allclose(Y.toarray()[0], [25, 75, 0], rtol=1e-6)
    assert Y.nnz == X.nnz and Y.dtype == np.float32


def test_log1p_normalized_scales_each_cell_and_is_idempotent():
    from gsrcl.values import log1p_normalized

    counts = sp.csr_matrix(np.array([[1, 0, 3], [0, 0, 0], [10, 10, 0]], dtype=np.float32))
    Xm = counts.copy()
    Xm.data = np.log1p(Xm.data)
    out = log1p_normalized(Xm, 100.0)
    expected = np.log1p(np.array([[25, 0, 75], [0, 0, 0], [50, 50, 0]], dtype=np.float64))
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-5)
    np.testing.assert_allclose(log1p_normalized(out, 100.0).toarray(), expected, rtol=1e-5)
    # values far beyond a log count (counts declared as logged) stay finite
    assert np.isfinite(log1p_normalized(counts * 1000, 100.0).data).all()


def test_scaling_in_row_blocks_and_in_place_is_the_scaling_of_a_copy(monkeypatch):
    import gsrcl.values as values

    rng = np.random.default_rng(0)
    X = sp.random(301, 40, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X.data = np.log1p(X.data * 50)
    X[7] = 0  # an empty row
    X.eliminate_zeros()
    whole = values.log1p_normalized(X, 1e4)
    monkeypatch.setattr(values, "SCALE_ROWS", 16)  # many blocks, the last one short
    before = X.copy()
    assert (values.log1p_normalized(X, 1e4) != whole).nnz == 0
    assert (X != before).nnz == 0  # a copy by default
    inplace = values.log1p_normalized(X, 1e4, copy=False)
    assert np.shares_memory(inplace.data, X.data)
    np.testing.assert_array_equal(inplace.toarray(), whole.toarray())  # bit for bit
    Y = before.copy()
    assert np.shares_memory(to_model_input(Y, "log1p", log_base=2.0, copy=False).data, Y.data)
