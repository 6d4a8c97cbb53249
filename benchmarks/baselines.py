"""The baselines of the accuracy benchmark, for use from scripts and notebooks.

They live in ``gsrcl.benchmark`` so that ``gsrcl benchmark`` can run them from an installed package; this module
only re-exports them. Each has ``fit(adata, labels)`` (reference AnnData, its own genes) and ``predict(adata) ->
Prediction(labels, confidence, scores)`` (query AnnData, aligned to the reference genes inside):

- ``LinearSVM``: Abdelaal et al.'s LinearSVC on log1p counts;
- ``SVMRejection``: LinearSVC in CalibratedClassifierCV(cv=3), Unassigned below probability 0.7;
- ``CellTypistLR``: CellTypist's model (z-scored log1p CP10k, one-vs-rest logistic regression, best match),
  rebuilt with scikit-learn because celltypist 1.7.1 cannot train under scikit-learn >= 1.8.
"""

from gsrcl.benchmark import CellTypistLR, LinearSVM, Prediction, SVMRejection, make_method

__all__ = ["LinearSVM", "SVMRejection", "CellTypistLR", "Prediction", "make_method"]
