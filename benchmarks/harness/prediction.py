"""What every method of the benchmark returns from ``predict``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """One method's answer on a query.

    Attributes
    ----------
    labels : numpy.ndarray of object
        Label of every cell; ``Unassigned`` for rejected cells.
    confidence : numpy.ndarray of float
        Higher = more confident; scored as the unseen-type AUROC.
    scores : dict of str to numpy.ndarray
        Further confidence scores (higher = more likely a known type), each scored as an AUROC too.
    best : numpy.ndarray of object or None
        The top-scoring type of every cell before any rejection; None when it is ``labels``.
    """

    labels: np.ndarray
    confidence: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    best: np.ndarray | None = None
