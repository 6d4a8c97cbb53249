"""Labels refined over the query's own structure: CellTypist's majority voting (docs/methods.md §7).

The query is over-clustered on its own neighbour graph (each cell joined to its nearest query cells,
`gsrcl.neighbours.QueryNeighbours`), by the Leiden algorithm at a resolution that grows with the number of cells
(CellTypist's steps, `resolution_for`); each cluster then takes the label most of its cells have, ``Unassigned``
included, so that a cluster of cells no reference type claims stays ``Unassigned``. The per-cell labels are
kept beside it: the vote is ``obs['majority_voting']``, the cluster ``obs['over_clustering']``.
"""

from __future__ import annotations

import logging
import random

import numpy as np

__all__ = ["vote", "over_cluster", "majority_vote", "resolution_for", "RESOLUTIONS"]

log = logging.getLogger("gsrcl.majority")

# (fewer cells than, resolution): CellTypist's over-clustering resolutions; 30 from 200,000 cells on
RESOLUTIONS = ((5_000, 5.0), (20_000, 10.0), (40_000, 15.0), (100_000, 20.0), (200_000, 25.0))
LARGEST = 30.0


def resolution_for(n_cells: int) -> float:
    """The Leiden resolution of the over-clustering of ``n_cells`` cells (`RESOLUTIONS`)."""
    return next((r for below, r in RESOLUTIONS if n_cells < below), LARGEST)


def over_cluster(indices: np.ndarray, resolution: float | None = None, seed: int = 0) -> np.ndarray:
    """Leiden clusters (modularity, ``resolution``) of the undirected graph that joins each cell to its
    neighbours.

    Parameters
    ----------
    indices : ndarray of shape (n, k)
        Each cell's neighbours, the cell itself first (`QueryNeighbours.indices_`).
    resolution : float, optional
        None: `resolution_for` the number of cells.
    seed : int
        Seeds Leiden's random choices (igraph's generator is restored after).

    Returns
    -------
    ndarray of int
        Each cell's cluster, numbered from 0 by decreasing size.
    """
    import igraph

    indices = np.asarray(indices, dtype=np.int64)
    n = indices.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    source = np.repeat(np.arange(n), indices.shape[1] - 1)
    target = indices[:, 1:].reshape(-1)
    keep = source != target
    graph = igraph.Graph(n=n, edges=np.column_stack([source[keep], target[keep]]).tolist(), directed=False)
    graph.simplify()  # a pair that are each other's neighbours is one edge
    igraph.set_random_number_generator(random.Random(seed))
    try:
        parts = graph.community_leiden(objective_function="modularity", resolution=resolution or resolution_for(n),
                                       n_iterations=-1)
    finally:
        igraph.set_random_number_generator(random)
    membership = np.asarray(parts.membership, dtype=np.int64)
    sizes = np.bincount(membership)
    rank = np.empty_like(sizes)
    rank[np.lexsort((np.arange(len(sizes)), -sizes))] = np.arange(len(sizes))
    return rank[membership]


def majority_vote(labels, clusters) -> np.ndarray:
    """Each cell's cluster's most frequent label (ties: the first in sorted order).

    Parameters
    ----------
    labels : sequence of str
        Each cell's label (``Unassigned`` counts as a label).
    clusters : sequence of int
        Each cell's cluster.

    Returns
    -------
    ndarray of str
    """
    labels = np.asarray(labels, dtype=object).astype(str)
    clusters = np.asarray(clusters)
    names, codes = np.unique(labels, return_inverse=True)
    ids, cluster_codes = np.unique(clusters, return_inverse=True)
    counts = np.zeros((len(ids), len(names)), dtype=np.int64)
    np.add.at(counts, (cluster_codes, codes), 1)
    return names[np.argmax(counts, axis=1)][cluster_codes]


def vote(labels, graph, seed: int = 0):
    """Majority voting over the over-clusters of a query's neighbour graph.

    Parameters
    ----------
    labels : sequence of str
        Each cell's label.
    graph : gsrcl.neighbours.QueryNeighbours or None
        The query's neighbourhoods; None (too few cells): each cell keeps its own label.
    seed : int
        Seeds the clustering.

    Returns
    -------
    tuple
        (majority labels as an object array, each cell's cluster, a record for ``uns['gsrcl']``).
    """
    labels = np.asarray(labels, dtype=object)
    n = len(labels)
    if graph is None:
        log.info("majority voting: %d cells are too few for neighbourhoods; each cell keeps its own label", n)
        return (labels.copy(), np.zeros(n, dtype=np.int64),
                {"applied": False, "note": "too few cells for neighbourhoods: each cell keeps its label"})
    clusters = over_cluster(graph.indices_, seed=seed)
    majority = majority_vote(labels, clusters).astype(object)
    changed = int(np.count_nonzero(majority != labels))
    n_clusters = int(clusters.max()) + 1 if n else 0
    log.info("majority voting: %d over-clusters; %d of %d cells take their cluster's label", n_clusters, changed, n)
    return majority, clusters, {"applied": True, "clusters": n_clusters, "resolution": resolution_for(n),
                                "changed": changed}
