"""Query neighbourhoods: the streamed PCA, the neighbour search and the averaging over neighbourhoods."""

import numpy as np
import pytest
import scipy.sparse as sp

from gsrcl import neighbours as NB
from gsrcl.neighbours import QueryNeighbours, in_blocks


def _groups(rng, n_per=40, n_genes=60, n_groups=3):
    """log1p-like values of cells in well separated groups (each group expresses its own genes)."""
    X = rng.poisson(0.3, size=(n_per * n_groups, n_genes)).astype(np.float32)
    for g in range(n_groups):
        X[g * n_per:(g + 1) * n_per, g * 10:(g + 1) * 10] += rng.poisson(6, size=(n_per, 10))
    return sp.csr_matrix(np.log1p(X)), np.repeat(np.arange(n_groups), n_per)


def test_streamed_pca_gives_the_distances_of_a_pca_of_the_scaled_top_genes():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    N, _ = _groups(rng)
    g = QueryNeighbours(n_neighbors=5, n_components=4, n_genes=25).fit(in_blocks(N, 7), N.shape[0])
    dense = N.toarray()
    var = dense.var(axis=0)
    top = np.sort(np.argsort(-var, kind="stable")[:25])
    assert np.array_equal(g.genes_, top)
    Z = (dense[:, top] - dense[:, top].mean(axis=0)) / (np.sqrt(var[top]) + NB.SCALE_FLOOR)
    P = PCA(4, svd_solver="full").fit_transform(Z)
    dist = lambda A: np.linalg.norm(A[:, None] - A[None], axis=2)
    assert np.allclose(dist(g.coords_), dist(P), atol=1e-3)  # the same points up to rotation and sign
    # blocks of any size give the same neighbourhoods
    again = QueryNeighbours(n_neighbors=5, n_components=4, n_genes=25).fit(in_blocks(N, 1000), N.shape[0])
    assert np.array_equal(again.indices_, g.indices_) and g.fitted_on == N.shape[0]


@pytest.mark.parametrize("approximate", [False, True])
def test_each_cell_comes_first_among_its_neighbours_from_its_own_group(monkeypatch, approximate):
    rng = np.random.default_rng(1)
    N, group = _groups(rng)
    if approximate:
        monkeypatch.setattr(NB, "EXACT_MAX", 10)
    g = QueryNeighbours(n_neighbors=8).fit(in_blocks(N), N.shape[0])
    idx = g.indices_
    assert idx.shape == (N.shape[0], 8) and idx.dtype == np.int32
    assert np.array_equal(idx[:, 0], np.arange(N.shape[0]))
    assert all(len(set(row)) == 8 for row in idx)
    assert (group[idx] == group[:, None]).mean() > 0.99
    assert g.record()["search"] == ("approximate (Annoy)" if approximate else "exact")


def test_a_large_query_takes_its_genes_and_components_from_a_seeded_subset(monkeypatch):
    rng = np.random.default_rng(4)
    N, group = _groups(rng, n_per=100)
    monkeypatch.setattr(NB, "FIT_MAX_CELLS", 90)
    seen = []

    def blocks(rows=None):  # records which cells each pass reads
        seen.append(None if rows is None else rows.copy())
        return in_blocks(N, 50)(rows)

    g = QueryNeighbours(n_neighbors=8).fit(blocks, N.shape[0])
    assert g.fitted_on == 90 and g.record()["fitted_on_cells"] == 90
    assert [None if r is None else len(r) for r in seen] == [90, 90, None]  # two passes on the subset, all projected
    assert np.array_equal(seen[0], seen[1]) and np.all(np.diff(seen[0]) > 0)
    assert g.coords_.shape[0] == N.shape[0] and (group[g.indices_] == group[:, None]).mean() > 0.99
    assert np.array_equal(QueryNeighbours(n_neighbors=8).fit(blocks, N.shape[0]).indices_, g.indices_)  # seeded
    with pytest.raises(ValueError, match="gave 300 cells, not the 80 expected"):
        QueryNeighbours(n_neighbors=8).fit(in_blocks(N), 80)


def test_identical_cells_still_list_the_cell_itself_once():
    N = sp.csr_matrix(np.vstack([np.ones((30, 5)), np.tile(np.arange(5.0), (30, 1))]))
    idx = QueryNeighbours(n_neighbors=4, n_components=2).fit(in_blocks(N), N.shape[0]).indices_
    assert np.array_equal(idx[:, 0], np.arange(60)) and all(len(set(row)) == 4 for row in idx)


def test_smooth_is_the_mean_over_the_neighbourhood():
    rng = np.random.default_rng(2)
    N, _ = _groups(rng)
    g = QueryNeighbours(n_neighbors=3).fit(in_blocks(N), N.shape[0])
    values = rng.normal(size=N.shape[0])
    i = 17
    assert g.smooth(values)[i] == pytest.approx(values[g.indices_[i]].mean())
    with pytest.raises(ValueError, match="values for"):
        g.smooth(values[:-1])


def test_too_few_cells_or_a_neighbourhood_of_one_are_refused():
    N = sp.csr_matrix(np.random.default_rng(3).poisson(1.0, size=(59, 20)).astype(np.float32))
    with pytest.raises(ValueError, match="too few"):
        QueryNeighbours(15).fit(in_blocks(N), N.shape[0])
    with pytest.raises(ValueError, match="at least 2"):
        QueryNeighbours(1)


@pytest.mark.realdata
def test_neighbourhoods_lift_a_confidence_score_for_unseen_types_on_kang_to_pbmc3k(data_dir):
    """Kang -> pbmc3k (CD8 T, FCGR3A+ monocytes, DC and platelets unseen): a linear SVM's top decision value ranks
    known cells above unseen ones with AUROC 0.777; averaged over query neighbourhoods 0.861 (measured)."""
    import anndata as ad
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import LinearSVC

    from gsrcl.model_input import ModelInput
    from gsrcl.values import detect_values, to_model_input

    ref, query = ad.read_h5ad(data_dir / "pbmc_kang_ctrl_muscat.h5ad"), ad.read_h5ad(data_dir / "pbmc3k_seurat_clustifyr.h5ad")
    genes = ref.var_names.intersection(query.var_names)
    ref, query = ref[:, genes], query[:, genes]
    Xr, Xq = (to_model_input(a.X, detect_values(a.X)) for a in (ref, query))
    svm = LinearSVC(random_state=0).fit(Xr, ref.obs["cell_type"].astype(str))
    conf = svm.decision_function(Xq).max(axis=1)
    names = {"CD14+ Mono": "CD14+ Monocytes", "Memory CD4 T": "CD4 T cells", "Naive CD4 T": "CD4 T cells",
             "B": "B cells", "NK": "NK cells"}
    known = np.isin(query.obs["cell_type"].astype(str).map(lambda t: names.get(t, t)), svm.classes_)
    assert 0.2 < known.mean() < 0.9
    g = QueryNeighbours().fit(in_blocks(ModelInput("log1p").novelty_input(Xq)), Xq.shape[0])
    cell, smoothed = roc_auc_score(known, conf), roc_auc_score(known, g.smooth(conf))
    assert cell < 0.8 and smoothed > cell + 0.05, (cell, smoothed)


class _Bars:
    """A progress factory that records each bar's name, total and the cells it counted."""

    def __init__(self):
        self.bars = []

    def __call__(self, name, total):
        bar = {"name": name, "total": total, "counted": 0, "closed": False}
        self.bars.append(bar)

        class Bar:
            def update(self, n):
                bar["counted"] += n

            def close(self):
                bar["closed"] = True

        return Bar()


def test_each_pass_has_its_own_honest_bar_and_moments_from_outside_skip_the_first():
    rng = np.random.default_rng(3)
    N, _ = _groups(rng)
    n = N.shape[0]
    bars = _Bars()
    g = QueryNeighbours(n_neighbors=5).fit(in_blocks(N, 11), n, progress=bars)
    assert [b["name"] for b in bars.bars] == ["neighbours: gene variances", "neighbours: covariance",
                                             "neighbours: projection"]
    assert all(b["total"] == b["counted"] == n and b["closed"] for b in bars.bars)  # cells, not passes x cells
    # the variance pass done by the caller (as prediction does during its own pass): the same neighbourhoods
    moments = NB.GeneMoments()
    for block in in_blocks(N, 11)(None):
        moments.add(block)
    bars = _Bars()
    again = QueryNeighbours(n_neighbors=5).fit(in_blocks(N, 11), n, moments=moments, progress=bars)
    assert [b["name"] for b in bars.bars] == ["neighbours: covariance", "neighbours: projection"]
    np.testing.assert_array_equal(again.coords_, g.coords_)
    np.testing.assert_array_equal(again.indices_, g.indices_)
    short = NB.GeneMoments()
    short.add(N[:10])
    with pytest.raises(ValueError, match="expected"):
        QueryNeighbours(n_neighbors=5).fit(in_blocks(N, 11), n, moments=short)


def test_fit_rows_is_a_seeded_subset_above_the_limit(monkeypatch):
    assert NB.fit_rows(NB.FIT_MAX_CELLS) is None
    rows = NB.fit_rows(NB.FIT_MAX_CELLS + 10, seed=2)
    assert len(rows) == NB.FIT_MAX_CELLS and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, NB.fit_rows(NB.FIT_MAX_CELLS + 10, seed=2))
