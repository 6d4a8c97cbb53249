"""The Unassigned rule, the GsRCL normalisation, and ``gsrcl.annotate`` (the Python API) on real data."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from gsrcl.annotation import UNASSIGNED, annotate, assign_labels, check_p, normalise_rows, probabilities
from gsrcl.errors import GeneOverlapError, ValuesError
from gsrcl.reference import Reference
from tests.test_predict_cli import query_file, tiny_references

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
def refdir(tmp_path_factory):
    return tiny_references(tmp_path_factory)


@pytest.fixture(scope="module")
def q(tmp_path_factory):
    return ad.read_h5ad(query_file(tmp_path_factory))


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
    np.testing.assert_allclose(out.obsm["probabilities"], ref.model.predict_proba(Xm), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw, ref.model.predict_scores(Xm), rtol=1e-5, atol=1e-6)

    p = float(np.median(raw.max(axis=1)))  # a cut-off that splits the cells on the raw scores
    strict = annotate(q, ref, p=p, raw_cutoff=True, quiet=True)
    labels = strict.obs["predicted_labels"].astype(str).to_numpy()
    top = strict.obs["max_raw_score"].to_numpy()
    assert (labels[top <= p] == UNASSIGNED).all()
    argmax = np.asarray(ref.cell_types)[raw.argmax(axis=1)]
    assert (labels[top > p] == argmax[top > p]).all()
    assert strict.uns["gsrcl"]["cutoff"]["raw_cutoff"]


def test_small_blocks_give_the_same_result(refdir, q):
    ref = Path(refdir) / "gsrcl"  # a path works as well as a loaded reference
    one = annotate(q, ref, quiet=True)
    many = annotate(q, ref, block_size=17, quiet=True)
    np.testing.assert_allclose(many.obsm["raw_scores"], one.obsm["raw_scores"], rtol=1e-5, atol=1e-6)
    assert (many.obs["predicted_labels"] == one.obs["predicted_labels"]).all()


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


def test_too_few_shared_genes_raise_gene_overlap_error(refdir, q):
    sub = q[:, :200].copy()
    sub.var = sub.var[[]]  # no gene_ids column, which would match renamed genes by id
    sub.var_names = [f"NOPE{i}" for i in range(100)] + list(sub.var_names[100:])  # 100 of 200 known: not > 50%
    with pytest.raises(GeneOverlapError):
        annotate(sub, Path(refdir) / "afrcl", quiet=True)


def test_one_pass_scores_and_embedding_give_the_same_result(refdir, q):
    ref = Reference.load(Path(refdir) / "afrcl")
    two = annotate(q, ref, plot=True, quiet=True)
    model = ref.model
    calls = []

    def both(X):
        calls.append(X.shape[0])
        return model.predict_scores(X), model.embed(X)

    model.predict_scores_and_embed = both  # the optional one-pass method an estimator may offer
    one = annotate(q, ref, plot=True, quiet=True)
    assert sum(calls) == q.n_obs
    np.testing.assert_allclose(one.obsm["probabilities"], two.obsm["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.obsm["X_tsne"], two.obsm["X_tsne"], rtol=1e-5, atol=1e-6)
