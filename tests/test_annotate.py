"""The Unassigned rule, the GsRCL normalisation, and ``gsrcl.annotate`` (the Python API) on real data."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import gsrcl
from gsrcl.annotation import UNASSIGNED, annotate, prob_column, probabilities
from gsrcl.errors import GeneOverlapError, ValuesError
from gsrcl.cutoff import assign_labels, check_p, normalise_rows
from gsrcl.reference import Reference

TYPES = ["A", "B", "C"]


def test_a_probability_equal_to_p_is_unassigned():
    P = np.array([[0.5, 0.3, 0.2], [0.5000001, 0.3, 0.1999999], [0.2, 0.2, 0.6], [0.25, 0.25, 0.5]])
    assert list(assign_labels(P, TYPES, 0.5)) == [UNASSIGNED, "A", "C", UNASSIGNED]
    assert list(assign_labels(P, TYPES, 0.9)) == [UNASSIGNED] * 4
    assert list(assign_labels(P, TYPES, 0.0)) == ["A", "A", "C", "C"]
    assert list(assign_labels(P, TYPES, 1.0)) == [UNASSIGNED] * 4  # max <= 1 always


def test_cutoff_on_other_scores_keeps_the_argmax_of_the_probabilities():
    raw = np.array([[0.02, 0.005, 0.005], [0.9, 0.8, 0.1]])  # nobody claims cell 0; two tasks claim cell 1
    P = normalise_rows(raw)
    assert P[0].max() > 0.5  # the renormalisation makes cell 0 look confident ...
    assert list(assign_labels(P, TYPES, 0.5)) == ["A", UNASSIGNED]
    assert list(assign_labels(P, TYPES, 0.5, cutoff_on=raw)) == [UNASSIGNED, "A"]  # ... the raw cut-off does not


def test_normalise_rows_sums_to_one_and_zero_rows_become_uniform():
    S = np.array([[0.2, 0.2, 0.6], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    P = normalise_rows(S)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(P[1], 1 / 3)
    np.testing.assert_allclose(P[2], [0.5, 0.5, 0.0])


def test_assign_labels_checks_shapes_and_p():
    with pytest.raises(ValueError):
        assign_labels(np.ones((2, 4)) / 4, TYPES, 0.5)
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(ValueError):
            check_p(bad)
    assert assign_labels(np.empty((0, 3)), TYPES, 0.5).shape == (0,)


@pytest.fixture(scope="module")
def refdir(cellbench_refdir):
    return cellbench_refdir


@pytest.fixture(scope="module")
def q(cellbench_query):
    return ad.read_h5ad(cellbench_query())


@pytest.mark.realdata
def test_annotate_returns_an_annotated_copy_and_leaves_the_input_alone(refdir, q):
    before = (q.X.copy(), q.obs.copy(), dict(q.uns), set(q.obsm))
    ref = Reference.load(Path(refdir) / "afrcl")
    out = annotate(q, ref, quiet=True)
    assert (q.X != before[0]).nnz == 0 and q.obs.equals(before[1]) and set(q.obsm) == before[3]
    assert "predicted_labels" not in q.obs and "gsrcl" not in q.uns
    assert out is not q and out.n_obs == q.n_obs and list(out.var_names) == list(q.var_names)
    P = probabilities(out)
    assert list(P.columns) == ref.cell_types and list(P.index) == list(q.obs_names)
    np.testing.assert_allclose(P.to_numpy().sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(out.obs["conf_score"], P.to_numpy().max(axis=1), rtol=1e-6)
    assert set(out.obs["predicted_labels"].astype(str)) <= set(ref.cell_types) | {UNASSIGNED}
    assert len(out.uns["predicted_labels_colors"]) == len(ref.cell_types) + 1
    # the metadata columns are still there
    assert (out.obs["cell_type"] == q.obs["cell_type"]).all()


@pytest.mark.realdata
def test_gsrcl_probabilities_are_the_models_and_the_raw_cutoff_uses_max_raw_score(refdir, q):
    ref = Reference.load(Path(refdir) / "gsrcl")
    out = annotate(q, ref, p=0.5, quiet=True)
    raw = out.obsm["raw_scores"]
    np.testing.assert_allclose(out.obs["max_raw_score"], raw.max(axis=1), rtol=1e-6)
    from gsrcl.genes import align, match_genes
    from gsrcl.values import log1p_normalized, to_model_input

    Xm = to_model_input(align(q.X, match_genes(q.var, ref.genes)), "counts")
    assert ref.values["library_size"] == 10_000  # the default preset: log1p CP10k
    Xm = log1p_normalized(Xm, 10_000)
    from gsrcl.linear import pool_by_novelty

    assert ref.linear is not None  # the default preset pools the linear SVM by each cell's novelty score
    order = [list(ref.linear.classes_).index(t) for t in ref.cell_types]
    nov = out.obs["novelty_score"].to_numpy()
    proba = pool_by_novelty(ref.model.predict_proba(Xm), ref.linear.predict_proba(Xm)[:, order], nov)
    scores = pool_by_novelty(ref.model.predict_scores(Xm), ref.linear.predict_raw(Xm)[:, order], nov)
    np.testing.assert_allclose(out.obsm["probabilities"], proba, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw, scores, rtol=1e-5, atol=1e-6)

    p = float(np.median(raw.max(axis=1)))  # a cut-off that splits the cells on the raw scores
    strict = annotate(q, ref, p=p, raw_cutoff=True, quiet=True)
    labels = strict.obs["predicted_labels"].astype(str).to_numpy()
    top = strict.obs["max_raw_score"].to_numpy()
    assert (labels[top <= p] == UNASSIGNED).all()
    argmax = np.asarray(ref.cell_types)[raw.argmax(axis=1)]
    assert (labels[top > p] == argmax[top > p]).all()
    assert strict.uns["gsrcl"]["cutoff"]["raw_cutoff"]


@pytest.mark.realdata
def test_small_blocks_give_the_same_result(refdir, q):
    ref = Path(refdir) / "gsrcl"  # a path works as well as a loaded reference
    one = annotate(q, ref, quiet=True)
    many = annotate(q, ref, block_size=17, quiet=True)
    np.testing.assert_allclose(many.obsm["raw_scores"], one.obsm["raw_scores"], rtol=1e-5, atol=1e-6)
    assert (many.obs["predicted_labels"] == one.obs["predicted_labels"]).all()


@pytest.mark.realdata
def test_log_modes(refdir, q, caplog):
    ref = Reference.load(Path(refdir) / "afrcl")
    auto = annotate(q, ref, quiet=True)
    forced = annotate(q, ref, log="1", quiet=True)  # counts: the same transform as detected
    np.testing.assert_allclose(forced.obsm["probabilities"], auto.obsm["probabilities"], rtol=1e-9)
    with caplog.at_level(logging.WARNING, logger="gsrcl"):
        wrong = annotate(q, ref, log="0", quiet=True)  # counts taken as log values: off-distribution
    assert "--log 0" in caplog.text
    assert wrong.uns["gsrcl"]["values"]["used"] == "log1p" and wrong.uns["gsrcl"]["values"]["detected"] == "counts"
    assert not np.allclose(wrong.obsm["probabilities"], auto.obsm["probabilities"])
    scaled = q.copy()
    scaled.X = scaled.X.toarray() - 1.0
    with pytest.raises(ValuesError):
        annotate(scaled, ref, quiet=True)


@pytest.mark.realdata
def test_plot_stores_tsne_of_a_seeded_subset(refdir, q, tmp_path):
    out = annotate(q, Path(refdir) / "afrcl", plot=tmp_path / "t.svg", tsne_cells=50, quiet=True)
    xy = out.obsm["X_tsne"]
    assert xy.shape == (q.n_obs, 2)
    drawn = ~np.isnan(xy[:, 0])
    assert drawn.sum() == 50 and out.uns["gsrcl"]["tsne"]["subsampled"]
    again = annotate(q, Path(refdir) / "afrcl", plot=True, tsne_cells=50, quiet=True)
    np.testing.assert_array_equal(np.isnan(again.obsm["X_tsne"][:, 0]), ~drawn)
    np.testing.assert_allclose(again.obsm["X_tsne"][drawn], xy[drawn])
    assert (tmp_path / "t.svg").stat().st_size > 0


@pytest.mark.realdata
def test_too_few_shared_genes_raise_gene_overlap_error(refdir, q):
    sub = q[:, :200].copy()
    sub.var = sub.var[[]]  # no gene_ids column, which would match renamed genes by id
    sub.var_names = [f"NOPE{i}" for i in range(100)] + list(sub.var_names[100:])  # 100 of 200 known: not > 50%
    with pytest.raises(GeneOverlapError):
        annotate(sub, Path(refdir) / "afrcl", quiet=True)


def _model_input(q, ref):
    from gsrcl.io.source import QuerySource
    from gsrcl.predict import model_input, prepare

    source = QuerySource.from_anndata(q)
    prep = prepare(source, ref)
    return model_input(sp.csr_matrix(q.X), prep, ref)


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["afrcl", "gsrcl"])
def test_the_tsne_sample_is_encoded_in_the_scoring_pass(refdir, q, method):
    ref = Reference.load(Path(refdir) / method)
    model = ref.model
    Xm = _model_input(q, ref)
    rows = np.array([0, 3, 50, q.n_obs - 1])
    scores, emb = model.predict_scores_and_embed(Xm, rows)
    np.testing.assert_array_equal(scores, model.predict_scores(Xm))
    np.testing.assert_allclose(emb, model.embed(Xm[rows]), rtol=1e-5, atol=1e-6)
    with_plot = annotate(q, ref, plot=True, quiet=True)

    def second_pass(X):
        raise AssertionError("the t-SNE sample was encoded a second time")

    model.embed = second_pass
    again = annotate(q, ref, plot=True, quiet=True)
    assert np.isfinite(again.obsm["X_tsne"]).all()
    np.testing.assert_array_equal(again.obsm["X_tsne"], with_plot.obsm["X_tsne"])


@pytest.mark.realdata
def test_the_query_is_read_once_for_prediction_and_twice_for_neighbourhoods(refdir, q, monkeypatch):
    from gsrcl.io.source import QuerySource

    reads = []
    original = QuerySource.iter_blocks

    def counting(self, block_size=10_000):
        reads.append(block_size)
        return original(self, block_size)

    monkeypatch.setattr(QuerySource, "iter_blocks", counting)
    out = annotate(q, Path(refdir) / "afrcl", block_size=50, quiet=True)
    assert out.uns["gsrcl"]["neighbours"]["applied"]
    # the value sniff reads the first rows only (one block of them); prediction, covariance, projection
    assert reads == [min(q.n_obs, 5000), 50, 50, 50]
    reads.clear()
    annotate(q, Path(refdir) / "afrcl", block_size=50, neighbours=0, quiet=True)
    assert reads == [min(q.n_obs, 5000), 50]


@pytest.mark.realdata
def test_insert_prob_adds_one_column_per_type(refdir, q):
    ref = Reference.load(Path(refdir) / "gsrcl")
    plain = annotate(q, ref, quiet=True)
    assert not any(c.startswith("prob_") for c in plain.obs)
    out = annotate(q, ref, insert_prob=True, quiet=True)
    P = gsrcl.probabilities(out)  # the top-level name
    for t in ref.cell_types:
        np.testing.assert_allclose(out.obs[prob_column(t)], P[t].to_numpy(), rtol=1e-6)
    assert out.uns["gsrcl"]["params"]["insert_prob"]
    assert prob_column("CD4+/CD25 T Reg") == "prob_CD4+_CD25 T Reg"


@pytest.mark.realdata
@pytest.mark.parametrize("kind", ["dense", "csc"])
def test_a_dense_or_csc_query_gives_the_same_result(refdir, q, kind):
    ref = Reference.load(Path(refdir) / "afrcl")
    other = q.copy()
    other.X = q.X.toarray() if kind == "dense" else sp.csc_matrix(q.X)
    a = annotate(q, ref, neighbours=0, quiet=True)
    b = annotate(other, ref, neighbours=0, quiet=True)
    np.testing.assert_array_equal(a.obsm["probabilities"], b.obsm["probabilities"])


def test_query_source_from_anndata():
    from gsrcl.io.source import QuerySource

    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"batch": list("abab")}, index=[f"c{i}" for i in range(4)]),
                       var=pd.DataFrame(index=["g1", "g2", "g3"]))
    source = QuerySource.from_anndata(adata)
    assert source.shape == (4, 3) and source.format == "anndata" and list(source.obs_names) == ["c0", "c1", "c2", "c3"]
    blocks = list(source.iter_blocks(3))
    assert [start for start, _ in blocks] == [0, 3]
    assert all(sp.isspmatrix_csr(b) and b.dtype == np.float32 for _, b in blocks)
    np.testing.assert_array_equal(sp.vstack([b for _, b in blocks]).toarray(), X)
    assert list(source.obs()["batch"]) == list("abab")
    adata.X[0, 0] = np.nan
    with pytest.raises(ValuesError):
        list(QuerySource.from_anndata(adata).iter_blocks(2))
    empty = ad.AnnData(obs=pd.DataFrame(index=["a", "b"]), var=pd.DataFrame(index=["g"]))
    with pytest.raises(ValuesError, match="no X"):
        list(QuerySource.from_anndata(empty).iter_blocks(2))
