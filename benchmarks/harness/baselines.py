"""The tools users would pick instead of GsRCL or AF-RCL, as the benchmark runs them.

Each has ``fit(adata, labels)`` (reference AnnData on its own genes) and ``predict(adata) -> Prediction`` (query
AnnData, aligned to the training genes inside); ``implementation`` describes it for the report and
``warm_up()`` imports what it needs, so that imports are not timed as its work.

- `LinearSVM`: Abdelaal et al.'s LinearSVC on log1p counts;
- `SVMRejection`: LinearSVC in CalibratedClassifierCV(cv=3), Unassigned below probability 0.7;
- `CellTypistLR`: CellTypist's model (z-scored log1p CP10k, one-vs-rest logistic regression, best match),
  rebuilt with scikit-learn because celltypist 1.7.1 cannot train under scikit-learn >= 1.8.
"""

from __future__ import annotations

import importlib

import numpy as np

from .inputs import align_to, log1p_cp10k, model_input
from .metrics import UNASSIGNED, as_text
from .prediction import Prediction
from .tasks import DEFAULT_SEED

#: SVMrejection's cut-off on the highest calibrated probability (Abdelaal et al.).
SVM_REJECTION_THRESHOLD = 0.7


def top_scores(decision: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The highest-scoring class of every row and its score.

    Parameters
    ----------
    decision : numpy.ndarray
        Cells x classes, or one column (the score of ``classes[1]``) for a binary problem.
    classes : numpy.ndarray
        The class names in column order.

    Returns
    -------
    labels : numpy.ndarray of object
    scores : numpy.ndarray of float
    """
    if decision.ndim == 1:
        decision = np.column_stack([-decision, decision])
    return classes[decision.argmax(axis=1)].astype(object), decision.max(axis=1)


class LinearSVM:
    """Abdelaal et al.'s SVM: ``LinearSVC()`` on log1p counts; confidence = the highest decision value.

    Parameters
    ----------
    seed : int
        ``random_state`` of the LinearSVC.
    """

    name = "svm"
    implementation = "scikit-learn LinearSVC (C=1) on log1p counts, as Abdelaal et al. run_SVM.py"
    modules = ("sklearn.svm", "sklearn.calibration", "gsrcl.genes", "gsrcl.values")

    def __init__(self, seed: int = DEFAULT_SEED):
        self.seed = seed

    def warm_up(self) -> None:
        """Import the libraries ``fit`` and ``predict`` use."""
        for module in self.modules:
            importlib.import_module(module)

    def fit(self, adata, labels) -> "LinearSVM":
        """Fit on the reference cells ``adata`` with their ``labels``; returns self."""
        from sklearn.svm import LinearSVC

        self.genes_ = list(adata.var_names.astype(str))
        self.model_ = LinearSVC(random_state=self.seed).fit(model_input(adata), as_text(labels))
        return self

    def predict(self, adata) -> Prediction:
        """Label the query cells ``adata`` (any genes; aligned to the training genes here)."""
        X = align_to(model_input(adata), adata.var, self.genes_)
        labels, conf = top_scores(self.model_.decision_function(X), self.model_.classes_)
        return Prediction(labels, conf)


class SVMRejection(LinearSVM):
    """Abdelaal et al.'s SVMrejection: ``CalibratedClassifierCV(LinearSVC(), cv=3)``.

    A cell whose highest calibrated probability is below ``threshold`` is Unassigned; confidence = that
    probability.

    Parameters
    ----------
    seed : int
        ``random_state`` of the LinearSVC.
    threshold : float
        The rejection cut-off.
    """

    name = "svm_rejection"
    implementation = ("scikit-learn CalibratedClassifierCV(LinearSVC(), cv=3) on log1p counts, Unassigned below "
                      "max probability 0.7, as Abdelaal et al. run_SVMrejection.py")

    def __init__(self, seed: int = DEFAULT_SEED, threshold: float = SVM_REJECTION_THRESHOLD):
        super().__init__(seed)
        self.threshold = threshold

    def fit(self, adata, labels) -> "SVMRejection":
        """Fit on the reference cells ``adata`` with their ``labels``; returns self."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        self.genes_ = list(adata.var_names.astype(str))
        model = CalibratedClassifierCV(LinearSVC(random_state=self.seed), cv=3)
        self.model_ = model.fit(model_input(adata), as_text(labels))
        return self

    def predict(self, adata) -> Prediction:
        """Label the query cells ``adata``; ``best`` holds the top type before rejection."""
        X = align_to(model_input(adata), adata.var, self.genes_)
        proba = self.model_.predict_proba(X)
        best = self.model_.classes_[proba.argmax(axis=1)].astype(object)
        conf = proba.max(axis=1)
        labels = np.where(conf < self.threshold, UNASSIGNED, best).astype(object)
        return Prediction(labels, conf, best=best)


class CellTypistLR:
    """CellTypist's model (``celltypist.train`` defaults, ``annotate(mode='best match')``) rebuilt with
    scikit-learn.

    log1p CP10k (each file normalised over its own genes, as CellTypist requires); genes never expressed in the
    reference dropped; per-gene z-scores (``StandardScaler``, mean-centred) clipped above at 10; one-vs-rest
    ``LogisticRegression(C=1, lbfgs)``; label = highest decision value; confidence = its logistic probability.
    Reference genes the query lacks are left out of the decision (z-score 0), as ``celltypist.annotate`` keeps
    only the model's features found in the query. Best match never rejects. Why a rebuild: celltypist 1.7.1
    passes ``multi_class='ovr'``, which scikit-learn >= 1.8's LogisticRegression no longer takes.

    Parameters
    ----------
    seed : int
        Kept for a uniform signature; the model is deterministic.
    max_iter : int
        Iterations of each logistic regression.
    """

    name = "celltypist"
    modules = ("sklearn.linear_model", "sklearn.multiclass", "sklearn.preprocessing", "gsrcl.genes", "gsrcl.values")
    implementation = ("CellTypist 1.7.1's model rebuilt with scikit-learn (the package cannot train under "
                      "scikit-learn >= 1.8): z-scored log1p CP10k (clip 10), one-vs-rest LogisticRegression "
                      "(C=1, lbfgs, max_iter=1000), best match, no rejection; reference genes absent from the "
                      "query are left out of the decision, as celltypist.annotate does")

    def __init__(self, seed: int = DEFAULT_SEED, max_iter: int = 1000):
        self.seed = seed
        self.max_iter = max_iter

    def warm_up(self) -> None:
        """Import the libraries ``fit`` and ``predict`` use."""
        for module in self.modules:
            importlib.import_module(module)

    def fit(self, adata, labels) -> "CellTypistLR":
        """Fit on the reference cells ``adata`` with their ``labels``; returns self."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import StandardScaler

        X = log1p_cp10k(adata)
        expressed = np.asarray(X.getnnz(axis=0) > 0)
        self.genes_ = list(adata.var_names.astype(str)[expressed])
        self.scaler_ = StandardScaler()
        Z = self.scaler_.fit_transform(X[:, expressed].toarray())
        np.minimum(Z, 10, out=Z)
        self.model_ = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=self.max_iter))
        self.model_.fit(Z, as_text(labels))
        return self

    def predict(self, adata) -> Prediction:
        """Label the query cells ``adata`` (best match: no cell is rejected)."""
        from gsrcl.genes import align, match_genes

        match = match_genes(adata.var, self.genes_)
        Z = self.scaler_.transform(align(log1p_cp10k(adata), match).toarray())
        np.minimum(Z, 10, out=Z)
        Z[:, match.ref_to_query < 0] = 0  # genes the query lacks drop out of the decision, as celltypist.annotate
        labels, top = top_scores(self.model_.decision_function(Z), self.model_.classes_)
        return Prediction(labels, 1.0 / (1.0 + np.exp(-top)))
