"""gsrcl.linear: the linear SVM on the genes, stored as arrays, pooled with the model for cells far from the
reference (``--linear-pool``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from gsrcl import Reference, annotate
from gsrcl.errors import GsrclError, InvalidReferenceError
from gsrcl.linear import LinearClassifier, pool_by_novelty
from gsrcl.training import train
from tests.conftest import TINY_SETTINGS, TINY_TOP_GENES


def _cells(k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat([f"t{i}" for i in range(k)], 40)
    X = rng.poisson(1.0, size=(len(y), 30)).astype(np.float32)
    X[np.arange(len(y)), np.searchsorted(np.unique(y), y)] += 4  # one marker gene per type
    return sp.csr_matrix(np.log1p(X)), y


@pytest.mark.parametrize("k", [2, 4])
def test_probabilities_are_scikit_learns_calibrated_linear_svm(k):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    X, y = _cells(k)
    ours = LinearClassifier.fit(X, y, seed=5)
    theirs = CalibratedClassifierCV(LinearSVC(C=1.0, random_state=5), cv=3).fit(X, y)
    Q = X[::7]
    np.testing.assert_allclose(ours.predict_proba(Q), theirs.predict_proba(Q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(Q.toarray()), theirs.predict_proba(Q), rtol=0, atol=1e-12)
    assert list(ours.classes_) == sorted(set(y))


def test_raw_scores_are_the_per_class_sigmoids_before_normalisation():
    X, y = _cells(4)
    ours = LinearClassifier.fit(X, y, seed=2)
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    theirs = CalibratedClassifierCV(LinearSVC(C=1.0, random_state=2), cv=3).fit(X, y)
    Q = X[::5]
    expected = np.mean([np.column_stack([cal.predict(c.estimator.decision_function(Q)[:, j])
                                         for j, cal in enumerate(c.calibrators)])
                        for c in theirs.calibrated_classifiers_], axis=0)
    raw = ours.predict_raw(Q)
    np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-12)
    assert not np.allclose(raw.sum(axis=1), 1.0)  # not normalised, unlike predict_proba


def test_a_large_reference_is_sampled_by_type(monkeypatch):
    from gsrcl.methods.labels import stratified_subset

    X, y = _cells(3)
    whole = LinearClassifier.fit(X, y, seed=4).predict_proba(X)
    monkeypatch.setattr("gsrcl.linear.FIT_MAX_CELLS", 60)
    sub = stratified_subset(y, 60, 4)
    sampled = LinearClassifier.fit(X, y, seed=4).predict_proba(X)
    np.testing.assert_array_equal(sampled, LinearClassifier.fit(X[sub], y[sub], seed=4).predict_proba(X))
    assert len(sub) == 60 and not np.allclose(sampled, whole)


def test_state_round_trip_and_refused_states():
    X, y = _cells(3)
    model = LinearClassifier.fit(X, y, seed=1)
    config, arrays = model.state()
    config = json.loads(json.dumps(config))
    back = LinearClassifier.from_state(config, arrays, X.shape[1])
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))
    with pytest.raises(ValueError, match="does not fit"):
        LinearClassifier.from_state(config, arrays, X.shape[1] + 1)
    with pytest.raises(ValueError, match="missing array"):
        LinearClassifier.from_state(config, {k: v for k, v in arrays.items() if k != "fold2.a"}, X.shape[1])
    with pytest.raises(ValueError, match="does not fit"):
        LinearClassifier.from_state(config, {**arrays, "fold0.columns": arrays["fold0.columns"] + 3}, X.shape[1])
    with pytest.raises(ValueError, match="unexpected arrays"):
        LinearClassifier.from_state(config, {**arrays, "fold9.coef": arrays["fold0.coef"]}, X.shape[1])
    with pytest.raises(ValueError, match="can read"):
        LinearClassifier.from_state({**config, "kind": "rbf_svc"}, arrays, X.shape[1])


def test_the_linear_say_grows_with_novelty_from_two_to_three():
    p = np.array([[0.9, 0.1]] * 5)
    lin = np.array([[0.2, 0.8]] * 5)
    pooled = pool_by_novelty(p, lin, np.array([0.3, 2.0, 2.25, 3.0, 7.0]))
    np.testing.assert_allclose(pooled[:, 1], [0.1, 0.1, 0.1 * 0.75 + 0.8 * 0.25, 0.8, 0.8])
    np.testing.assert_allclose(pooled.sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def references(pbmc68k):
    """A tiny AF-RCL reference without and with the linear pool (the same model: same seed, same cells)."""
    ref = pbmc68k[0]
    settings = dict(top_genes=TINY_TOP_GENES, quiet=True, **TINY_SETTINGS)
    return (train(ref, "bulk_labels", "afrcl", linear_pool=False, **settings),
            train(ref, "bulk_labels", "afrcl", linear_pool=True, **settings))


def test_prediction_pools_the_linear_svm_by_each_cells_novelty(references, pbmc68k, tmp_path, monkeypatch):
    plain, pooled = references
    assert plain.linear is None and "linear" not in plain.manifest
    assert pooled.manifest["linear"]["classes"] == pooled.cell_types
    assert all(np.array_equal(pooled.arrays[k], v) for k, v in plain.arrays.items())  # the same model
    query = pbmc68k[1]
    monkeypatch.setattr("gsrcl.linear.NOVELTY_FROM", 1.0)  # this query's cells lie within twice the reference's
    a, b = (annotate(query, r, quiet=True, plot=False) for r in (plain, pooled))
    nov = np.asarray(b.obs["novelty_score"], dtype=float)
    np.testing.assert_array_equal(nov, np.asarray(a.obs["novelty_score"], dtype=float))
    assert (nov < 1).any() and (nov > 1).any()  # cells of both kinds
    X = sp.csr_matrix(query[:, pooled.genes].X, dtype=np.float32)
    Xm = pooled.model_input.transform(X)
    expected = pool_by_novelty(np.asarray(a.obsm["probabilities"]), pooled.linear.predict_proba(Xm), nov)
    np.testing.assert_allclose(np.asarray(b.obsm["probabilities"]), expected, rtol=0, atol=1e-6)  # float32 input
    saved = Reference.load(pooled.save(tmp_path, "pooled"))
    again = annotate(query, saved, quiet=True, plot=False)
    np.testing.assert_array_equal(np.asarray(again.obsm["probabilities"]), np.asarray(b.obsm["probabilities"]))


def test_a_changed_linear_section_is_refused(references, tmp_path):
    path = references[1].save(tmp_path, "pooled")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["linear"]["classes"] = manifest["linear"]["classes"][::-1]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidReferenceError):
        Reference.load(path)


def test_gsrcl_pools_its_raw_scores_and_probabilities(pbmc68k, monkeypatch):
    settings = dict(top_genes=TINY_TOP_GENES, quiet=True, **TINY_SETTINGS)
    plain, pooled = (train(pbmc68k[0], "bulk_labels", "gsrcl", linear_pool=lp, **settings) for lp in (False, True))
    query = pbmc68k[1]
    monkeypatch.setattr("gsrcl.linear.NOVELTY_FROM", 1.0)
    a, b = (annotate(query, r, quiet=True, plot=False) for r in (plain, pooled))
    nov = np.asarray(b.obs["novelty_score"], dtype=float)
    assert (nov < 1).any() and (nov > 1).any()
    Xm = pooled.model_input.transform(sp.csr_matrix(query[:, pooled.genes].X, dtype=np.float32))
    raw = np.asarray(a.obsm["raw_scores"])
    np.testing.assert_allclose(np.asarray(b.obsm["raw_scores"]),
                               pool_by_novelty(raw, pooled.linear.predict_raw(Xm), nov), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(b.obsm["probabilities"]),
                               pool_by_novelty(raw / raw.sum(axis=1, keepdims=True), pooled.linear.predict_proba(Xm),
                                               nov), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(b.obsm["probabilities"]).sum(axis=1), 1.0)


def test_it_needs_a_novelty_score_and_the_flags_turn_it_on_and_off(pbmc68k, tmp_path):
    from gsrcl.cli import main
    from gsrcl.methods.presets import PRESETS

    with pytest.raises(GsrclError, match="linear pool"):
        train(pbmc68k[0], "bulk_labels", "afrcl", linear_pool=True, novelty=False, quiet=True, **TINY_SETTINGS)
    on = {(m, name) for m, presets in PRESETS.items() for name, p in presets.items() if p.linear_pool}
    assert on == {(m, n) for m in ("afrcl", "gsrcl") for n in ("default", "demo")}
    data = tmp_path / "ref.h5ad"
    pbmc68k[0].write_h5ad(data)
    config = json.dumps({k: v for k, v in TINY_SETTINGS.items() if k != "ensemble"})
    for name, flag, expected in (("off", "--no-linear-pool", False), ("on", "--linear-pool", True)):
        assert main(["train", "-i", str(data), "--labels", "bulk_labels", "-r", name, "-mp", str(tmp_path / "refs"),
                     "--method", "gsrcl" if expected else "afrcl", "--ensemble", "1", "--config", config, flag,
                     "-q"]) == 0
        assert (Reference.load(tmp_path / "refs" / name).linear is not None) == expected
