"""The scores of one method on one task: over the known cells (types the reference has), Abdelaal et al.'s,
and for the unseen ones (types it lacks).

An ``Unassigned`` known cell counts as wrong; cells of unseen types are left out of the known-cell scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

UNASSIGNED = "Unassigned"
#: The names Abdelaal et al.'s ``evaluate.R`` drops from the confusion table before computing F1.
REJECTED = frozenset({"Unassigned", "unassigned", "Unknown", "unknown", "rand", "Node", "ambiguous"})


def as_text(values) -> np.ndarray:
    """Labels as an object array of ``str``.

    Parameters
    ----------
    values : iterable

    Returns
    -------
    numpy.ndarray of object
    """
    return np.asarray([str(v) for v in values], dtype=object)


def macro_f1(y_true, y_pred, known_types) -> float:
    """Macro-F1 over the known types present in ``y_true``, on the known cells only.

    Parameters
    ----------
    y_true, y_pred : array-like
        Truth and prediction of every query cell.
    known_types : iterable of str
        The reference's types.

    Returns
    -------
    float
        NaN when no cell is of a known type. A known cell predicted ``Unassigned`` (or any label outside those
        types) is a miss of its true type and nobody's false positive.
    """
    from sklearn.metrics import f1_score

    y_true, y_pred = as_text(y_true), as_text(y_pred)
    known = np.isin(y_true, list(known_types))
    classes = sorted(set(y_true[known]))
    if not classes:
        return float("nan")
    return float(f1_score(y_true[known], y_pred[known], labels=classes, average="macro", zero_division=0))


def accuracy(y_true, y_pred, known_types) -> float:
    """Share of known cells predicted as their type (Unassigned counts as wrong); NaN without known cells.

    Parameters
    ----------
    y_true, y_pred : array-like
    known_types : iterable of str

    Returns
    -------
    float
    """
    y_true, y_pred = as_text(y_true), as_text(y_pred)
    known = np.isin(y_true, list(known_types))
    return float(np.mean(y_true[known] == y_pred[known])) if known.any() else float("nan")


def abdelaal_f1(y_true, y_pred, known_types) -> dict[str, Any]:
    """Abdelaal et al.'s scores on the known cells.

    Parameters
    ----------
    y_true, y_pred : array-like
    known_types : iterable of str

    Returns
    -------
    dict
        ``per_class_f1`` (F1 per type on the confusion table without the cells predicted as a `REJECTED` name; a
        type with no correctly assigned cell has F1 0), ``median_f1`` (their median), ``pct_unassigned`` (percent
        of known cells rejected) and ``accuracy_assigned`` (accuracy of the others).
    """
    y_true, y_pred = as_text(y_true), as_text(y_pred)
    known = np.isin(y_true, list(known_types))
    y_true, y_pred = y_true[known], y_pred[known]
    assigned = ~np.isin(y_pred, list(REJECTED))
    t, p = y_true[assigned], y_pred[assigned]
    per_class = {}
    for c in sorted(set(y_true)):
        tp = int(np.sum((t == c) & (p == c)))
        if tp == 0:
            per_class[c] = 0.0
            continue
        precision, recall = tp / np.sum(p == c), tp / np.sum(t == c)
        per_class[c] = float(2 * precision * recall / (precision + recall))
    return {
        "median_f1": float(np.median(list(per_class.values()))) if per_class else float("nan"),
        "per_class_f1": per_class,
        "pct_unassigned": float(100 * (1 - assigned.mean())) if len(assigned) else float("nan"),
        "accuracy_assigned": float(np.mean(t == p)) if len(t) else float("nan"),
    }


def unseen_auroc(y_true, confidence, known_types) -> float | None:
    """AUROC of a confidence score for telling known cells (positive class) from cells of unseen types.

    Parameters
    ----------
    y_true : array-like
    confidence : array-like of float
        Higher = more likely a known type.
    known_types : iterable of str

    Returns
    -------
    float or None
        None when the query holds only one of the two groups.
    """
    from sklearn.metrics import roc_auc_score

    is_known = np.isin(as_text(y_true), list(known_types))
    if is_known.all() or not is_known.any():
        return None
    return float(roc_auc_score(is_known.astype(int), np.asarray(confidence, dtype=float)))


def unseen_unassigned(y_true, y_pred, known_types) -> float | None:
    """Share of unseen-type cells predicted as a `REJECTED` name; None when there are none.

    Parameters
    ----------
    y_true, y_pred : array-like
    known_types : iterable of str

    Returns
    -------
    float or None
    """
    y_true, y_pred = as_text(y_true), as_text(y_pred)
    unseen = ~np.isin(y_true, list(known_types))
    return float(np.mean(np.isin(y_pred[unseen], list(REJECTED)))) if unseen.any() else None


def confusion(y_true, y_pred, known_types) -> dict[str, Any]:
    """Confusion counts.

    Parameters
    ----------
    y_true, y_pred : array-like
    known_types : iterable of str

    Returns
    -------
    dict
        ``rows`` (query types: known first, then unseen), ``cols`` (reference types, Unassigned, then any other
        predicted name) and ``counts`` (list of rows of int).
    """
    y_true, y_pred = as_text(y_true), as_text(y_pred)
    known = sorted(known_types)
    present = set(y_true)
    rows = [t for t in known if t in present] + sorted(present - set(known))
    cols = known + [UNASSIGNED] + sorted(set(y_pred) - set(known) - {UNASSIGNED})
    table = pd.crosstab(pd.Series(y_true, name="true"), pd.Series(y_pred, name="pred"))
    table = table.reindex(index=rows, columns=cols, fill_value=0)
    return {"rows": rows, "cols": cols, "counts": table.to_numpy().astype(int).tolist()}


def evaluate(y_true, y_pred, known_types, confidence=None, scores: dict[str, np.ndarray] | None = None) -> dict:
    """All scores of one method on one task.

    Parameters
    ----------
    y_true, y_pred : array-like
    known_types : iterable of str
    confidence : array-like of float, optional
        The method's confidence, for ``unseen_auroc``.
    scores : dict of str to array-like, optional
        Further confidence scores, each scored as ``unseen_auroc_<name>``.

    Returns
    -------
    dict
        ``macro_f1``, ``accuracy``, the keys of `abdelaal_f1`, ``n_known``, ``n_unseen``; with unseen cells also
        ``unseen_auroc`` (None without ``confidence``), ``unseen_unassigned`` and ``unseen_auroc_<name>``.
    """
    y_true, y_pred = as_text(y_true), as_text(y_pred)
    known = np.isin(y_true, list(known_types))
    out: dict[str, Any] = {
        "macro_f1": macro_f1(y_true, y_pred, known_types),
        "accuracy": accuracy(y_true, y_pred, known_types),
        **abdelaal_f1(y_true, y_pred, known_types),
        "n_known": int(known.sum()),
        "n_unseen": int((~known).sum()),
    }
    if out["n_unseen"]:
        out["unseen_auroc"] = unseen_auroc(y_true, confidence, known_types) if confidence is not None else None
        out["unseen_unassigned"] = unseen_unassigned(y_true, y_pred, known_types)
        for name, values in (scores or {}).items():
            out[f"unseen_auroc_{name}"] = unseen_auroc(y_true, values, known_types)
    return out
