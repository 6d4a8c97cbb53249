"""The novelty score (gsrcl.novelty): its arithmetic, what it tells apart on real data, and how it travels with
a reference and into prediction."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gsrcl import novelty as N
from gsrcl.annotation import annotate
from gsrcl.errors import InvalidReferenceError
from gsrcl.reference import Reference, manifest_checksum
from gsrcl.training import train

TINY = dict(epochs=2, hidden=[32, 32], out=16, head=[16, 8], svm_cv=2, threads=1, quiet=True)


def _log1p(X):
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.data = np.log1p(X.data)
    return X


def _by_hand(Xm_ref, labels, Xm_query, k):
    """The distance written out with numpy: log1p CP10k, genes scaled, SVD, pooled covariance, min distance (the
    score divides it by the median held-out distance)."""
    def cp10k(Xm):
        C = np.expm1(Xm.toarray().astype(np.float64))
        return np.log1p(C / C.sum(1, keepdims=True) * 1e4)

    R, Q = cp10k(Xm_ref), cp10k(Xm_query)
    scale = R.std(0) + N.SCALE_FLOOR
    mean = (R / scale).mean(0)
    _, _, vt = np.linalg.svd(R / scale - mean, full_matrices=False)
    V = vt[:k].T
    Pr, Pq = (R / scale - mean) @ V, (Q / scale - mean) @ V
    types = sorted(set(labels))
    cents = np.stack([Pr[labels == t].mean(0) for t in types])
    W = Pr - cents[np.searchsorted(types, labels)]
    prec = np.linalg.inv(W.T @ W / (len(labels) - len(types)))

    def dist(P):
        return np.sqrt(np.min([np.einsum("ij,jk,ik->i", P - c, prec, P - c) for c in cents], axis=0))

    return dist(Pq)


def test_score_matches_the_computation_by_hand_and_the_sparse_path():
    rng = np.random.default_rng(0)
    means = rng.gamma(1.0, 2.0, size=(3, 40))
    labels = np.repeat(np.array(["a", "b", "c"]), 30)
    counts = rng.poisson(means[np.searchsorted(["a", "b", "c"], labels)] * rng.uniform(0.5, 2, size=(90, 1)))
    counts[:, 0] += 1  # no empty cell
    Xm = _log1p(counts)
    query = _log1p(rng.poisson(rng.gamma(1.0, 2.0, size=(10, 40))) + np.eye(10, 40, dtype=int))
    model = N.NoveltyModel(n_components=5).fit(Xm, labels)
    expected = _by_hand(Xm, labels, query, 5)
    assert np.allclose(model.score(query) * model.median_, expected, rtol=1e-4)
    # the sparse (ARPACK) path finds the same subspace, so the same distances
    old = N._DENSE_MAX
    try:
        N._DENSE_MAX = 0
        sparse = N.NoveltyModel(n_components=5).fit(Xm, labels)
    finally:
        N._DENSE_MAX = old
    assert np.allclose(sparse.score(query) * sparse.median_, expected, rtol=1e-3)
    # percentile and threshold are inverse to each other
    assert np.isclose(model.percentile(model.threshold(90.0)), 90.0, atol=0.2)
    assert model.percentile(model.threshold(100.0) * 2) == 100.0 and model.threshold(50.0) == 1.0


def test_above_its_cap_the_score_is_fitted_on_a_stratified_sample(monkeypatch):
    from gsrcl.methods.labels import stratified_subset

    rng = np.random.default_rng(2)
    means = rng.gamma(1.0, 2.0, size=(3, 40))
    labels = np.repeat(np.array(["a", "b", "c"]), [120, 40, 20])
    counts = rng.poisson(means[np.searchsorted(["a", "b", "c"], labels)]) + np.eye(180, 40, dtype=int)
    Xm = _log1p(counts)
    monkeypatch.setattr(N, "FIT_MAX_CELLS", 60)
    capped = N.NoveltyModel(n_components=5, seed=3).fit(Xm, labels)
    sub = stratified_subset(labels, 60, 3)
    monkeypatch.setattr(N, "FIT_MAX_CELLS", 10_000)
    on_sample = N.NoveltyModel(n_components=5, seed=3).fit(Xm[sub], labels[sub])
    whole = N.NoveltyModel(n_components=5, seed=3).fit(Xm, labels)
    np.testing.assert_array_equal(capped.centroids_, on_sample.centroids_)
    assert capped.median_ == on_sample.median_ and capped.cell_types_ == ["a", "b", "c"]
    assert not np.allclose(capped.centroids_, whole.centroids_)


def _cells(rng, means, n):
    labels = rng.integers(0, len(means), n)
    counts = rng.poisson(means[labels] * rng.uniform(0.5, 2, size=(n, 1)))
    counts[:, 0] += 1
    return _log1p(counts), np.array(list("abc"))[labels]


def test_percentiles_hold_for_new_cells_of_the_reference_types():
    """The cut-off's percentile is of held-out reference cells, so new cells drawn like the reference ones cross
    it at about the stated rate; the reference cells' in-sample scores run high (PCA and covariance fit their
    own noise), which is why they are not the yardstick."""
    rng = np.random.default_rng(1)
    means = rng.gamma(1.0, 2.0, size=(3, 400))
    Xr, yr = _cells(rng, means, 300)
    Xq, _ = _cells(rng, means, 3000)
    model = N.NoveltyModel().fit(Xr, yr)
    assert model.calibration_ == "held-out, 5-fold" and model.state()[0]["calibration"] == model.calibration_
    query = model.score(Xq)
    for pct in (50, 90, 99):
        assert abs((query > model.threshold(pct)).mean() - (1 - pct / 100)) < 0.25 * (1 - pct / 100) + 0.01
    assert np.median(model.score(Xr)) > 1.3  # in-sample: the percentiles of these would call ~0% novel
    # too few cells to fit a fold with as many components: calibrated on the reference cells themselves
    small = N.NoveltyModel(n_components=5).fit(*_cells(rng, means, 7))
    assert small.calibration_ == "reference cells"
    # no type with as many cells as folds: no stratified split either
    X80 = _cells(rng, means, 80)[0]
    many_types = N.NoveltyModel(n_components=5).fit(X80, np.repeat(np.arange(20), 4))
    assert many_types.calibration_ == "reference cells" and np.isclose(np.median(many_types.score(X80)), 1.0)


def _pair(data_dir, ref_file, query_file):
    import anndata as ad

    ref, query = ad.read_h5ad(data_dir / ref_file), ad.read_h5ad(data_dir / query_file)
    genes = ref.var_names.intersection(query.var_names)
    return ref[:, genes], query[:, genes]


def _auroc_known_vs_unseen(model, ref, query):
    from sklearn.metrics import roc_auc_score

    from gsrcl.values import detect_values, to_model_input

    known = np.isin(query.obs["cell_type"].astype(str), ref.obs["cell_type"].astype(str).unique())
    Xq = to_model_input(query.X, detect_values(query.X))
    return roc_auc_score(known, -model.score(Xq))


@pytest.mark.realdata
@pytest.mark.parametrize("ref_file, query_file, least", [
    # Xin -> Wang: acinar, ductal and stellate cells are unseen (measured 0.997)
    ("pancreas_xin_scclassify_subset.h5ad", "pancreas_wang_scclassify_subset.h5ad", 0.97),
    # Kang -> pbmc3k: CD8 T, FCGR3A+ monocytes, DC and platelets are unseen (measured 0.848; the best baseline's
    # confidence, a linear SVM's, scores 0.777 there)
    ("pbmc_kang_ctrl_muscat.h5ad", "pbmc3k_seurat_clustifyr.h5ad", 0.8),
])
def test_unseen_types_score_higher_than_known_ones(data_dir, ref_file, query_file, least):
    from gsrcl.values import detect_values, to_model_input

    ref, query = _pair(data_dir, ref_file, query_file)
    if query_file.startswith("pbmc3k"):  # the label names differ between the two PBMC sets
        names = {"Naive CD4 T": "CD4 T cells", "Memory CD4 T": "CD4 T cells", "CD14+ Mono": "CD14+ Monocytes",
                 "B": "B cells", "NK": "NK cells"}
        query = query.copy()
        query.obs["cell_type"] = query.obs["cell_type"].astype(str).map(lambda t: names.get(t, t))
    model = N.NoveltyModel().fit(to_model_input(ref.X, detect_values(ref.X)), ref.obs["cell_type"].astype(str))
    assert _auroc_known_vs_unseen(model, ref, query) > least


@pytest.fixture(scope="module")
def saved(small_adata, tmp_path_factory):
    adata = small_adata()
    ref = train(adata, "cell_type", "afrcl", name="mouse", **TINY)
    return adata, ref, ref.save(tmp_path_factory.mktemp("refs"), "mouse")


@pytest.mark.realdata
def test_novelty_travels_with_the_reference_into_prediction(saved):
    adata, ref, path = saved
    assert ref.manifest["novelty"]["n_components"] == 50 and "novelty.components" in ref.manifest["arrays"]
    loaded = Reference.load(path)
    out = annotate(adata, loaded, quiet=True)
    assert np.allclose(out.obs["novelty_score"], annotate(adata, ref, quiet=True).obs["novelty_score"])
    assert loaded.manifest["novelty"]["calibration"] == "held-out, 5-fold"
    assert np.median(out.obs["novelty_score"]) > 1.0  # the reference cells themselves, in-sample: they run high
    assert "novelty_score" in out.uns["gsrcl"]["columns"] and "unseen_score" in out.uns["gsrcl"]["columns"]
    cell = out.obs["novelty_score"].to_numpy(float) / out.obs["conf_score"].to_numpy(float)
    assert np.allclose(out.obs["unseen_score_cell"], cell, rtol=1e-6)
    # unseen_score: the mean of the per-cell score over each cell's 15 nearest query cells (itself included)
    record = out.uns["gsrcl"]["neighbours"]
    assert record["applied"] and record["n_neighbors"] == 15 and out.uns["gsrcl"]["params"]["neighbours"] == 15
    assert not np.allclose(out.obs["unseen_score"], cell, rtol=1e-3)
    alone = annotate(adata, loaded, quiet=True, neighbours=0)
    assert np.allclose(alone.obs["unseen_score"], cell, rtol=1e-6) and "unseen_score_cell" not in alone.obs
    assert not alone.uns["gsrcl"]["neighbours"]["applied"]
    few = annotate(adata[:50], loaded, quiet=True)  # fewer than 4 x 15 cells: per cell, and said so
    assert np.allclose(few.obs["unseen_score"], cell[:50], rtol=1e-5) and "too few" in few.uns["gsrcl"]["neighbours"]["note"]
    with pytest.raises(ValueError, match="at least 2"):
        annotate(adata, loaded, quiet=True, neighbours=1)
    # the cut-off: cells above the 99th percentile of held-out reference cells become Unassigned, and only those
    cut = annotate(adata, loaded, quiet=True, novelty_cutoff=99)
    far = out.obs["novelty_score"].to_numpy() > loaded.novelty.threshold(99)
    assert 0.01 < far.mean() < 0.99
    assert (cut.obs["predicted_labels"][far] == "Unassigned").all()
    same = ~far
    assert (cut.obs["predicted_labels"][same].astype(str) == out.obs["predicted_labels"][same].astype(str)).all()
    assert cut.uns["gsrcl"]["cutoff"]["novelty_percentile"] == 99.0
    with pytest.raises(ValueError, match="percentile"):
        annotate(adata, loaded, quiet=True, novelty_cutoff=0)


@pytest.mark.realdata
def test_reference_without_novelty_still_predicts(small_adata, tmp_path):
    adata = small_adata()
    ref = train(adata, "cell_type", "afrcl", novelty=False, **TINY)
    assert ref.manifest["novelty"] is None and not any(k.startswith("novelty.") for k in ref.arrays)
    loaded = Reference.load(ref.save(tmp_path, "plain"))
    out = annotate(adata, loaded, quiet=True)
    assert "novelty_score" not in out.obs and "unseen_score" not in out.obs and "predicted_labels" in out.obs
    with pytest.raises(InvalidReferenceError, match="no novelty score"):
        annotate(adata, loaded, quiet=True, novelty_cutoff=99)


@pytest.mark.realdata
def test_tampered_novelty_arrays_fail_clearly(saved, tmp_path):
    _, _, path = saved
    ref = tmp_path / "copy"
    shutil.copytree(path, ref)
    with np.load(ref / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["novelty.components"] = arrays["novelty.components"][:, :-1].copy()
    np.savez(ref / "arrays.npz", **arrays)
    manifest = json.loads((ref / "manifest.json").read_text())
    manifest["files"]["arrays.npz"]["sha256"] = hashlib.sha256((ref / "arrays.npz").read_bytes()).hexdigest()
    manifest["arrays"]["novelty.components"]["shape"] = list(arrays["novelty.components"].shape)
    manifest["manifest_sha256"] = manifest_checksum(manifest)  # the manifest made to agree, its checksum too
    (ref / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidReferenceError) as e:
        Reference.load(ref)
    msg = e.value.message
    assert "novelty array 'components'" in msg and "\n" not in msg


@pytest.mark.realdata
def test_cli_novelty_cutoff(saved, tmp_path, capsys):
    from gsrcl.cli import main

    adata, _, path = saved
    query = tmp_path / "q.h5ad"
    adata.write_h5ad(query)
    base = ["predict", "-i", str(query), "-r", "mouse", "-mp", str(path.parent), "--no-plot", "-q"]
    with pytest.raises(SystemExit) as e:
        main(base + ["-o", str(tmp_path / "bad"), "--novelty-cutoff", "101"])
    assert e.value.code == 2 and "percentile" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(base + ["-o", str(tmp_path / "out"), "--novelty-cutoff", "99", "-p", "0"]) == 0
    probs = pd.read_csv(tmp_path / "out" / "probabilities.csv", index_col=0)
    loaded = Reference.load(path)
    far = annotate(adata, loaded, quiet=True).obs["novelty_score"] > loaded.novelty.threshold(99)
    assert 0.01 < far.mean() < 0.99
    assert ((probs["Identified as"] == "Unassigned") == far.reindex(probs.index)).all()
