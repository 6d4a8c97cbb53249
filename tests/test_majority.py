"""Majority voting over the query's own over-clusters (CellTypist's option)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from gsrcl.majority import majority_vote, over_cluster, resolution_for


def _blobs(n_per=200, centres=(0.0, 8.0, 16.0), seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(c, 1.0, (n_per, 5)) for c in centres])
    return X, np.repeat(np.array(["a", "b", "c"], dtype=object)[: len(centres)], n_per)


def _neighbours(X, k=15):
    return NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X, return_distance=False)


def test_resolution_grows_with_the_query_as_celltypist_sets_it():
    assert [resolution_for(n) for n in (100, 4_999, 5_000, 19_999, 39_999, 99_999, 199_999, 10**7)] == \
        [5, 5, 10, 10, 15, 20, 25, 30]


def test_over_clusters_are_many_stay_within_one_group_and_repeat_with_the_seed():
    X, groups = _blobs()
    idx = _neighbours(X)
    clusters = over_cluster(idx, seed=3)
    assert len(np.unique(clusters)) >= 10  # over-clustered: several clusters per group
    for c in np.unique(clusters):  # no cluster straddles two well-separated groups
        assert len(set(groups[clusters == c])) == 1
    np.testing.assert_array_equal(clusters, over_cluster(idx, seed=3))
    sizes = np.bincount(clusters)
    assert (np.diff(sizes) <= 0).all()  # numbered by decreasing size


def test_the_vote_corrects_scattered_errors_and_keeps_a_cluster_of_unassigned_cells_unassigned():
    X, groups = _blobs()
    rng = np.random.default_rng(1)
    labels = groups.copy()
    wrong = rng.random(len(labels)) < 0.15
    labels[wrong] = np.where(groups[wrong] == "a", "b", "a")
    labels[groups == "c"] = "Unassigned"  # a type the reference lacks
    voted = majority_vote(labels, over_cluster(_neighbours(X)))
    assert (voted[groups != "c"] == groups[groups != "c"]).mean() > 0.99
    assert (labels[groups != "c"] == groups[groups != "c"]).mean() < 0.9
    assert set(voted[groups == "c"]) == {"Unassigned"}


@pytest.mark.parametrize("labels, clusters, expected", [
    (["x", "y", "y", "x"], [0, 0, 0, 1], ["y", "y", "y", "x"]),
    (["x", "y"], [5, 5], ["x", "x"]),  # a tie goes to the first name in sorted order
])
def test_majority_vote_by_hand(labels, clusters, expected):
    assert list(majority_vote(labels, clusters)) == expected


def test_predict_writes_the_vote_beside_the_per_cell_labels_and_only_when_asked(tiny_refdir, pbmc68k_query_file,
                                                                                 tmp_path):
    import anndata as ad
    import pandas as pd

    from gsrcl.cli import main

    base = ["predict", "-i", str(pbmc68k_query_file), "-r", "pbmc68k_afrcl", "-mp", str(tiny_refdir), "-q",
            "--no-plot"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert main([*base, "-o", str(tmp_path / "vote"), "--majority-voting"]) == 0
    plain = pd.read_csv(tmp_path / "plain" / "probabilities.csv", index_col=0)
    voted = pd.read_csv(tmp_path / "vote" / "probabilities.csv", index_col=0)
    assert "majority_voting" not in plain.columns
    pd.testing.assert_frame_equal(voted.drop(columns="majority_voting"), plain)  # the per-cell results unchanged
    obs = ad.read_h5ad(tmp_path / "vote" / "annotated.h5ad").obs
    assert list(obs["majority_voting"].cat.categories) == list(obs["predicted_labels"].cat.categories)
    assert (obs["majority_voting"].astype(str).to_numpy() == voted["majority_voting"].to_numpy()).all()
    for _, cells in obs.groupby("over_clustering", observed=True):  # each cluster: one label, its most frequent
        assert cells["majority_voting"].nunique() == 1
        counts = cells["predicted_labels"].astype(str).value_counts()
        assert counts[str(cells["majority_voting"].iloc[0])] == counts.max()
    assert obs["over_clustering"].nunique() > 5


def test_majority_voting_without_neighbourhoods_is_refused_in_one_line(tiny_refdir, pbmc68k_query_file, tmp_path,
                                                                      capsys):
    from gsrcl.cli import main

    code = main(["predict", "-i", str(pbmc68k_query_file), "-r", "pbmc68k_afrcl", "-mp", str(tiny_refdir),
                 "-o", str(tmp_path / "out"), "--majority-voting", "--neighbours", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 85 and len(err) == 1 and "--majority-voting" in err[0]
    assert not (tmp_path / "out").exists()
