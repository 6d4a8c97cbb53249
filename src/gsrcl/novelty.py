"""How unlike every reference cell type a cell is: a score for cells of types the reference lacks.

The probabilities of a classifier say which known type a cell is most like, not whether it is like any of them:
a cell of an unseen type often gets a confident label. The novelty score measures that second thing, in the
reference's own gene space and independently of the method: the cells' log1p(CP10k) values, each gene scaled
by its spread over the reference cells, projected on the reference's first principal components; the score is
the Mahalanobis distance to the nearest reference type's centroid (covariance pooled within types), divided by
the median of that distance over the reference cells, each measured by a model fitted without it (5-fold): 1 is
a typical reference cell seen as a query cell is seen. The percentiles (``threshold``, the ``novelty_cutoff`` of
prediction) are of those held-out scores too, because the components and covariance fit the reference cells'
own noise, so their in-sample distances run shorter than a query cell's (docs/decisions.md).

It is fitted at training time on the reference cells' model input (`gsrcl.model_input.ModelInput`, which
gives its log1p CP10k) and stored with the reference as plain arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


N_COMPONENTS = 50
SCALE_FLOOR = 0.01  # added to each gene's standard deviation, so genes silent in the reference stay finite
N_QUANTILES = 1001  # the reference cells' score distribution, for percentiles
CALIBRATION_FOLDS = 5  # the median and percentiles come from reference cells scored by models fitted without them
FIT_MAX_CELLS = 10_000  # above this many reference cells, the score is fitted on a stratified sample of them
_DENSE_MAX = 20_000_000  # below this many matrix entries the PCA runs on a dense copy (exact SVD)


def _log1p_cp10k(Xm, model_input) -> sp.csr_matrix:
    """The score's space, log1p CP10k (CSR float32), from the model input ``Xm``: by ``model_input``, or for
    ``Xm`` on the natural log1p scale without depth normalisation when None."""
    from .model_input import ModelInput

    return (model_input or ModelInput("log1p")).novelty_input(Xm)


class NoveltyModel:
    """``fit(Xm, labels)`` on the reference's model input, then ``score(Xm)`` for any cells on the same genes.

    Parameters
    ----------
    n_components : int
        Principal components kept (fewer for a reference with fewer cells or genes).
    seed : int
        The seed of the sparse PCA and of the calibration folds.
    """

    def __init__(self, n_components: int = N_COMPONENTS, seed: int = 0):
        self.n_components = int(n_components)
        self.seed = int(seed)

    # --- fitting -------------------------------------------------------------------------------------
    def fit(self, Xm, labels, model_input=None) -> "NoveltyModel":
        """Fit the score on reference cells.

        Parameters
        ----------
        Xm : scipy.sparse matrix
            The reference cells' model input (cells x reference genes). Above `FIT_MAX_CELLS` cells, a
            stratified sample of that many (each type's share kept, `gsrcl.methods.labels.stratified_subset`).
        labels : array-like of str
            Each cell's type.
        model_input : gsrcl.model_input.ModelInput, optional
            The reference's model input, which turns ``Xm`` into log1p CP10k (`ModelInput.novelty_input`);
            None: ``Xm`` is natural log1p values that are not depth-normalised.

        Returns
        -------
        NoveltyModel
            self.

        Raises
        ------
        ValueError
            For fewer than 2 cells or 2 genes.
        """
        from .methods.labels import stratified_subset

        labels = np.asarray(labels).astype(str)
        sub = stratified_subset(labels, FIT_MAX_CELLS, self.seed)
        if sub is not None:  # the PCAs' cost grows with the cells; a sample keeps each type's share
            Xm, labels = Xm[sub], labels[sub]
        N = _log1p_cp10k(Xm, model_input)
        if min(N.shape) < 2:
            raise ValueError(f"the novelty score needs at least 2 cells and 2 genes, not {N.shape}")
        self._fit_space(N, labels)
        held = self._held_out_distances(N, labels)
        self.calibration_ = f"held-out, {CALIBRATION_FOLDS}-fold" if held is not None else "reference cells"
        d = held if held is not None else self._distance(self._project(N))
        self.median_ = float(np.median(d)) or 1.0
        self.quantiles_ = np.quantile(d / self.median_, np.linspace(0.0, 1.0, N_QUANTILES))
        return self

    def _fit_space(self, N: sp.csr_matrix, labels: np.ndarray) -> None:
        """The scaled-gene PCA, the type centroids and the pooled within-type precision, from cells ``N``."""
        from sklearn.decomposition import PCA
        from sklearn.utils.sparsefuncs import mean_variance_axis

        k = min(self.n_components, min(N.shape) - 1)
        _, var = mean_variance_axis(N, axis=0)
        scale = np.sqrt(np.maximum(var, 0.0)) + SCALE_FLOOR
        Z = N @ sp.diags(1.0 / scale)
        if Z.shape[0] * Z.shape[1] <= _DENSE_MAX:
            pca = PCA(k, svd_solver="full").fit(Z.toarray())
        else:  # sparse input, centred implicitly
            pca = PCA(k, svd_solver="arpack", random_state=self.seed).fit(Z.tocsr())
        # the gene scaling folded into the components: P = N @ components.T - offset
        self.components_ = (pca.components_ / scale[None, :]).astype(np.float32)
        self.offset_ = (pca.mean_ @ pca.components_.T).astype(np.float64)
        P = self._project(N)
        self.cell_types_ = sorted(set(labels))
        self.centroids_ = np.stack([P[labels == t].mean(axis=0) for t in self.cell_types_])
        within = P - self.centroids_[np.searchsorted(self.cell_types_, labels)]
        dof = max(len(labels) - len(self.cell_types_), 1)
        cov = within.T @ within / dof
        ridge = 1e-6 * np.trace(cov) / k + 1e-12
        self.precision_ = np.linalg.inv(cov + ridge * np.eye(k))

    def _held_out_distances(self, N: sp.csr_matrix, labels: np.ndarray) -> np.ndarray | None:
        """Each cell's distance in a model fitted without it (``CALIBRATION_FOLDS``-fold, stratified; why: the
        module docstring), or None for a reference too small to split. Cells whose type is missing from their
        fold's training cells are left out."""
        import warnings

        from sklearn.model_selection import StratifiedKFold

        k = self.components_.shape[0]
        if len(labels) * (CALIBRATION_FOLDS - 1) // CALIBRATION_FOLDS <= k + 1:
            return None  # a fold would have fewer components, and distances in fewer dimensions run shorter
        held = np.full(len(labels), np.nan)
        folds = StratifiedKFold(CALIBRATION_FOLDS, shuffle=True, random_state=self.seed)
        with warnings.catch_warnings():  # types with fewer cells than folds: their cells are simply spread
            warnings.simplefilter("ignore", UserWarning)
            try:
                splits = list(folds.split(np.zeros(len(labels)), labels))
            except ValueError:  # every type has fewer cells than folds
                return None
        for train, test in splits:
            fold = NoveltyModel(k, self.seed)
            fold._fit_space(N[train], labels[train])
            seen = np.isin(labels[test], fold.cell_types_)
            held[test[seen]] = fold._distance(fold._project(N[test[seen]]))
        held = held[np.isfinite(held)]
        return held if len(held) else None

    # --- scoring -------------------------------------------------------------------------------------
    def _project(self, N: sp.csr_matrix) -> np.ndarray:
        return np.asarray(N @ self.components_.T, dtype=np.float64) - self.offset_

    def _distance(self, P: np.ndarray) -> np.ndarray:
        best = np.full(P.shape[0], np.inf)
        for c in self.centroids_:
            diff = P - c
            best = np.minimum(best, np.einsum("ij,jk,ik->i", diff, self.precision_, diff))
        return np.sqrt(np.maximum(best, 0.0))

    def score(self, Xm, model_input=None) -> np.ndarray:
        """The novelty score of each cell: rows of the model input, reference genes in order; ``model_input``
        as in `fit`."""
        N = _log1p_cp10k(Xm, model_input)
        return self._distance(self._project(N)) / self.median_

    def percentile(self, score) -> np.ndarray:
        """The share (0-100) of reference cells that score below ``score``."""
        return np.interp(np.asarray(score, dtype=np.float64), self.quantiles_, np.linspace(0.0, 100.0, N_QUANTILES))

    def threshold(self, percentile: float) -> float:
        """The score of the reference cells' ``percentile``-th percentile."""
        return float(np.interp(float(percentile), np.linspace(0.0, 100.0, N_QUANTILES), self.quantiles_))

    # --- storage -------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {"n_components": int(self.components_.shape[0]), "seed": self.seed, "median": self.median_,
                  "cell_types": list(self.cell_types_), "scale_floor": SCALE_FLOOR,
                  "calibration": self.calibration_,
                  "input": "log1p(CP10k) of the model input, genes scaled by their reference standard deviation"}
        arrays = {"components": self.components_, "offset": self.offset_, "centroids": self.centroids_,
                  "precision": self.precision_, "quantiles": self.quantiles_}
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray], n_genes: int) -> "NoveltyModel":
        k = int(config["n_components"])
        types = [str(t) for t in config["cell_types"]]
        expected = {"components": (k, n_genes), "offset": (k,), "centroids": (len(types), k),
                    "precision": (k, k), "quantiles": (N_QUANTILES,)}
        if set(arrays) != set(expected):
            raise ValueError(f"novelty arrays {sorted(set(arrays) ^ set(expected))[:3]} are missing or unexpected")
        for key, shape in expected.items():
            if tuple(arrays[key].shape) != shape:
                raise ValueError(f"novelty array {key!r} has shape {arrays[key].shape}, expected {shape}")
        model = cls(n_components=k, seed=int(config.get("seed", 0)))
        model.components_ = np.asarray(arrays["components"], dtype=np.float32)
        model.offset_ = np.asarray(arrays["offset"], dtype=np.float64)
        model.centroids_ = np.asarray(arrays["centroids"], dtype=np.float64)
        model.precision_ = np.asarray(arrays["precision"], dtype=np.float64)
        model.quantiles_ = np.asarray(arrays["quantiles"], dtype=np.float64)
        model.cell_types_ = types
        model.median_ = float(config["median"])
        model.calibration_ = str(config.get("calibration", "reference cells"))  # references before held-out scores
        if not model.median_ > 0:
            raise ValueError(f"the novelty median must be positive, not {model.median_}")
        return model
