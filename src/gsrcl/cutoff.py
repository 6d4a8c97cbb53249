"""The label rule: a cell's reference type, or ``Unassigned`` (docs/methods.md §2, with §5 item 3).

A cell gets the argmax cell type, or ``Unassigned`` when the probability the cut-off is applied to is **<= p**
(equal to p is Unassigned, as the original). Which probability:

- AF-RCL: the multi-class probability (rows sum to 1);
- GsRCL, by default: the per-type probabilities divided by their row sum (`normalise_rows`: the reported ones, as
  the original);
- GsRCL with ``raw_cutoff``: the highest *un-normalised* per-type probability. The row normalisation makes a cell
  that every one-vs-rest task rejects look confident (raw 0.02, 0.005, 0.005, 0.005 become 0.57, 0.14, 0.14,
  0.14), so the raw cut-off is the one that can flag cells of unseen types.

With a novelty cut-off (a percentile of the novelty scores of reference cells held out of the novelty model's fit,
`novelty_threshold`), cells whose novelty score (`gsrcl.novelty`) is above it are Unassigned as well.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidReferenceError

UNASSIGNED = "Unassigned"

__all__ = ["UNASSIGNED", "assign_labels", "check_p", "check_percentile", "normalise_rows", "novelty_threshold"]


def assign_labels(proba: np.ndarray, cell_types, p: float, cutoff_on: np.ndarray | None = None) -> np.ndarray:
    """The label of each cell: its argmax cell type, or ``Unassigned`` where its top probability is <= ``p``.

    Parameters
    ----------
    proba : ndarray of shape (n, K)
        The probabilities the argmax is taken of.
    cell_types : sequence of str
        The K types, in column order.
    p : float
        The cut-off.
    cutoff_on : ndarray of shape (n, K), optional
        The scores whose row maximum is compared with ``p`` (GsRCL's un-normalised ones); default ``proba``.

    Returns
    -------
    ndarray of object (str), shape (n,)

    Raises
    ------
    ValueError
        When ``proba`` is not n x K.
    """
    proba = np.asarray(proba)
    types = np.asarray(list(map(str, cell_types)) + [UNASSIGNED], dtype=object)
    if proba.ndim != 2 or proba.shape[1] != len(types) - 1:
        raise ValueError(f"probabilities of shape {proba.shape} do not match {len(types) - 1} cell types")
    if proba.shape[0] == 0:
        return np.empty(0, dtype=object)
    best = np.argmax(proba, axis=1)
    top = (proba if cutoff_on is None else np.asarray(cutoff_on)).max(axis=1)
    return types[np.where(top <= p, len(types) - 1, best)]


def normalise_rows(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (GsRCL's reported probabilities); an all-zero row becomes uniform.

    Parameters
    ----------
    scores : array-like of shape (n, K)

    Returns
    -------
    ndarray of float64, shape (n, K)
    """
    scores = np.asarray(scores, dtype=np.float64)
    total = scores.sum(axis=1, keepdims=True)
    return np.divide(scores, total, out=np.full_like(scores, 1.0 / max(scores.shape[1], 1)), where=total > 0)


def check_p(p) -> float:
    """The probability cut-off, checked: a number in [0, 1].

    Raises
    ------
    ValueError
        For anything else.
    """
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"the probability cut-off must be a number between 0 and 1, not {p!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the probability cut-off must be between 0 and 1, not {p}")
    return p


def check_percentile(percentile) -> float | None:
    """The novelty cut-off, checked: None (off) or a percentile above 0 and at most 100.

    Raises
    ------
    ValueError
        For anything else.
    """
    if percentile is None:
        return None
    try:
        percentile = float(percentile)
    except (TypeError, ValueError):
        raise ValueError(f"the novelty cut-off must be a percentile between 0 and 100, not {percentile!r}") from None
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"the novelty cut-off must be a percentile above 0 and at most 100, not {percentile}")
    return percentile


def novelty_threshold(percentile: float | None, ref) -> float | None:
    """The novelty score above which a cell is Unassigned: the reference's score at ``percentile``.

    Parameters
    ----------
    percentile : float or None
        Checked already (`check_percentile`); None: no novelty cut-off.
    ref : Reference

    Returns
    -------
    float or None

    Raises
    ------
    InvalidReferenceError
        When a cut-off is asked of a reference without a novelty model.
    """
    if percentile is None:
        return None
    if ref.novelty is None:
        raise InvalidReferenceError(f"reference {ref.name!r} has no novelty score (made by an older gsrcl or with "
                                    "novelty=False): retrain it, or leave out the novelty cut-off")
    return ref.novelty.threshold(percentile)
