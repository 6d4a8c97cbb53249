"""The RBF SVMs a method puts on its embeddings: the validation score of a checkpoint, the final SVC, and the
record and checks of a fitted SVC."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .labels import stratified_subset
from .state import jsonable


def validation_score(selection: str, emb_tr, y_tr, emb_val, y_val, seed: int, cv: int = 5) -> float:
    """The score of a checkpoint: the validation MCC of a classifier fitted on the training embeddings.

    Parameters
    ----------
    selection : {"quick", "grid"}
        ``"quick"``: one SVC (``gsrcl.svm.quick_score``), cheap enough to run during training (the default
        presets). ``"grid"``: the original's procedure: grid-search an RBF SVC over the paper grid with
        ``cv``-fold stratified CV and the MCC scorer on the training embeddings, then the MCC of the best SVC's
        predictions on the validation cells.
    emb_tr, y_tr, emb_val, y_val
        Training and validation embeddings and labels.
    seed : int
        Seed of the CV folds.

    Returns
    -------
    float
        The MCC; NaN when there are no validation cells.

    Raises
    ------
    ValueError
        An unknown ``selection``.
    """
    from sklearn.metrics import matthews_corrcoef

    if len(y_val) == 0:
        return float("nan")
    if selection == "quick":
        from ..svm import quick_score

        return float(quick_score(emb_tr, y_tr, emb_val, y_val, scoring="mcc"))
    if selection == "grid":
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from sklearn.svm import SVC

        from ..svm import PAPER_GRID

        folds = min(cv, int(np.unique(y_tr, return_counts=True)[1].min()))
        if folds < 2:
            search = SVC(kernel="rbf").fit(emb_tr, y_tr)
        else:
            search = GridSearchCV(
                SVC(kernel="rbf"),
                _sklearn_grid(PAPER_GRID),
                scoring="matthews_corrcoef",
                cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                n_jobs=1,
            ).fit(emb_tr, y_tr)
        return float(matthews_corrcoef(y_val, search.predict(emb_val)))
    raise ValueError(f"selection must be 'quick' or 'grid', not {selection!r}")


def _sklearn_grid(grid) -> Any:
    """PAPER_GRID as a GridSearchCV parameter grid (it may be a dict of lists or a list of (C, gamma))."""
    if isinstance(grid, dict):
        return {k: list(v) for k, v in grid.items()}
    pairs = list(grid)
    if pairs and isinstance(pairs[0], dict):
        return [{k: [v] for k, v in p.items()} for p in pairs]
    return [{"C": [c], "gamma": [g]} for c, g in pairs]


GRID_JOBS_MIN_CELLS = 1000  # below this, starting worker processes costs more than the fits
FINAL_SVM_MAX_CELLS = 10_000  # a final SVM is fitted on a stratified subset of at most this many cells


def final_svm_cells(y: np.ndarray, seed: int) -> np.ndarray | None:
    """The cells `fit_final_svc` fits on above `FINAL_SVM_MAX_CELLS` (a stratified subset); None: all of them.
    A caller that makes the inputs of those cells only passes ``capped=True``."""
    return stratified_subset(y, FINAL_SVM_MAX_CELLS, seed)


def fit_final_svc(emb: np.ndarray, y: np.ndarray, cv: int, seed: int, grid_cells: int | None = None,
                  ties: str = "first", distances: bool | np.ndarray = False, capped: bool = False):
    """The final RBF SVC with Platt probabilities, as a ``gsrcl.svm.PortableSVC``.

    C and gamma are chosen by stratified ``cv``-fold CV over the paper grid (MCC; fewer folds when a class
    has fewer cells), ties between settings broken by ``ties`` (``gsrcl.svm.fit_svc``).

    Parameters
    ----------
    emb, y : numpy.ndarray
        The cells' inputs (n, d) and labels.
    cv : int
        Folds of the CV.
    seed : int
        Seed of the folds, of the subset and of libsvm's Platt CV.
    ties : {"first", "largest_c"}
        Which of the settings tied on the best CV score is kept (``gsrcl.svm.fit_svc``).
    grid_cells : int, optional
        Run the grid search on a stratified subset of this many cells, then fit the chosen setting on all
        cells: the grid's cost grows with the square of the cells. Above `FINAL_SVM_MAX_CELLS` cells, "all" is
        a stratified subset of that many (each type's share kept).
    distances : bool or numpy.ndarray
        Run the grid and the final fit on one matrix of squared distances (``gsrcl.svm.fit_svc``), for inputs
        of many features; an array is that matrix for ``emb``'s rows, sliced here for the grid's subset.
    capped : bool
        ``emb`` and ``y`` are already `final_svm_cells` of the cells: no subset is drawn again.

    Returns
    -------
    gsrcl.svm.PortableSVC
        With ``best_params_`` and ``cv_score_``.
    """
    from ..svm import PAPER_GRID, fit_setting, fit_svc

    cap = None if capped else final_svm_cells(y, seed)
    if cap is not None:  # an RBF SVM's cost grows with the square of its cells
        emb, y = emb[cap], y[cap]
        if isinstance(distances, np.ndarray):
            distances = distances[np.ix_(cap, cap)]
    smallest = int(np.unique(y, return_counts=True)[1].min())
    folds = max(2, min(int(cv), smallest))
    sub = stratified_subset(y, grid_cells, seed)
    # the grid's fits are independent: one per torch thread (the encoder is idle meanwhile); same result
    jobs = max(1, torch.get_num_threads()) if (len(y) if sub is None else len(sub)) >= GRID_JOBS_MIN_CELLS else 1
    if sub is None:
        return fit_svc(emb, y, grid=PAPER_GRID, cv=folds, scoring="mcc", seed=seed, n_jobs=jobs, ties=ties,
                       distances=distances)
    chosen = fit_svc(emb[sub], y[sub], grid=PAPER_GRID, cv=folds, scoring="mcc", seed=seed, n_jobs=jobs,
                     probability=False, ties=ties,
                     distances=distances[np.ix_(sub, sub)] if isinstance(distances, np.ndarray) else distances)
    final = fit_setting(emb, y, chosen.best_params_, seed=seed, distances=distances)
    final.cv_score_ = chosen.cv_score_
    return final


def svc_params(svc) -> dict[str, Any]:
    """The SVM's chosen C and gamma and its CV MCC (None when unknown), JSON-able, for the manifest."""
    cv = getattr(svc, "cv_score_", float("nan"))
    return jsonable({**dict(getattr(svc, "best_params_", {}) or {}), "cv_mcc": None if math.isnan(cv) else cv})


def column_order(svc, labels: list) -> np.ndarray:
    """The column of ``svc.classes_`` of each label in ``labels`` (compared as str)."""
    classes = [c.item() if isinstance(c, np.generic) else c for c in svc.classes_]
    classes = [str(c) for c in classes]
    return np.array([classes.index(str(t)) for t in labels])


def check_svc(svc, labels: list, n_features: int, what: str) -> None:
    """Check a loaded SVC against its model: the classes ``labels`` and ``n_features`` inputs.

    Raises
    ------
    ValueError
        Naming ``what``, when the classes or the number of features differ.
    """
    classes = sorted(str(c) for c in svc.classes_)
    if classes != sorted(str(t) for t in labels):
        raise ValueError(f"{what} has classes {classes[:5]}, expected {sorted(map(str, labels))[:5]}")
    n_in = getattr(svc, "n_features_in_", None)
    if n_in is None:
        sv = getattr(svc, "support_vectors_", None)
        n_in = None if sv is None else np.asarray(sv).shape[1]
    if n_in is not None and int(n_in) != int(n_features):
        raise ValueError(f"{what} takes {n_in} features, its input has {n_features}")
