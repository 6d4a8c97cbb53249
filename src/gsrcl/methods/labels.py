"""The reference's labels and the splits made from them: label checks, rare classes, the per-type cap, the
validation split, stratified subsets, and ``fit_inputs``, the training and validation data of a method's ``fit``, checked and
split."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import LabelsError, ValuesError
from .encoding import Rows, as_csr, rows_of

log = logging.getLogger("gsrcl.methods")

MIN_VALIDATION_CELLS = 10  # a class with fewer cells goes to training only (no validation cells)
MIN_CELLS = 5  # a class with fewer cells is dropped before training (5 = the folds of the SVM's CV)
# Prediction calls a cell it cannot assign this (gsrcl.cutoff.UNASSIGNED, repeated here: methods/ imports nothing
# above it); a reference type of that name would be two categories of one name in every prediction.
RESERVED_LABEL = "Unassigned"


def check_labels(y, n: int | None = None) -> np.ndarray:
    """The labels as an array of str, stripped of surrounding blanks.

    Parameters
    ----------
    y : array-like or pandas.Series
        One label per cell.
    n : int, optional
        The number of cells the labels must match.

    Raises
    ------
    LabelsError
        When the count differs from ``n``, no label is given, a label is missing (NaN, None, empty), a label is
        ``Unassigned`` in any case (`RESERVED_LABEL`: prediction's name for a cell it cannot assign), or a label
        holds a control character (a tab or a line break would break ``legend.txt`` and the CSV outputs).
    """
    s = pd.Series(np.asarray(y, dtype=object) if not isinstance(y, pd.Series) else y.to_numpy(dtype=object))
    if n is not None and len(s) != n:
        raise LabelsError(f"{len(s)} labels were given for {n} cells: give exactly one label per cell")
    if len(s) == 0:
        raise LabelsError("no labels were given: give one label per cell")
    missing = s.isna().to_numpy()
    text = s.astype(str).str.strip()
    empty = missing | (text == "").to_numpy() | text.str.lower().isin(["nan", "none"]).to_numpy()
    if empty.any():
        raise LabelsError(
            f"{int(empty.sum())} of {len(s)} cells have no label (NaN or empty, e.g. cell "
            f"#{int(np.flatnonzero(empty)[0])}): "
            "give every cell a label or remove those cells before training"
        )
    reserved = (text.str.casefold() == RESERVED_LABEL.casefold()).to_numpy()
    if reserved.any():
        raise LabelsError(
            f"{int(reserved.sum())} of {len(s)} cells are labelled {RESERVED_LABEL!r} (in some case), the name "
            "prediction gives cells it cannot assign: relabel them (e.g. 'Unknown') or drop them before training"
        )
    control = text.str.contains(r"[\x00-\x1f\x7f]", regex=True).to_numpy()
    if control.any():
        first = text.iloc[int(np.flatnonzero(control)[0])]
        raise LabelsError(
            f"{int(control.sum())} of {len(s)} cells have a label holding a tab, line break or other control "
            f"character (e.g. {first!r}): remove those characters from the labels before training"
        )
    return text.to_numpy(dtype=str)


def drop_rare_classes(y: np.ndarray, min_cells: int = MIN_CELLS) -> tuple[np.ndarray, dict[str, int]]:
    """Drop the classes with fewer than ``min_cells`` cells, with a warning naming them.

    Such a class can neither be split for validation nor fill the folds of the SVM's cross-validation
    (docs/methods.md §5.21).

    Returns
    -------
    keep : numpy.ndarray of bool
        Mask of the cells kept.
    dropped : dict of str to int
        The classes dropped and their numbers of cells.

    Raises
    ------
    LabelsError
        When fewer than two classes are left.
    """
    names, counts = np.unique(y, return_counts=True)
    dropped = {str(k): int(c) for k, c in zip(names, counts) if c < min_cells}
    keep = ~np.isin(y, list(dropped))
    if dropped:
        log.warning(
            "warning: dropped %d cell type(s) with fewer than %d cells: %s",
            len(dropped), min_cells, ", ".join(f"{k} ({c})" for k, c in dropped.items()),
        )
    left = len(names) - len(dropped)
    if left < 2:
        raise LabelsError(
            f"only {left} cell type(s) have at least {min_cells} cells ({len(names)} types in all): a reference "
            "needs at least two; add cells or use another labels column"
        )
    return keep, dropped


def split_validation(
    y: np.ndarray, size: float, seed: int, min_class: int = MIN_VALIDATION_CELLS
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split into training and validation cells.

    Each class with at least ``min_class`` cells gives ``size`` of its cells (at least one, and at least one
    left for training) to validation; smaller classes go to training only.

    Returns
    -------
    train, val : numpy.ndarray of int
        Sorted indices of the training and the validation cells.

    Raises
    ------
    ValueError
        When ``size`` is not in [0, 1).
    """
    if not 0 <= size < 1:
        raise ValueError(f"validation_size must be in [0, 1), not {size}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        n_val = 0 if len(idx) < min_class or size == 0 else min(max(1, int(round(size * len(idx)))), len(idx) - 1)
        idx = rng.permutation(idx)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def cap_per_type(y: np.ndarray, cap: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of the cells kept when each type keeps at most ``cap`` cells, drawn at random (seeded)
    from the larger types; the smaller types keep all theirs.

    Returns None when ``cap`` is None or no type has more than ``cap`` cells: use them all."""
    names, counts = np.unique(y, return_counts=True)
    if cap is None or counts.max(initial=0) <= cap:
        return None
    rng = np.random.default_rng(seed)
    picked = [np.flatnonzero(y == cls) if count <= cap else rng.choice(np.flatnonzero(y == cls), cap, replace=False)
              for cls, count in zip(names, counts)]
    return np.sort(np.concatenate(picked))


def stratified_subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of about ``n`` cells with each class's share kept (at least min(its cells, 5) of each).

    Returns None when ``n`` is None or there are no more than ``n`` cells: use them all."""
    if n is None or len(y) <= n:
        return None
    rng = np.random.default_rng(seed)
    names, counts = np.unique(y, return_counts=True)
    picked = []
    for cls, count in zip(names, counts):
        take = min(count, max(5, int(round(n * count / len(y)))))
        picked.append(rng.permutation(np.flatnonzero(y == cls))[:take])
    return np.sort(np.concatenate(picked))


def _valid_values(X) -> bool:
    """Whether every stored value of CSR ``X`` (or of the rows of `Rows` ``X``, a block at a time) is finite and
    not negative."""
    blocks = X.blocks() if isinstance(X, Rows) else (X,)
    return all(np.isfinite(b.data).all() and not (b.data < 0).any() for b in blocks)


def fit_inputs(X, y, X_val, y_val, validation_size: float, seed: int):
    """The training and validation data of ``fit``, checked; without ``X_val``, a stratified split of ``X``.

    ``X`` and ``X_val`` may be `gsrcl.methods.encoding.Rows` (rows of one matrix, not copied): they are kept as
    they are.

    Returns
    -------
    X, y, X_val, y_val
        CSR float32 matrices or `Rows` (those given, and ``X``'s split when it is split here), and arrays of str
        labels (``y_val`` empty when there are no validation cells).

    Raises
    ------
    LabelsError
        Missing labels, fewer than two types in training, or validation types absent from training.
    ValuesError
        NaN, infinite or negative values in ``X``.
    ValueError
        ``X_val`` with another number of genes than ``X``.
    """
    X = X if isinstance(X, Rows) else as_csr(X)
    y = check_labels(y, X.shape[0])
    if not _valid_values(X):
        raise ValuesError("the model input holds NaN, infinite or negative values: give log1p values of counts")
    if X_val is None:
        tr, va = split_validation(y, validation_size, seed)
        if not isinstance(X, Rows):
            X = Rows(X, np.arange(X.shape[0]))
        X_val, y_val, X, y = rows_of(X, va), y[va], rows_of(X, tr), y[tr]  # views: no copy of the cells
    else:
        X_val = X_val if isinstance(X_val, Rows) else as_csr(X_val)
        y_val = check_labels(y_val, X_val.shape[0]) if X_val.shape[0] else np.array([], dtype=str)
        if X_val.shape[1] != X.shape[1]:
            raise ValueError(f"X_val has {X_val.shape[1]} genes, X has {X.shape[1]}")
    if len(np.unique(y)) < 2:
        raise LabelsError("the training cells hold fewer than two cell types: a reference needs at least two")
    unseen = sorted(set(y_val) - set(y))
    if unseen:
        raise LabelsError(f"validation labels {unseen[:3]} do not occur in the training cells")
    return X, y, X_val, y_val
