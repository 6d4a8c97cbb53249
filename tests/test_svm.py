"""PortableSVC reproduces scikit-learn's SVC; fit_svc's grid search; state round trip."""

from __future__ import annotations

import json
import logging
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.metrics import matthews_corrcoef
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from gsrcl.errors import LabelsError
from gsrcl.svm import PAPER_GRID, PortableSVC, fit_svc, quick_score
from tests.conftest import dataset


def _embedded(name, k=20):
    """Truncated-SVD-k of the log counts of a real dataset (a stand-in for an encoder's output), labels."""
    a = ad.read_h5ad(dataset(name))
    X = a.X.copy()
    X.data = np.log1p(X.data)
    Z = TruncatedSVD(k, random_state=0).fit_transform(X).astype(np.float32)
    return Z, a.obs["cell_type"].astype(str).to_numpy()


@pytest.fixture(scope="module")
def cellbench():
    return _embedded("cellbench_celseq2_3cl.h5ad")


@pytest.fixture(scope="module")
def immune():
    return _embedded("mouse_immune_actinn_1k.h5ad")


def _sklearn_svc(Z, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # probability=True is deprecated in scikit-learn 1.9
        return SVC(probability=True, random_state=0, decision_function_shape="ovo", **kw).fit(Z, y)


@pytest.mark.realdata
@pytest.mark.parametrize("data, task, params", [
    ("cellbench", "multi", {"C": 10}),
    ("cellbench", "binary", {"C": 1, "gamma": 1e-3}),
    ("immune", "multi", {"C": 100, "gamma": 1e-2}),
    ("immune", "binary", {"C": 10}),
])
def test_matches_sklearn_on_real_data(request, data, task, params):
    Z, y = request.getfixturevalue(data)
    if task == "binary":
        y = np.where(y == y[0], "this", "other")
    tr, te = np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 3 == 0
    svc = _sklearn_svc(Z[tr], y[tr], **params)
    model = PortableSVC.from_sklearn(svc)
    model.block_size = 37  # several blocks
    assert model.gamma == pytest.approx(svc._gamma) and list(model.classes_) == list(svc.classes_)
    proba, ref = model.predict_proba(Z[te]), svc.predict_proba(Z[te])
    np.testing.assert_allclose(proba, ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.decision_function(Z[te]), svc.decision_function(Z[te]), rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(model.predict(Z[te]), svc.classes_[ref.argmax(axis=1)])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    if task == "binary":
        # scikit-learn's libsvm couples the two classes too: not the bare Platt sigmoid
        dec = -model.decision_function(Z[te])
        sigmoid = 1 / (1 + np.exp(dec * model.probA_[0] + model.probB_[0]))
        assert np.abs(sigmoid - ref[:, 0]).max() > 1e-4


@pytest.mark.realdata
def test_predict_without_probabilities_is_libsvm_vote(immune):
    Z, y = immune
    svc = SVC(C=1, random_state=0).fit(Z[::2], y[::2])
    model = PortableSVC.from_sklearn(svc)
    np.testing.assert_array_equal(model.predict(Z[1::2]), svc.predict(Z[1::2]))
    with pytest.raises(ValueError, match="without probability"):
        model.predict_proba(Z[:3])


@pytest.mark.realdata
def test_state_round_trip_through_json_and_npz(tmp_path, cellbench):
    Z, y = cellbench
    model = PortableSVC.from_sklearn(_sklearn_svc(Z, y))
    model.best_params_, model.cv_score_ = {"C": 1.0, "gamma": "scale"}, 0.9
    config, arrays = model.state(prefix="svm.")
    np.savez(tmp_path / "a.npz", **arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        back = PortableSVC.from_state(json.loads(json.dumps(config)), dict(f), prefix="svm.")
    assert back.best_params_ == model.best_params_ and back.cv_score_ == 0.9
    assert list(back.classes_) == list(model.classes_)
    np.testing.assert_array_equal(back.predict_proba(Z), model.predict_proba(Z))
    np.testing.assert_array_equal(back.decision_function(Z), model.decision_function(Z))


@pytest.mark.realdata
def test_blocks_bound_memory_and_accept_sparse(monkeypatch, cellbench):
    Z, y = cellbench
    model = PortableSVC.from_sklearn(_sklearn_svc(Z, y))
    ref = model.predict_proba(Z)
    monkeypatch.setattr("gsrcl.svm._KERNEL_BUDGET", 3 * model.support_vectors_.shape[0])  # 3 rows a block
    np.testing.assert_allclose(model.predict_proba(sp.csr_matrix(Z)), ref, rtol=0, atol=1e-12)
    assert model.predict_proba(Z[:0]).shape == (0, 3) and model.decision_function(Z[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="shape"):
        model.predict_proba(Z[:, :5])


@pytest.mark.realdata
@pytest.mark.parametrize("break_it", [
    lambda c, a: a.update(dual_coef=a["dual_coef"][:, 1:]),
    lambda c, a: a.update(dual_coef=a["dual_coef"][:1]),
    lambda c, a: a.update(intercept=a["intercept"][:2]),
    lambda c, a: a.update(prob_a=a["prob_a"][:1]),
    lambda c, a: a.update(support_vectors=a["support_vectors"][:, :5]),
    lambda c, a: a.update(support_vectors=a["support_vectors"][:-1]),
    lambda c, a: a.update(support_vectors=np.full_like(a["support_vectors"], np.nan)),
    lambda c, a: c.update(n_support=[*c["n_support"][:-1], c["n_support"][-1] + 1]),
    lambda c, a: c.update(n_support=c["n_support"][:-1]),
    lambda c, a: c.update(classes=c["classes"][:2]),
    lambda c, a: c.update(classes=c["classes"][::-1]),
    lambda c, a: c.update(gamma=-1.0),
    lambda c, a: c.update(kind="something else"),
    lambda c, a: a.pop("intercept"),
])
def test_from_state_rejects_inconsistent_state(cellbench, break_it):
    Z, y = cellbench
    config, arrays = PortableSVC.from_sklearn(_sklearn_svc(Z, y)).state()
    arrays = dict(arrays)
    break_it(config, arrays)
    with pytest.raises(ValueError, match="SVM state"):
        PortableSVC.from_state(config, arrays)


@pytest.mark.realdata
def test_fit_svc_selects_from_the_grid_and_generalises(cellbench):
    Z, y = cellbench
    tr, te = train_test_split(np.arange(len(y)), train_size=0.7, stratify=y, random_state=0)
    model = fit_svc(Z[tr], y[tr], seed=0)
    assert model.best_params_["C"] in PAPER_GRID["C"] and model.best_params_["gamma"] in PAPER_GRID["gamma"]
    assert model.cv_score_ > 0.8
    assert matthews_corrcoef(y[te], model.predict(Z[te])) > 0.8  # chance is 0
    # useless settings (kernel ~1 everywhere, or ~0 off the diagonal: one class predicted) listed before a
    # good one: the good one is picked
    bad_and_good = fit_svc(Z[tr], y[tr], grid={"C": [1], "gamma": [1e-12, 10.0, "scale"]}, scoring="f1_macro")
    assert bad_and_good.best_params_ == {"C": 1.0, "gamma": "scale"} and bad_and_good.cv_score_ > 0.8
    # the same seed gives the same model
    again = fit_svc(Z[tr], y[tr], seed=0)
    assert again.best_params_ == model.best_params_
    np.testing.assert_array_equal(again.predict_proba(Z[te]), model.predict_proba(Z[te]))


@pytest.mark.realdata
def test_tiny_classes(cellbench, caplog):
    Z, y = cellbench
    rng = np.random.default_rng(0)
    keep = np.concatenate([np.flatnonzero(y == "H1975")[:30], np.flatnonzero(y == "H2228")[:30],
                           np.flatnonzero(y == "HCC827")[:3]])
    model = fit_svc(Z[keep], y[keep], seed=1)  # 3-fold CV instead of 5
    assert np.isfinite(model.cv_score_) and model.predict_proba(Z).shape == (len(y), 3)
    one = np.concatenate([keep[:-3], keep[-1:]])
    with caplog.at_level(logging.WARNING, logger="gsrcl.svm"):
        model = fit_svc(Z[one], y[one], seed=1)
    assert "single cell" in caplog.text
    assert model.best_params_ == {"C": 1.0, "gamma": "scale"} and np.isnan(model.cv_score_)
    p = model.predict_proba(Z[rng.choice(len(y), 20)])
    assert p.shape == (20, 3) and np.allclose(p.sum(axis=1), 1)
    with pytest.raises(LabelsError, match="at least 2"):
        fit_svc(Z[:10], np.array(["a"] * 10))
    with pytest.raises(ValueError, match="scoring"):
        fit_svc(Z[keep], y[keep], scoring="auc")


@pytest.mark.realdata
def test_quick_score_orders_good_and_poor_representations(immune):
    Z, y = immune
    tr, va = train_test_split(np.arange(len(y)), train_size=0.8, stratify=y, random_state=0)
    noisy = Z + np.random.default_rng(0).normal(0, 3 * Z.std(), Z.shape)
    good = quick_score(Z[tr], y[tr], Z[va], y[va])
    assert good > 0.8
    assert quick_score(noisy[tr], y[tr], noisy[va], y[va]) < good - 0.2
    assert 0.0 <= quick_score(Z[tr], y[tr], Z[va], y[va], scoring="accuracy") <= 1.0


def test_final_svm_grid_in_parallel_gives_the_same_model(monkeypatch):
    import torch

    from gsrcl.methods.classifiers import fit_final_svc

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 400)
    emb = rng.normal(size=(1200, 8)) + (np.searchsorted(["a", "b", "c"], y)[:, None] * 0.8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    one = fit_final_svc(emb, y, cv=3, seed=0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    two = fit_final_svc(emb, y, cv=3, seed=0)
    assert one.best_params_ == two.best_params_ and one.cv_score_ == two.cv_score_
    np.testing.assert_array_equal(one.predict_proba(emb[:50]), two.predict_proba(emb[:50]))


def test_final_svm_above_its_cap_fits_a_stratified_subset(monkeypatch):
    from gsrcl.methods import classifiers

    rng = np.random.default_rng(1)
    y = np.repeat(["a", "b", "c"], [300, 60, 40])
    emb = rng.normal(size=(400, 4)) + (np.searchsorted(["a", "b", "c"], y)[:, None] * 1.5)
    monkeypatch.setattr(classifiers, "FINAL_SVM_MAX_CELLS", 100)
    capped = classifiers.fit_final_svc(emb, y, cv=3, seed=0)
    assert capped.support_vectors_.shape[0] <= 100 < len(y)
    sub = classifiers.stratified_subset(y, 100, 0)
    assert set(map(tuple, capped.support_vectors_)) <= set(map(tuple, emb[sub]))  # only the subset's cells
    assert {str(c) for c in capped.classes_} == {"a", "b", "c"}
    assert (capped.predict(emb) == y).mean() > 0.9


@pytest.mark.realdata
def test_ties_between_grid_settings(cellbench):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    Z, y = cellbench
    search = GridSearchCV(SVC(kernel="rbf"), {k: list(v) for k, v in PAPER_GRID.items()},
                          scoring="matthews_corrcoef", cv=StratifiedKFold(5, shuffle=True, random_state=0),
                          refit=False).fit(Z, y)
    scores, params = search.cv_results_["mean_test_score"], search.cv_results_["params"]
    tied = [params[i] for i in np.flatnonzero(scores >= np.nanmax(scores))]
    assert len({p["C"] for p in tied}) > 1  # the data must hold a tie across C for this test to mean anything
    first = fit_svc(Z, y, seed=0, probability=False)
    largest = fit_svc(Z, y, seed=0, probability=False, ties="largest_c")
    assert first.best_params_ == {k: (v if isinstance(v, str) else float(v)) for k, v in tied[0].items()}
    top_c = max(p["C"] for p in tied)
    expected = next(p for p in tied if p["C"] == top_c)
    assert largest.best_params_ == {k: (v if isinstance(v, str) else float(v)) for k, v in expected.items()}
    assert largest.cv_score_ == first.cv_score_
    with pytest.raises(ValueError, match="ties"):
        fit_svc(Z, y, ties="median")


def test_tie_rule_skips_failed_settings():
    from gsrcl.svm import _best_params

    results = {"mean_test_score": np.array([np.nan, 0.9, 1.0, 1.0, np.nan]),
               "params": [{"C": 1000, "gamma": 1}, {"C": 100, "gamma": 1}, {"C": 0.1, "gamma": 1},
                          {"C": 10, "gamma": 2}, {"C": 10000, "gamma": 3}]}
    assert _best_params(results, "first") == {"C": 0.1, "gamma": 1}
    assert _best_params(results, "largest_c") == {"C": 10, "gamma": 2}


@pytest.mark.realdata
def test_grid_on_squared_distances_scores_every_setting_as_libsvm_does():
    """fit_svc(distances=True) replaces GridSearchCV's RBF fits by fits on kernels sliced from one matrix of
    squared distances: the same folds, settings and gamma='scale' must give the same CV scores."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from gsrcl.svm import _grid_on_distances, squared_distances

    a = ad.read_h5ad(dataset("mouse_immune_actinn_1k.h5ad"))[:240]
    X = np.log1p(a.X.toarray()).astype(np.float64)
    X = X[:, np.argsort(X.std(axis=0))[-3000:]]  # thousands of genes, as GsRCL's gene SVMs see them
    y = (a.obs["cell_type"].astype(str).to_numpy() == "T cell").astype(np.int64)
    folds = StratifiedKFold(3, shuffle=True, random_state=5)
    ours = _grid_on_distances(X, y, PAPER_GRID, folds, "mcc", seed=5, D2=squared_distances(X))
    search = GridSearchCV(SVC(kernel="rbf", random_state=5), PAPER_GRID, scoring="matthews_corrcoef", cv=folds,
                          refit=False).fit(X, y)
    assert [dict(p) for p in ours["params"]] == [dict(p) for p in search.cv_results_["params"]]
    np.testing.assert_allclose(ours["mean_test_score"], search.cv_results_["mean_test_score"], atol=1e-9)
    assert len(set(np.round(ours["mean_test_score"], 6))) > 2  # the settings differ: a real comparison
    for ties in ("first", "largest_c"):
        fast = fit_svc(X, y, cv=3, seed=5, ties=ties, distances=True, probability=False)
        slow = fit_svc(X, y, cv=3, seed=5, ties=ties, probability=False)
        assert fast.best_params_ == slow.best_params_ and fast.cv_score_ == pytest.approx(slow.cv_score_)


@pytest.mark.realdata
def test_final_fit_on_squared_distances_is_libsvms_rbf_model():
    """With distances=True the final SVC (Platt probabilities: 6 libsvm fits) is fitted on the kernel matrix
    made from the same squared distances: the model must be the RBF SVC libsvm fits on the cells themselves."""
    a = ad.read_h5ad(dataset("mouse_immune_actinn_1k.h5ad"))[:400]
    cells = np.log1p(a.X.toarray()).astype(np.float64)
    cells = cells[:, np.argsort(cells.std(axis=0))[-2000:]]
    X, query = cells[:200], cells[200:]
    y = (a.obs["cell_type"].astype(str).to_numpy()[:200] == "B cell").astype(np.int64)
    grid = {"C": [1.0], "gamma": ["scale"]}  # one setting: the comparison is of the final fit alone
    fast = fit_svc(X, y, grid=grid, cv=3, seed=3, distances=True)
    slow = fit_svc(X, y, grid=grid, cv=3, seed=3)
    assert fast.gamma == pytest.approx(slow.gamma, rel=1e-9)
    np.testing.assert_array_equal(fast.n_support_, slow.n_support_)
    np.testing.assert_allclose(fast.support_vectors_, slow.support_vectors_)
    p_fast, p_slow = fast.predict_proba(query), slow.predict_proba(query)
    assert 0.05 < p_slow[:, 1].mean() < 0.95  # both classes among the query cells: a real comparison
    np.testing.assert_allclose(p_fast, p_slow, atol=1e-6)
    # the matrix computed once by a caller that fits several SVMs on the same cells gives the same model
    from gsrcl.svm import squared_distances

    given = fit_svc(X, y, grid=grid, cv=3, seed=3, distances=squared_distances(X))
    np.testing.assert_array_equal(given.predict_proba(query), p_fast)
    with pytest.raises(ValueError, match="distances has shape"):
        fit_svc(X, y, grid=grid, cv=3, seed=3, distances=squared_distances(X[:10]))
    # one setting chosen elsewhere, fitted without a search: fit_svc's own refit
    from gsrcl.svm import fit_setting

    alone = fit_setting(X, y, slow.best_params_, seed=3, distances=squared_distances(X))
    np.testing.assert_array_equal(alone.predict_proba(query), p_fast)
    assert alone.best_params_ == slow.best_params_ and np.isnan(alone.cv_score_)
    np.testing.assert_array_equal(fit_setting(X, y, slow.best_params_, seed=3).predict_proba(query), p_slow)


@pytest.mark.realdata
def test_final_fit_above_the_distance_cap_builds_its_kernel_in_one_buffer(monkeypatch):
    """Above DISTANCE_CELLS_MAX rows, fit_svc(distances=True) fits the final SVC on a kernel built from the cells
    in one buffer (svm.rbf_kernel): a multi-class model on unit-length rows (as the embeddings the classifiers
    see) must be libsvm's own RBF model, and a kernel made from the squared distances must equal it."""
    import gsrcl.svm as svm

    a = ad.read_h5ad(dataset("mouse_immune_actinn_1k.h5ad"))[:500]
    cells = np.log1p(a.X.toarray()).astype(np.float64)
    cells = cells[:, np.argsort(cells.std(axis=0))[-300:]]
    cells /= np.maximum(np.linalg.norm(cells, axis=1, keepdims=True), 1e-12)
    X, query = cells[:300], cells[300:]
    y = a.obs["cell_type"].astype(str).to_numpy()[:300]
    assert len(np.unique(y)) > 2
    np.testing.assert_allclose(svm.rbf_kernel(X, 0.7), svm.rbf_kernel(X, 0.7, svm.squared_distances(X)),
                               atol=1e-12)
    grid = {"C": [10.0], "gamma": ["scale"]}
    slow = fit_svc(X, y, grid=grid, cv=3, seed=4)
    monkeypatch.setattr(svm, "DISTANCE_CELLS_MAX", 100)  # X's 300 rows are above the cap
    calls, build = [], svm.rbf_kernel
    monkeypatch.setattr(svm, "rbf_kernel", lambda X, gamma, D2=None: calls.append(D2) or build(X, gamma, D2))
    fast = fit_svc(X, y, grid=grid, cv=3, seed=4, distances=True)
    assert len(calls) == 1 and calls[0] is None  # the final fit, on a kernel built from the cells
    np.testing.assert_array_equal(fast.n_support_, slow.n_support_)
    p_fast, p_slow = fast.predict_proba(query), slow.predict_proba(query)
    assert (p_slow.max(axis=1) < 0.99).any()  # not every cell sure: a real comparison
    # libsvm stops at its tolerance (1e-3), so a kernel rounded differently ends a little elsewhere
    np.testing.assert_allclose(p_fast, p_slow, atol=1e-3)
    np.testing.assert_array_equal(p_fast.argmax(axis=1), p_slow.argmax(axis=1))


def test_pooled_svms_hold_each_support_vector_once_and_give_each_svms_probabilities(monkeypatch):
    from gsrcl.svm import PooledSVCs

    rng = np.random.default_rng(3)
    y = np.repeat(["a", "b", "c"], 60)
    X = rng.normal(size=(180, 12)) + np.searchsorted(["a", "b", "c"], y)[:, None] * 0.7
    X[rng.random(X.shape) < 0.5] = 0.0  # sparse input, as the genes are
    svcs = [PortableSVC.from_sklearn(SVC(kernel="rbf", gamma=g, probability=True, random_state=0).fit(X, y == t))
            for t, g in (("a", 0.05), ("b", 0.2), ("c", 0.1))]
    svcs.append(PortableSVC.from_sklearn(SVC(kernel="rbf", gamma=0.1, probability=True, random_state=0).fit(X, y)))
    pooled = PooledSVCs(svcs)
    total = sum(s.support_vectors_.shape[0] for s in svcs)
    assert len(np.unique(pooled.support_vectors_, axis=0)) == pooled.support_vectors_.shape[0] < total
    for s, idx in zip(svcs, pooled.index_):
        np.testing.assert_array_equal(pooled.support_vectors_[idx], s.support_vectors_)
    Q = X[::3] + rng.normal(scale=0.1, size=X[::3].shape)
    expected = [s.predict_proba(Q) for s in svcs]
    monkeypatch.setattr("gsrcl.svm._KERNEL_BUDGET", 7 * pooled.support_vectors_.shape[0])  # 7 rows a block
    for query in (Q, sp.csr_matrix(Q)):
        got = pooled.predict_proba(query)
        assert [g.shape for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-12)
    assert [g.shape for g in pooled.predict_proba(Q[:0])] == [(0, 2)] * 3 + [(0, 3)]
    with pytest.raises(ValueError, match="same features"):
        PooledSVCs([svcs[0], PortableSVC.from_sklearn(SVC(probability=True).fit(X[:, :5], y))])
