"""Each query cell's nearest cells in the query's own principal components, to read a score over neighbourhoods.

A cell of a type the reference lacks can look like a known cell on its own (a CD8 T cell next to a reference of
CD4 T and NK cells), but such cells come in groups, and the query's own structure puts them next to each other.
The mean of a per-cell score over the cell's ``n_neighbors`` nearest query cells (itself included) is the score of
its neighbourhood: CellTypist's majority voting reads labels over query clusters for the same reason. On the
accuracy benchmark's Kang -> pbmc3k task the unseen-type AUROC of the per-cell unseen_score went from 0.882 to 0.931
(GsRCL) and from 0.864 to 0.918 (AF-RCL) over 15 neighbours (scanpy's default; 15-50 neighbours and 30 or 50
components all gave AF-RCL more than 0.91); the baselines' confidence gains from the same neighbourhoods too (best
0.777 -> 0.861), and the benchmark reports both (``benchmarks/results/accuracy.md``). Averaging amplifies what the
per-cell score says, wrong or right: over 31 splits with a reference type taken out
(``benchmarks/results/neighbourhoods.md``) it raised the novelty score's AUROC in 19 and lowered it in 5 (worst
-0.044, where the per-cell score was below chance already).

The space: log1p(CP10k) over the reference genes (the novelty score's input), the ``n_genes`` genes of highest
variance in the query, each scaled to unit variance over the query, then the first ``n_components`` principal
components. The PCA is exact and streamed: one pass for the genes' variances, one for the covariance of the chosen
genes, one to project, so memory holds n x ``n_components`` values rather than the matrix. Neighbours are exact
(scikit-learn) up to ``EXACT_MAX`` cells and approximate above (Annoy, as openTSNE ships it, ``ANNOY_TREES`` trees).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import scipy.sparse as sp

log = logging.getLogger("gsrcl.neighbours")

N_NEIGHBORS = 15  # scanpy's default for its neighbour graph
N_COMPONENTS = 30
N_GENES = 2000
SCALE_FLOOR = 1e-3  # added to each gene's standard deviation
EXACT_MAX = 100_000  # above this, Annoy (at 100,000 synthetic cells: 16 s with 50 trees, exact 29 s)
# Annoy trees: openTSNE's 50 find 94% of the exact neighbours on Kang -> pbmc3k, 10 find 74%, yet the averaged
# score ranks unseen cells as well (AUROC 0.939 / 0.941, exact 0.931), and 10 build 5x faster (1M cells: 79 s)
ANNOY_TREES = 10
FIT_MAX_CELLS = 50_000  # above this many cells, genes and components come from a seeded random subset
MIN_CELLS_PER_NEIGHBOUR = 4  # a query needs n_neighbors x this many cells, else neighbourhoods span most of it

Blocks = Callable[[np.ndarray | None], Iterable[sp.csr_matrix]]


def check_neighbours(n) -> int:
    """``neighbours`` of prediction: 0 (off) or a neighbourhood size of at least 2 cells."""
    try:
        value = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"neighbours must be a whole number of cells (0 = off), not {n!r}") from None
    if value != n or value < 0 or value == 1:
        raise ValueError(f"neighbours must be 0 (off) or at least 2 cells, not {n!r}")
    return value


def min_cells(n_neighbors: int = N_NEIGHBORS) -> int:
    return int(n_neighbors) * MIN_CELLS_PER_NEIGHBOUR


class QueryNeighbours:
    """``fit(blocks, n_cells)`` on the query, then ``smooth(values)`` for any per-cell score. ``blocks(rows)``
    yields the log1p CP10k values of the query's cells in order, every time it is called: of all of them
    (``rows=None``) or of those at the sorted indices ``rows`` only. ``indices_``: n x ``n_neighbors`` (the cell
    itself first); ``coords_``: the cells in the components; ``genes_``: the columns chosen; ``fitted_on``: the
    number of cells the genes and components were chosen from."""

    def __init__(self, n_neighbors: int = N_NEIGHBORS, n_components: int = N_COMPONENTS, n_genes: int = N_GENES,
                 seed: int = 0):
        if int(n_neighbors) < 2:
            raise ValueError(f"a neighbourhood needs at least 2 cells, not {n_neighbors}")
        self.n_neighbors = int(n_neighbors)
        self.n_components = int(n_components)
        self.n_genes = int(n_genes)
        self.seed = int(seed)

    def fit(self, blocks: Blocks, n_cells: int) -> "QueryNeighbours":
        n = int(n_cells)
        if n < min_cells(self.n_neighbors):
            raise ValueError(f"{n} cells are too few for neighbourhoods of {self.n_neighbors} "
                             f"(at least {min_cells(self.n_neighbors)} are needed)")
        rows = None
        if n > FIT_MAX_CELLS:  # the genes and components from a seeded random subset; every cell is projected
            rows = np.sort(np.random.default_rng(self.seed).choice(n, FIT_MAX_CELLS, replace=False))
        m, total, squares = 0, None, None
        for N in blocks(rows):
            m += N.shape[0]
            s, q = np.asarray(N.sum(axis=0), dtype=np.float64).ravel(), np.asarray(N.multiply(N).sum(axis=0),
                                                                                  dtype=np.float64).ravel()
            total, squares = (s, q) if total is None else (total + s, squares + q)
        if m != (n if rows is None else len(rows)):
            raise ValueError(f"the blocks gave {m} cells, not the {n if rows is None else len(rows)} expected")
        mean = total / m
        var = np.maximum(squares / m - mean ** 2, 0.0)
        genes = np.sort(np.argsort(-var, kind="stable")[: min(self.n_genes, int(np.sum(var > 0)) or 1)])
        scale = np.sqrt(var[genes]) + SCALE_FLOOR
        cross = np.zeros((len(genes), len(genes)))
        for N in blocks(rows):
            G = N[:, genes].toarray()  # dense: BLAS is far faster than a sparse product with ~2000 genes
            cross += G.T @ G
        mu = mean[genes]
        corr = (cross / m - np.outer(mu, mu)) / np.outer(scale, scale)
        k = max(1, min(self.n_components, len(genes), m - 1))
        values, vectors = np.linalg.eigh(corr)
        vectors = vectors[:, np.argsort(values)[::-1][:k]]
        weights = vectors / scale[:, None]  # the scaling folded in: P = N[:, genes] @ weights - offset
        offset = (mu / scale) @ vectors
        P = np.concatenate([np.asarray(N[:, genes] @ weights) - offset for N in blocks(None)]).astype(np.float32)
        if P.shape[0] != n:
            raise ValueError(f"the blocks gave {P.shape[0]} cells, not the {n} expected")
        self.genes_, self.components_, self.coords_, self.fitted_on = genes, k, P, m
        self.indices_ = self._neighbours(P)
        return self

    def _neighbours(self, P: np.ndarray) -> np.ndarray:
        n = P.shape[0]
        k = min(self.n_neighbors, n)
        own = np.arange(n)
        if n <= EXACT_MAX:
            from sklearn.neighbors import NearestNeighbors

            idx = NearestNeighbors(n_neighbors=k).fit(P).kneighbors(P, return_distance=False)
            # identical cells may come back in place of the cell itself: keep the others in distance order
            order = np.argsort(idx == own[:, None], axis=1, kind="stable")
            idx = np.column_stack([own, np.take_along_axis(idx, order, axis=1)[:, : k - 1]])
        else:
            from openTSNE.nearest_neighbors import Annoy

            others, _ = Annoy(P, k - 1, random_state=self.seed, knn_kwargs={"n_trees": ANNOY_TREES}).build()
            idx = np.column_stack([own, others])
        return idx.astype(np.int32)

    def smooth(self, values) -> np.ndarray:
        """The mean of ``values`` (one per query cell) over each cell's neighbourhood."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[0] != self.indices_.shape[0]:
            raise ValueError(f"{values.shape[0]} values for {self.indices_.shape[0]} cells")
        return values[self.indices_].mean(axis=1)

    def record(self) -> dict:
        return {"n_neighbors": self.n_neighbors, "n_components": int(self.components_), "n_genes": len(self.genes_),
                "fitted_on_cells": int(self.fitted_on),
                "space": "log1p(CP10k) over the reference genes; the query's most variable genes, scaled; PCA",
                "search": "exact" if self.indices_.shape[0] <= EXACT_MAX else "approximate (Annoy)"}


def in_blocks(N: sp.csr_matrix, block_size: int = 4096) -> Blocks:
    """``blocks`` for a matrix held in memory."""
    N = sp.csr_matrix(N)

    def blocks(rows=None):
        X = N if rows is None else N[rows]
        return (X[i : i + block_size] for i in range(0, X.shape[0], block_size))

    return blocks
