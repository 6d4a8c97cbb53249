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

Whatever its probabilities, a cell is Unassigned when its values say nothing about it (`unassigned_reasons`): it
has no counts in the reference genes (every model input is zero: the classifier's output is then the same for
every such cell, and can be confident), or fewer than `min_detected_genes` of them are non-zero. Each Unassigned
cell gets one reason (`REASONS`, in this order of precedence; ``""`` for an assigned cell), recorded as
``obs['unassigned_reason']``:

- ``"no counts in the reference genes"``;
- ``"too few reference genes detected"``: fewer than ``min_detected_genes(n_genes)`` non-zero reference genes;
- ``"probability at or below p"``;
- ``"novelty above the cut-off"``.

A reference type named ``Unassigned`` would make two labels of one name: training refuses such labels
(`gsrcl.methods.labels.check_labels`) and prediction refuses such a reference before it reads the query
(`check_cell_types`).
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidReferenceError

UNASSIGNED = "Unassigned"

# At least this many non-zero reference genes for a cell to be labelled (a tenth of the reference's genes when
# that is fewer: `min_detected_genes`). Below it, the library-size normalisation of the model input (log1p CP10k)
# gives each of the few detected genes a value of at least log1p(1000) ~ 6.9, a profile no reference cell has, and
# the label would follow that artefact rather than the cell. Real cells lie far above: every cell of the
# pbmc68k_reduced test query has 35 or more of a 120-gene reference's genes, and cells kept by usual quality
# control (>= 200 genes) have hundreds of a 2,000-gene reference's. Only (near-)empty droplets fall below.
MIN_DETECTED_GENES = 10

NO_COUNTS = "no counts in the reference genes"
TOO_FEW_GENES = "too few reference genes detected"
BELOW_P = "probability at or below p"
NOVEL = "novelty above the cut-off"
REASONS = ("", NO_COUNTS, TOO_FEW_GENES, BELOW_P, NOVEL)  # the categories of obs['unassigned_reason']

__all__ = ["BELOW_P", "MIN_DETECTED_GENES", "NOVEL", "NO_COUNTS", "REASONS", "TOO_FEW_GENES", "UNASSIGNED",
           "assign_labels", "check_cell_types", "check_p", "check_percentile", "min_detected_genes",
           "normalise_rows", "novelty_threshold", "unassigned_reasons"]


def check_cell_types(cell_types, name: str = "") -> list[str]:
    """A reference's cell types, checked before any prediction: unique, and none named ``Unassigned``.

    Parameters
    ----------
    cell_types : sequence of str
    name : str
        The reference's name, for the message.

    Returns
    -------
    list of str

    Raises
    ------
    InvalidReferenceError
        When a type is named ``Unassigned`` (prediction's label for a cell it cannot assign) or a name repeats.
    """
    types = list(map(str, cell_types))
    if UNASSIGNED in types:
        raise InvalidReferenceError(
            f"reference {name!r} has a cell type named {UNASSIGNED!r}, the label gsrcl gives cells it cannot "
            "assign: retrain it with those cells relabelled (e.g. 'Unknown') or dropped"
        )
    if len(set(types)) != len(types):
        raise InvalidReferenceError(f"reference {name!r} lists a cell type more than once: it is damaged; "
                                    "retrain it or use another reference")
    return types


def min_detected_genes(n_genes: int) -> int:
    """The fewest non-zero reference genes a cell needs to be labelled: `MIN_DETECTED_GENES`, or a tenth of
    the reference's ``n_genes`` when that is fewer (a cell with no counts is never labelled)."""
    return max(1, min(MIN_DETECTED_GENES, int(n_genes) // 10))


def unassigned_reasons(labels: np.ndarray, detected: np.ndarray, n_genes: int, novelty: np.ndarray | None = None,
                       novelty_max: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The final labels and each cell's reason for ``Unassigned`` (the module docstring).

    Parameters
    ----------
    labels : ndarray of object (str), shape (n,)
        `assign_labels`' labels (``Unassigned`` there means: at or below p).
    detected : ndarray of int, shape (n,)
        Each cell's number of non-zero reference genes.
    n_genes : int
        The reference's number of genes (`min_detected_genes`).
    novelty : ndarray of shape (n,), optional
        The novelty scores, with ``novelty_max``.
    novelty_max : float, optional
        Cells whose novelty score is above it are Unassigned.

    Returns
    -------
    labels : ndarray of object (str), shape (n,)
        A copy, with the cells Unassigned for any reason.
    reasons : ndarray of object (str), shape (n,)
        One of `REASONS`; ``""`` where the cell has a type.
    """
    labels = np.array(labels, dtype=object, copy=True)
    detected = np.asarray(detected)
    reasons = np.full(len(labels), "", dtype=object)
    reasons[labels == UNASSIGNED] = BELOW_P
    if novelty_max is not None and novelty is not None:
        reasons[(np.asarray(novelty) > novelty_max) & (reasons == "")] = NOVEL
    reasons[detected < min_detected_genes(n_genes)] = TOO_FEW_GENES
    reasons[detected == 0] = NO_COUNTS
    labels[reasons != ""] = UNASSIGNED
    return labels, reasons


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
