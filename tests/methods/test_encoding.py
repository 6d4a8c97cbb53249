"""The model input's encoding in blocks of rows (gsrcl.methods.encoding)."""

import numpy as np
import scipy.sparse as sp
import torch

from gsrcl.methods.encoding import encode, row_blocks, vstack
from gsrcl.nn import Encoder


def _cells(n, genes, seed):
    X = sp.random(n, genes, density=0.2, format="csr", dtype=np.float32, random_state=seed)
    X.data = np.log1p(X.data * 20)
    return X


def test_blocks_of_stacked_parts_are_the_blocks_of_their_stack():
    A, B = _cells(23, 7, 0), _cells(10, 7, 1)
    for block in (1, 4, 10, 23, 33, 50):
        ours = list(row_blocks([A, B], block))
        theirs = [vstack(A, B)[s : s + block] for s in range(0, 33, block)]
        assert [b.shape for b in ours] == [b.shape for b in theirs]
        for a, b in zip(ours, theirs):
            assert (a != b).nnz == 0
    assert list(row_blocks([A[:0]], 4)) == []


def test_encoding_a_tuple_of_parts_is_encoding_their_stack_bit_for_bit():
    """The final SVMs' cells (training then validation) are encoded in turn without stacking them: the embedding
    must be the stacked matrix's, bit for bit (the same blocks of rows reach the encoder)."""
    torch.manual_seed(0)
    enc = Encoder(30, (16,), 8, batch_norm=True, input_dropout=0.0)
    enc.train()
    enc(torch.randn(64, 30))  # BatchNorm statistics that are not the identity
    X, X_val = _cells(50, 30, 2), _cells(17, 30, 3)
    parts = encode(enc, (X, X_val), torch.device("cpu"), block=16)
    whole = encode(enc, vstack(X, X_val), torch.device("cpu"), block=16)
    assert parts.shape == (67, 8) and enc.training  # its mode restored
    np.testing.assert_array_equal(parts, whole)


def test_keep_columns_is_the_column_slice_sharing_the_values():
    from gsrcl.methods.encoding import keep_columns

    rng = np.random.default_rng(2)
    X = sp.random(60, 30, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X = X[:, np.r_[0:10, 12:30]]  # columns 10 and 11 empty, as X's columns below
    X = sp.hstack([X[:, :10], sp.csr_matrix((60, 2), dtype=np.float32), X[:, 10:]], format="csr")
    columns = np.r_[0:10, 12:30]
    kept, sliced = keep_columns(X, columns), X[:, columns]
    assert kept.shape == sliced.shape and np.shares_memory(kept.data, X.data)
    for a in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(kept, a), getattr(sliced, a))
    Z = X.copy()
    Z.data[Z.indices == 12] = 0  # a stored zero outside the columns kept: the slice itself
    Z.indices[0], Z.data[0] = 10, 0.0
    out = keep_columns(Z, columns)
    assert not np.shares_memory(out.data, Z.data)
    np.testing.assert_array_equal(out.toarray(), Z[:, columns].toarray())


def test_rows_are_the_rows_of_their_copy_without_copying_them():
    from gsrcl.methods.afrcl import expressed_genes
    from gsrcl.methods.encoding import Rows, keep_columns_of
    from gsrcl.methods.labels import fit_inputs

    X = _cells(40, 12, 4)
    X.data[X.indices == 5] = 0  # a gene no cell expresses
    X.eliminate_zeros()
    y = np.repeat(["a", "b"], 20)
    tr, y_tr, va, y_va = fit_inputs(X, y, None, None, 0.25, seed=3)
    assert isinstance(tr, Rows) and tr.base is X and va.base is X  # the caller's matrix, not a copy
    assert sorted(np.r_[tr.rows, va.rows]) == list(range(40)) and len(va.rows) == len(y_va) == 10
    copy = X[tr.rows]
    for key in (slice(3, 11), np.array([4, 0, 7]), slice(0, 0)):
        assert (tr[key] != copy[key]).nnz == 0 and tr[key].shape == copy[key].shape
    np.testing.assert_array_equal(tr.toarray(), copy.toarray())
    np.testing.assert_array_equal(expressed_genes(tr, va), np.r_[0:5, 6:12])
    a, b = keep_columns_of((tr, va), np.r_[0:5, 6:12])
    assert a.base is X and b.base is X and a.shape == (30, 11)  # renumbered as read: X neither copied nor changed
    np.testing.assert_array_equal(a.toarray(), copy.toarray()[:, np.r_[0:5, 6:12]])
    assert (a[2:9] != copy[2:9][:, np.r_[0:5, 6:12]]).nnz == 0
    np.testing.assert_array_equal(a.keep_columns([0, 7]).toarray(), copy.toarray()[:, [0, 8]])  # of a's columns
    torch.manual_seed(0)
    enc = Encoder(12, (16,), 8, batch_norm=False, input_dropout=0.0)
    np.testing.assert_array_equal(encode(enc, (tr, va), torch.device("cpu"), block=7),
                                  encode(enc, vstack(copy, X[va.rows]), torch.device("cpu"), block=7))


def test_rows_of_a_stack_of_parts():
    from gsrcl.methods.encoding import Rows, rows_of

    X = _cells(30, 9, 5)
    a, b = Rows(X, np.arange(0, 30, 2)), Rows(X, np.arange(1, 30, 2))
    pick = np.array([16, 0, 3, 29])
    stacked = vstack(X[a.rows], X[b.rows])
    out = rows_of((a, b), pick)
    assert isinstance(out, Rows) and out.base is X  # rows of the same matrix: no copy
    assert (out[:] != stacked[pick]).nnz == 0
    copied = rows_of((X[a.rows], X[b.rows]), pick)  # matrices: a copy of those rows
    assert not isinstance(copied, Rows) and (copied != stacked[pick]).nnz == 0
