"""gsrcl.genes: harmonising query genes to a reference and aligning matrices to the reference order."""

from __future__ import annotations

import dataclasses
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gsrcl.errors import GeneOverlapError, InvalidReferenceError, ShapeMismatchError
from gsrcl.genes import align, check_overlap, gene_record, id_symbol_hint, looks_like_ensembl, match_genes
from tests.conftest import dataset


def qvar(names, **columns) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.Index(names))


def pairs(m, ref, var) -> dict[str, str | None]:
    """reference gene -> matched query name (None when absent)."""
    return {g: (None if q < 0 else str(var.index[q])) for g, q in zip(ref, m.ref_to_query)}


def test_exact_match_and_counts():
    ref = ["A", "B", "C", "D"]
    var = qvar(["C", "X", "A", "Y", "Z"])
    m = match_genes(var, ref)
    assert pairs(m, ref, var) == {"A": "A", "B": None, "C": "C", "D": None}
    assert m.query_matched.tolist() == [True, False, True, False, False]
    assert (m.n_query, m.n_query_matched, m.n_ref, m.n_ref_matched) == (5, 2, 4, 2)
    assert m.how["exact"] == 2 and sum(m.how.values()) == 2
    assert m.query_fraction == pytest.approx(0.4) and m.ref_fraction == pytest.approx(0.5)
    assert m.missing_reference_genes() == ["B", "D"] and m.missing_reference_genes(1) == ["B"]
    assert m.dropped_query_genes() == ["X", "Y", "Z"] and m.dropped_query_genes(2) == ["X", "Y"]


def test_ensembl_version_suffix_is_ignored_both_ways():
    ref = ["ENSG00000141510", "ENSG00000012048.23", "ENSG00000000003"]
    var = qvar(["ENSG00000141510.16", "ENSG00000012048", "ENSG00000000003", "ENSG00000000005.6"])
    m = match_genes(var, ref)
    assert m.ref_to_query.tolist() == [0, 1, 2]
    assert m.how["ensembl_version"] == 2 and m.how["exact"] == 1


def test_par_y_copies_stay_distinct():
    ref = ["ENSG00000182378.14", "ENSG00000182378.14_PAR_Y"]
    var = qvar(["ENSG00000182378_PAR_Y", "ENSG00000182378"])
    assert match_genes(var, ref).ref_to_query.tolist() == [1, 0]


def test_reference_ids_query_symbols_through_gene_ids_column():
    # A 10x file read by gene name: symbols as the index, versioned ids in gene_ids.
    ref = ["ENSG00000141510", "ENSG00000177455", "ENSG00000105369"]
    var = qvar(["TP53", "CD19", "CD79A", "MS4A1"],
               gene_ids=["ENSG00000141510.16", "ENSG00000177455", np.nan, "ENSG00000156738"])
    m = match_genes(var, ref)
    assert m.ref_to_query.tolist() == [0, 1, -1]
    assert m.how["id_symbol"] == 2


def test_reference_symbols_query_ids_through_gene_symbols_column():
    ref = ["TP53", "CD19", "GAPDH"]
    var = qvar(["ENSG00000177455", "ENSG00000141510", "ENSG00000111640"],
               gene_symbols=["CD19", "TP53", None])
    m = match_genes(var, ref)
    assert m.ref_to_query.tolist() == [1, 0, -1]
    assert m.how["id_symbol"] == 2 and m.how["exact"] == 0


def test_case_insensitive_mouse_vs_human():
    ref = ["CD19", "CD3E", "ACTB"]
    var = qvar(["Cd19", "Cd3e", "Gm12345"])
    m = match_genes(var, ref)
    assert pairs(m, ref, var) == {"CD19": "Cd19", "CD3E": "Cd3e", "ACTB": None}
    assert m.how["case_insensitive"] == 2


def test_ambiguous_case_folds_are_skipped_and_counted():
    # Two query genes fold to "actb"; two reference genes fold to "cd74".
    ref = ["ACTB", "CD74", "Cd74", "B2M"]
    var = qvar(["actb", "Actb", "cD74", "b2m"])
    m = match_genes(var, ref)
    assert pairs(m, ref, var) == {"ACTB": None, "CD74": None, "Cd74": None, "B2M": "b2m"}
    assert m.how["ambiguous_skipped"] == 3 and m.how["case_insensitive"] == 1
    assert "3 ambiguous" in m.summary()


def test_exact_beats_case_insensitive_and_each_query_gene_is_used_once():
    ref = ["Cd19", "CD3E", "cd3e"]
    var = qvar(["CD19", "Cd19", "CD3E"])
    m = match_genes(var, ref)
    # Cd19 takes its exact twin (not CD19); CD3E exact; cd3e would need CD3E, already taken.
    assert pairs(m, ref, var) == {"Cd19": "Cd19", "CD3E": "CD3E", "cd3e": None}
    assert m.how["exact"] == 2 and m.how["case_insensitive"] == 0
    assert m.dropped_query_genes() == ["CD19"]


def test_exact_beats_id_symbol():
    # "TP53" is both a query name and another gene's symbol column entry: the name wins.
    ref = ["TP53"]
    var = qvar(["ENSG00000999999", "TP53"], gene_symbols=["TP53", "TP53"])
    assert match_genes(var, ref).ref_to_query.tolist() == [1]


def test_duplicated_query_names_first_occurrence_wins():
    ref = ["A", "B"]
    var = qvar(["A", "B", "A", "a"])
    m = match_genes(var, ref)
    assert m.ref_to_query.tolist() == [0, 1]
    assert m.query_matched.tolist() == [True, True, False, False]


def test_duplicated_reference_genes_are_refused():
    with pytest.raises(InvalidReferenceError, match="duplicated") as e:
        match_genes(qvar(["A"]), ["A", "B", "A"])
    assert e.value.exit_code == InvalidReferenceError.exit_code and "\n" not in e.value.message


def test_gene_match_is_immutable():
    m = match_genes(qvar(["A"]), ["A"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.n_ref = 3
    with pytest.raises(ValueError):
        m.ref_to_query[0] = -1


def test_summary_reports_both_coverages():
    ref = [f"G{i}" for i in range(10)]
    var = qvar(["G1", "G2", "g3", "X1", "X2"])
    m = match_genes(var, ref)
    s = m.summary()
    assert "\n" not in s
    got = re.match(r"(\d+) of (\d+) query genes \(([\d.]+)%\) and (\d+) of (\d+) reference genes \(([\d.]+)%\) "
                   r"matched; (\d+) query genes dropped, (\d+) reference genes zero-filled; by: (.*)$", s)
    assert got, s
    nq_m, nq, qpct, nr_m, nr, rpct, dropped, filled, by = got.groups()
    assert (int(nq_m), int(nq), int(nr_m), int(nr)) == (3, 5, 3, 10)
    assert float(qpct) == pytest.approx(60.0) and float(rpct) == pytest.approx(30.0)
    assert (int(dropped), int(filled)) == (2, 7)
    assert by == "exact 2, case_insensitive 1"
    assert match_genes(qvar(["Z"]), ["A"]).summary().endswith("by: none")


def test_looks_like_ensembl():
    assert looks_like_ensembl(["ENSG00000141510.16", "ENSMUSG00000020122", "TP53"])
    assert not looks_like_ensembl(["TP53", "CD19", "ENSG00000141510"])
    assert not looks_like_ensembl([])


def test_id_symbol_hint():
    ids = qvar(["ENSG00000141510", "ENSG00000177455"])
    symbols = ["TP53", "CD19"]
    assert "Ensembl ids and the reference gene symbols" in id_symbol_hint(ids, symbols)
    assert "10x" in id_symbol_hint(qvar(symbols), ["ENSG00000141510", "ENSG00000177455"])
    # The query holds the bridging column: matching uses it, no hint.
    assert id_symbol_hint(qvar(["ENSG00000141510"], gene_symbols=["TP53"]), symbols) is None
    assert id_symbol_hint(qvar(symbols), symbols) is None
    assert "species" in id_symbol_hint(qvar(["ENSMUSG00000020122"]), ["ENSG00000141510"])


@pytest.mark.realdata
def test_real_cellbench_pair_matches_the_documented_overlap():
    ref = ad.read_h5ad(dataset("cellbench_celseq2_3cl.h5ad")).var_names
    q = ad.read_h5ad(dataset("cellbench_dropseq_3cl.h5ad"))
    m = match_genes(q.var, list(ref))
    shared = len(set(ref) & set(q.var_names))
    assert m.how["exact"] == shared == 15073  # data README: 15073 shared symbols
    assert m.n_query == 15127 and m.n_ref == 28204
    assert m.n_query_matched >= shared
    # Every matched pair carries the same Ensembl id (both files hold gene_ids).
    r_ids = ad.read_h5ad(dataset("cellbench_celseq2_3cl.h5ad")).var["gene_ids"].to_numpy()
    ok = m.ref_to_query >= 0
    assert (r_ids[ok] == q.var["gene_ids"].to_numpy()[m.ref_to_query[ok]]).mean() > 0.99


@pytest.mark.realdata
def test_real_pancreas_wang_fully_inside_xin():
    xin = ad.read_h5ad(dataset("pancreas_xin_scclassify_subset.h5ad")).var_names
    wang = ad.read_h5ad(dataset("pancreas_wang_scclassify_subset.h5ad")).var
    m = match_genes(wang, list(xin))
    assert m.n_query == m.n_query_matched == 219 and m.query_fraction == 1.0
    assert m.n_ref_matched == 219 and m.n_ref == len(xin)


def _dense_align(Xd: np.ndarray, m) -> np.ndarray:
    out = np.zeros((Xd.shape[0], m.n_ref), dtype=np.float32)
    for j, q in enumerate(m.ref_to_query):
        if q >= 0:
            out[:, j] = Xd[:, q]
    return out


@pytest.mark.realdata
def test_align_matches_dense_reference_on_real_subset():
    ref = list(ad.read_h5ad(dataset("cellbench_celseq2_3cl.h5ad")).var_names)
    q = ad.read_h5ad(dataset("cellbench_dropseq_3cl.h5ad"))
    X = sp.csr_matrix(q.X[:60])
    monotone = list(q.var_names[::2]) + ["NOT_A_GENE"]
    for genes in (ref, sorted(ref), list(q.var_names[::-1]), monotone):  # permuted and increasing column maps
        m = match_genes(q.var, genes)
        assert m.monotone == (genes is monotone)
        Y = align(X, m)
        assert sp.isspmatrix_csr(Y) and Y.dtype == np.float32 and Y.shape == (60, len(genes))
        assert Y.has_sorted_indices
        assert all(np.all(np.diff(Y.indices[a:b]) > 0) for a, b in zip(Y.indptr[:-1], Y.indptr[1:]))
        np.testing.assert_array_equal(Y.toarray(), _dense_align(X.toarray(), m))
    # Same gene order as the query: every stored entry survives.
    m = match_genes(q.var, list(q.var_names))
    assert m.monotone and align(X, m).nnz == X.nnz


def test_align_handles_unsorted_input_and_edge_shapes():
    rng = np.random.default_rng(0)
    Xd = (rng.random((30, 12)) < 0.3) * rng.integers(1, 9, (30, 12))
    var = qvar([f"g{i}" for i in range(12)])
    for genes in ([f"g{i}" for i in (0, 3, 4, 11)], [f"g{i}" for i in (11, 2, 5, 0)] + ["absent"]):
        m = match_genes(var, genes)
        X = sp.csr_matrix(Xd)
        X.indices = X.indices.copy()
        for a, b in zip(X.indptr[:-1], X.indptr[1:]):  # reverse each row's entries
            X.indices[a:b] = X.indices[a:b][::-1]
            X.data[a:b] = X.data[a:b][::-1]
        X.has_sorted_indices = False
        Y = align(X, m)
        assert Y.has_sorted_indices
        np.testing.assert_array_equal(Y.toarray(), _dense_align(Xd, m))
        assert align(sp.csr_matrix((0, 12)), m).shape == (0, len(genes))
        np.testing.assert_array_equal(align(sp.csc_matrix(Xd), m).toarray(), _dense_align(Xd, m))
    with pytest.raises(ShapeMismatchError, match="12 names"):
        align(sp.csr_matrix((3, 11)), m)


def test_gene_match_rebuilt_from_ref_to_query_aligns_the_same():
    ref = ["g3", "g0", "absent", "g2"]
    var = qvar([f"g{i}" for i in range(5)])
    m = match_genes(var, ref)
    rebuilt = type(m)(ref_to_query=m.ref_to_query.copy(), query_matched=m.query_matched.copy(), n_query=5,
                      n_query_matched=3, n_ref=4, n_ref_matched=3, how=dict(m.how))
    X = sp.random(7, 5, density=0.5, format="csr", random_state=1, dtype=np.float32)
    np.testing.assert_array_equal(align(X, rebuilt).toarray(), align(X, m).toarray())
    np.testing.assert_array_equal(align(X, m).toarray(), _dense_align(X.toarray(), m))


def test_the_overlap_rule_needs_more_than_half_of_the_query_genes(gsrcl_log):
    ref = [f"G{i}" for i in range(10)]
    ok = check_overlap(qvar(["G0", "G1", "G2", "X"]), ref, "r")  # 3 of 4 query genes; 3 of 10 reference genes
    assert ok.n_query_matched == 3 and "reference genes" in gsrcl_log.text and "--genes-from" in gsrcl_log.text
    rec = gene_record(ok)
    assert rec["n_query_genes_dropped"] == 1 and rec["n_reference_genes_zero_filled"] == 7
    with pytest.raises(GeneOverlapError, match="more than 50%"):
        check_overlap(qvar(["G0", "G1", "X", "Y"]), ref, "r")  # exactly half
    with pytest.raises(GeneOverlapError):
        check_overlap(qvar([]), ref, "r")


def test_the_overlap_rule_accepts_a_raw_query_that_holds_the_reference_genes(gsrcl_log):
    # a raw 10x query holds every gene of a reference trained on a filtered list: few of its own genes match, but
    # the model gets all of its input (issue 28 item 12)
    ref = [f"G{i}" for i in range(10)]
    raw = qvar(ref + [f"Q{i}" for i in range(30)])  # 10 of 40 query genes (25%), 10 of 10 reference genes
    ok = check_overlap(raw, ref, "r")
    assert ok.n_ref_matched == 10 and "--genes-from" not in gsrcl_log.text
    part = qvar(ref[:6] + [f"Q{i}" for i in range(30)])  # 6 of 36 query genes, 6 of 10 reference genes (60%)
    assert check_overlap(part, ref, "r").n_ref_matched == 6
    assert "--genes-from" in gsrcl_log.text  # under 80% of the reference genes: the warning stays
    with pytest.raises(GeneOverlapError, match=r"5 of 35 query genes \(14.3%\).*5 of its 10 genes \(50.0%\)"):
        check_overlap(qvar(ref[:5] + [f"Q{i}" for i in range(30)]), ref, "r")  # half of either: refused
