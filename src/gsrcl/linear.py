"""A linear classifier on the model input, pooled with a reference's own probabilities for cells far from it.

Under a shift between reference and query (another species, another chemistry) every query cell can lie about
as far from the right reference type as from a wrong one, and the genes of largest contrast in the reference are
the ones that moved. An RBF SVM, an encoder trained on reference neighbourhoods and a z-scored regression decide
by those few genes; a linear SVM on unscaled log1p values spreads its weight over many, and holds
(`docs/decisions.md`, "A cross-species task"). `LinearClassifier` is that SVM: scikit-learn's ``LinearSVC``
(C = 1) with Platt probabilities over 3 folds (``CalibratedClassifierCV``), fitted on the reference's cells
and stored as plain arrays, evaluated by our own code. `pool_by_novelty` gives it a say that grows with each
cell's novelty score (1: as far from its nearest type as a typical reference cell): none up to twice that
distance, all of it from three times.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import expit

__all__ = ["LinearClassifier", "pool_by_novelty", "FOLDS"]

log = logging.getLogger(__name__)

FOLDS = 3  # Platt's sigmoids fitted on held-out thirds, the three calibrated SVMs averaged (scikit-learn's default)
FIT_MAX_CELLS = 10_000  # above this many reference cells, fitted on a stratified sample of them (as the final SVM)
KIND = "linear_svc"
FORMAT = 1


class LinearClassifier:
    """A linear SVM with Platt probabilities per class over `FOLDS` folds, as plain arrays.

    Parameters
    ----------
    classes : array-like of str
        The cell types, sorted.
    folds : list of dict
        Per calibration fold: ``coef`` (m, genes) and ``intercept`` (m,) of the fold's SVM (one row for two
        classes), ``a`` and ``b`` (m,) its sigmoids, ``columns`` (m,) the class each row's probability goes to.

    Notes
    -----
    `predict_proba` equals ``CalibratedClassifierCV(LinearSVC(C=1), cv=3).predict_proba`` of the SVM it was
    made from (`fit`) to float rounding.
    """

    def __init__(self, classes, folds: list[dict[str, np.ndarray]]):
        self.classes_ = np.asarray(classes, dtype=object).astype(str)
        self.folds_ = [{k: np.asarray(v, dtype=np.int64 if k == "columns" else np.float64) for k, v in f.items()}
                       for f in folds]

    @classmethod
    def fit(cls, X, y, seed: int) -> "LinearClassifier":
        """Fit on the reference's cells.

        Parameters
        ----------
        X : scipy.sparse.csr_matrix
            The model input, cells x the reference's genes.
        y : array-like of str
            Each cell's type (at least two types, each with a cell in every fold).
        seed : int
            The SVM's seed (its coordinate descent's order) and the sample's.

        Returns
        -------
        LinearClassifier

        Notes
        -----
        Above `FIT_MAX_CELLS` cells, fitted on a stratified sample of that many
        (`gsrcl.methods.labels.stratified_subset`): liblinear holds its own float64 copy of the cells.
        """
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import LinearSVC

        from .methods.labels import stratified_subset

        y = np.asarray(y).astype(str)
        sub = stratified_subset(y, FIT_MAX_CELLS, seed)
        if sub is not None:
            X, y = X[sub], y[sub]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            cal = CalibratedClassifierCV(LinearSVC(C=1.0, random_state=seed), cv=FOLDS).fit(X, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.debug("linear SVM: liblinear stopped at its iteration limit in some folds (the fit is kept)")
        classes = [str(c) for c in cal.classes_]
        folds = []
        for c in cal.calibrated_classifiers_:
            est = c.estimator
            cols = np.searchsorted(classes, [str(k) for k in est.classes_])
            if len(classes) == 2:
                cols = cols[1:]  # one decision value, for the second class
            folds.append({"coef": est.coef_, "intercept": est.intercept_,
                          "a": [s.a_ for s in c.calibrators], "b": [s.b_ for s in c.calibrators], "columns": cols})
        return cls(classes, folds)

    def predict_proba(self, X) -> np.ndarray:
        """(n, K) probabilities of the cells ``X`` (model input over the reference's genes, sparse or dense)."""
        return self._predict(X, normalised=True)

    def predict_raw(self, X) -> np.ndarray:
        """(n, K) per-class Platt probabilities before each fold's rows are divided by their sum (one-vs-rest
        scores, as GsRCL's raw per-type scores are), averaged over the folds."""
        return self._predict(X, normalised=False)

    def _predict(self, X, normalised: bool) -> np.ndarray:
        n, k = X.shape[0], len(self.classes_)
        out = np.zeros((n, k))
        for f in self.folds_:
            dec = np.asarray(X @ f["coef"].T, dtype=np.float64) + f["intercept"]
            proba = np.zeros((n, k))
            for j, col in enumerate(f["columns"]):
                proba[:, col] = expit(-(f["a"][j] * dec[:, j] + f["b"][j]))
            if k == 2:
                proba[:, 0] = 1.0 - proba[:, 1]
            elif normalised:
                total = proba.sum(axis=1)[:, None]
                proba = np.divide(proba, total, out=np.full_like(proba, 1.0 / k), where=total != 0)
            proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
            out += proba
        return out / len(self.folds_)

    # --- state ---------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able config, arrays ``fold{i}.coef|intercept|a|b|columns``)."""
        arrays = {f"fold{i}.{key}": v for i, f in enumerate(self.folds_) for key, v in f.items()}
        config = {"kind": KIND, "format": FORMAT, "classes": self.classes_.tolist(), "folds": len(self.folds_),
                  "n_features": int(self.folds_[0]["coef"].shape[1])}
        return config, arrays

    @classmethod
    def from_state(cls, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray], n_genes: int) -> "LinearClassifier":
        """Rebuild from `state`; raises ValueError for a state this version cannot use or that does not fit
        ``n_genes`` genes."""
        if config.get("kind") != KIND or int(config.get("format", FORMAT)) > FORMAT:
            raise ValueError(f"not a linear classifier this version can read: kind={config.get('kind')!r}")
        classes = list(config.get("classes") or [])
        k, n_folds = len(classes), int(config.get("folds", 0))
        if k < 2 or n_folds < 1:
            raise ValueError(f"invalid linear classifier: {k} classes, {n_folds} folds")
        folds = []
        for i in range(n_folds):
            try:
                f = {key: np.asarray(arrays[f"fold{i}.{key}"]) for key in ("coef", "intercept", "a", "b", "columns")}
            except KeyError as exc:
                raise ValueError(f"invalid linear classifier: missing array {exc.args[0]}") from None
            m = f["coef"].shape[0] if f["coef"].ndim == 2 else -1
            if (m < 1 or f["coef"].shape[1] != n_genes or any(f[key].shape != (m,) for key in ("intercept", "a", "b",
                                                                                                 "columns"))
                    or f["columns"].dtype.kind not in "iu" or f["columns"].min() < 0 or f["columns"].max() >= k
                    or not all(np.isfinite(f[key]).all() for key in ("coef", "intercept", "a", "b"))):
                raise ValueError(f"invalid linear classifier: fold {i} does not fit {k} classes and {n_genes} genes")
            folds.append(f)
        unexpected = set(arrays) - {f"fold{i}.{key}" for i in range(n_folds)
                                    for key in ("coef", "intercept", "a", "b", "columns")}
        if unexpected:
            raise ValueError(f"invalid linear classifier: unexpected arrays {sorted(unexpected)[:3]}")
        return cls(classes, folds)


NOVELTY_FROM = 2.0  # the novelty score at which the linear classifier starts to count (twice a typical cell's)
NOVELTY_SPAN = 1.0  # and the further score it takes to count alone


def pool_by_novelty(proba: np.ndarray, linear: np.ndarray, novelty: np.ndarray) -> np.ndarray:
    """``(1 - w) * proba + w * linear`` (probabilities, or GsRCL's raw scores and `LinearClassifier.predict_raw`)
    with ``w = clip((novelty - 2) / 1, 0, 1)`` for each cell
    (`NOVELTY_FROM`, `NOVELTY_SPAN`): the model alone up to twice a typical reference cell's novelty, the linear
    classifier alone from three times."""
    w = np.clip((np.asarray(novelty, dtype=np.float64) - NOVELTY_FROM) / NOVELTY_SPAN, 0.0, 1.0)[:, None]
    return (1.0 - w) * proba + w * linear
