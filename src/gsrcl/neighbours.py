"""Each query cell's nearest cells in the query's own principal components, to read a score over neighbourhoods.

A cell of a type the reference lacks can look like a known cell on its own (a CD8 T cell next to a reference of
CD4 T and NK cells), but such cells come in groups, and the query's own structure puts them next to each other.
The mean of a per-cell score over the cell's ``n_neighbors`` nearest query cells (itself included) is the score of
its neighbourhood: CellTypist's majority voting reads labels over query clusters for the same reason. Averaging
amplifies what the per-cell score says, wrong or right (docs/decisions.md gives the measurements).

The space: log1p(CP10k) over the query's own genes (all of them, not only the reference's), the ``n_genes``
genes of highest variance in the query, each scaled to unit variance over the query, then the first
``n_components`` principal components. The PCA is exact and streamed: one pass for the genes' variances
(`GeneMoments`, which prediction accumulates during its own pass over the query), one for the covariance of the
chosen genes, one to project, so memory holds n x ``n_components`` values rather than the matrix. Above
``FIT_MAX_CELLS`` cells the genes and components come from a seeded random subset (`fit_rows`); every cell is
projected. Neighbours are exact (scikit-learn) up to ``EXACT_MAX`` cells and approximate above (Annoy, as
openTSNE ships it, ``ANNOY_TREES`` trees).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import numpy as np
import scipy.sparse as sp

log = logging.getLogger("gsrcl.neighbours")

N_NEIGHBORS = 15  # scanpy's default for its neighbour graph
N_COMPONENTS = 30
N_GENES = 2000
SCALE_FLOOR = 1e-3  # added to each gene's standard deviation
EXACT_MAX = 100_000  # above this many cells, approximate neighbours (Annoy)
ANNOY_TREES = 10  # fewer than openTSNE's 50: the averaged score ranks cells as well, and they build faster
FIT_MAX_CELLS = 50_000  # above this many cells, genes and components come from a seeded random subset
MIN_CELLS_PER_NEIGHBOUR = 4  # a query needs n_neighbors x this many cells, else neighbourhoods span most of it

Blocks = Callable[[np.ndarray | None], Iterable[sp.csr_matrix]]
Progress = Callable[[str, int], Any]  # (pass name, cells) -> an object with update(n) and close(), e.g. tqdm


def check_neighbours(n) -> int:
    """The ``neighbours`` setting of prediction, checked.

    Parameters
    ----------
    n : int
        0 (off: each cell's score on its own) or a neighbourhood size of at least 2 cells.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For anything else (1, a negative number, a fraction, text).
    """
    try:
        value = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"neighbours must be a whole number of cells (0 = off), not {n!r}") from None
    if value != n or value < 0 or value == 1:
        raise ValueError(f"neighbours must be 0 (off) or at least 2 cells, not {n!r}")
    return value


def min_cells(n_neighbors: int = N_NEIGHBORS) -> int:
    """The fewest query cells that neighbourhoods of ``n_neighbors`` cells are computed for."""
    return int(n_neighbors) * MIN_CELLS_PER_NEIGHBOUR


def fit_rows(n_cells: int, seed: int = 0) -> np.ndarray | None:
    """The sorted indices of the cells the genes and components are chosen from: a seeded random
    ``FIT_MAX_CELLS`` of them above that many cells, else None (all of them)."""
    n = int(n_cells)
    if n <= FIT_MAX_CELLS:
        return None
    return np.sort(np.random.default_rng(int(seed)).choice(n, FIT_MAX_CELLS, replace=False))


class GeneMoments:
    """Per-gene sums and sums of squares over cells, accumulated block by block: the variance pass of the
    neighbourhoods' PCA. Feed it the same values, in the same blocks, as ``QueryNeighbours.fit`` would read."""

    def __init__(self):
        self.m, self.total, self.squares = 0, None, None

    def add(self, N: sp.csr_matrix) -> None:
        """Add the cells of ``N`` (cells x genes, log1p CP10k)."""
        self.merge(self.partial(N))

    @staticmethod
    def partial(N: sp.csr_matrix) -> tuple[int, np.ndarray, np.ndarray]:
        """The cells, per-gene sums and sums of squares of one block ``N``: what `merge` adds."""
        s = np.asarray(N.sum(axis=0), dtype=np.float64).ravel()
        q = np.asarray(N.multiply(N).sum(axis=0), dtype=np.float64).ravel()
        return N.shape[0], s, q

    def merge(self, part: tuple[int, np.ndarray, np.ndarray]) -> None:
        """Add one block's `partial`; blocks merged in the query's order give the same sums as `add`."""
        m, s, q = part
        self.m += int(m)
        self.total, self.squares = (s, q) if self.total is None else (self.total + s, self.squares + q)


def _counted(blocks: Iterable[sp.csr_matrix], progress: Progress | None, name: str, total: int):
    """``blocks`` with a progress bar named ``name`` that counts their cells."""
    bar = progress(name, total) if progress is not None else None
    try:
        for N in blocks:
            if bar is not None:
                bar.update(N.shape[0])
            yield N
    finally:
        if bar is not None:
            bar.close()


class QueryNeighbours:
    """Each query cell's nearest query cells, then ``smooth(values)`` for any per-cell score.

    Parameters
    ----------
    n_neighbors : int
        Cells per neighbourhood, the cell itself included (at least 2).
    n_components : int
        Principal components of the space.
    n_genes : int
        The query's most variable genes the components are computed from.
    seed : int
        Seeds the subset of `fit_rows` and Annoy.

    Attributes
    ----------
    indices_ : ndarray of shape (n, n_neighbors)
        Each cell's neighbourhood, the cell itself first.
    coords_ : ndarray of shape (n, components_)
        The cells in the components.
    genes_ : ndarray
        The columns chosen.
    components_ : int
    fitted_on : int
        The number of cells the genes and components were chosen from.
    """

    def __init__(self, n_neighbors: int = N_NEIGHBORS, n_components: int = N_COMPONENTS, n_genes: int = N_GENES,
                 seed: int = 0):
        if int(n_neighbors) < 2:
            raise ValueError(f"a neighbourhood needs at least 2 cells, not {n_neighbors}")
        self.n_neighbors = int(n_neighbors)
        self.n_components = int(n_components)
        self.n_genes = int(n_genes)
        self.seed = int(seed)

    def fit(self, blocks: Blocks, n_cells: int, *, moments: GeneMoments | None = None,
            progress: Progress | None = None) -> "QueryNeighbours":
        """Find the neighbourhoods of the ``n_cells`` query cells.

        Parameters
        ----------
        blocks : callable
            ``blocks(rows)`` yields the log1p CP10k values (CSR, cells x genes) of the query's cells in order,
            every time it is called: of all of them (``rows=None``) or of those at the sorted indices ``rows``.
        n_cells : int
            At least ``min_cells(n_neighbors)``.
        moments : GeneMoments, optional
            The variance pass done already, over the cells ``fit_rows(n_cells, seed)``; then ``blocks`` is read
            twice, else three times.
        progress : callable, optional
            ``progress(pass name, cells)`` opens a progress bar for each pass.

        Returns
        -------
        QueryNeighbours
            self, fitted.

        Raises
        ------
        ValueError
            When there are too few cells, or the blocks give another number of cells than expected.
        """
        rows = self.fit_rows(n_cells)
        m_expected = int(n_cells) if rows is None else len(rows)
        if moments is None:
            moments = GeneMoments()
            for N in _counted(blocks(rows), progress, "neighbours: gene variances", m_expected):
                moments.add(N)
        self.choose_genes(moments, m_expected)
        for N in _counted(blocks(rows), progress, "neighbours: covariance", m_expected):
            self.add_covariance(N[:, self.genes_])
        self.fit_components()
        P = [self.project(N) for N in _counted(blocks(None), progress, "neighbours: projection", int(n_cells))]
        return self.fit_neighbours(np.concatenate(P) if P else np.empty((0, self.components_), np.float32))

    # The steps of `fit`, in order, for a caller that reads the blocks elsewhere (`gsrcl.distributed`): each
    # block's part is computed alone, and the covariance is added up in the query's order, as `fit` does.

    def fit_rows(self, n_cells: int) -> np.ndarray | None:
        """Check ``n_cells``; the cells the genes and components are chosen from (`fit_rows`; None: all).

        Raises
        ------
        ValueError
            When there are too few cells.
        """
        n = int(n_cells)
        if n < min_cells(self.n_neighbors):
            raise ValueError(f"{n} cells are too few for neighbourhoods of {self.n_neighbors} "
                             f"(at least {min_cells(self.n_neighbors)} are needed)")
        self.n_cells_ = n
        return fit_rows(n, self.seed)

    def choose_genes(self, moments: GeneMoments, m_expected: int) -> np.ndarray:
        """The genes of highest variance (``genes_``), from the variance pass over the ``m_expected`` cells.

        Raises
        ------
        ValueError
            When ``moments`` counted another number of cells.
        """
        m, total, squares = moments.m, moments.total, moments.squares
        if m != m_expected:
            raise ValueError(f"the blocks gave {m} cells, not the {m_expected} expected")
        mean = total / m
        var = np.maximum(squares / m - mean ** 2, 0.0)
        genes = np.sort(np.argsort(-var, kind="stable")[: min(self.n_genes, int(np.sum(var > 0)) or 1)])
        self.genes_, self.fitted_on = genes, m
        self._mu, self._scale = mean[genes], np.sqrt(var[genes]) + SCALE_FLOOR
        self._cross = np.zeros((len(genes), len(genes)))
        return genes

    def add_covariance(self, G: sp.csr_matrix) -> None:
        """Add one block of the chosen cells, restricted to ``genes_`` (cells x len(genes_)), in the query's order."""
        G = G.toarray()  # dense: BLAS is far faster than a sparse product with ~2000 genes
        self._cross += G.T @ G

    def fit_components(self) -> None:
        """The principal components, once every block is in `add_covariance`; then `project` works."""
        m, mu, scale = self.fitted_on, self._mu, self._scale
        corr = (self._cross / m - np.outer(mu, mu)) / np.outer(scale, scale)
        del self._cross
        k = max(1, min(self.n_components, len(self.genes_), m - 1))
        values, vectors = np.linalg.eigh(corr)
        vectors = vectors[:, np.argsort(values)[::-1][:k]]
        self.components_ = k
        self._weights = vectors / scale[:, None]  # the scaling folded in: P = N[:, genes] @ weights - offset
        self._offset = (mu / scale) @ vectors

    def project(self, N: sp.csr_matrix) -> np.ndarray:
        """The cells of one block ``N`` (log1p CP10k, all query genes) in the components, float32: each row
        on its own, so blocks may be projected anywhere and concatenated."""
        return (np.asarray(N[:, self.genes_] @ self._weights) - self._offset).astype(np.float32)

    def fit_neighbours(self, P: np.ndarray) -> "QueryNeighbours":
        """Each cell's neighbourhood, from every cell's coordinates ``P`` (the blocks' `project`, in order).

        Raises
        ------
        ValueError
            When ``P`` holds another number of cells than `fit_rows` was given.
        """
        if P.shape[0] != self.n_cells_:
            raise ValueError(f"the blocks gave {P.shape[0]} cells, not the {self.n_cells_} expected")
        self.coords_ = P
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
        """What was done, for ``uns['gsrcl']['neighbours']``."""
        return {"n_neighbors": self.n_neighbors, "n_components": int(self.components_), "n_genes": len(self.genes_),
                "fitted_on_cells": int(self.fitted_on),
                "space": "log1p(CP10k) over the query's own genes; its most variable genes, scaled; PCA",
                "search": "exact" if self.indices_.shape[0] <= EXACT_MAX else "approximate (Annoy)"}


def in_blocks(N: sp.csr_matrix, block_size: int = 4096) -> Blocks:
    """``blocks`` (as `QueryNeighbours.fit` reads them) for a matrix held in memory."""
    N = sp.csr_matrix(N)

    def blocks(rows=None):
        X = N if rows is None else N[rows]
        return (X[i : i + block_size] for i in range(0, X.shape[0], block_size))

    return blocks
