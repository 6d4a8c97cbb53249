"""RBF-kernel SVM classifier whose fitted state is plain arrays, evaluated by our own numpy code (docs/methods.md
§3.7, §5 items 12 and 19).

Training uses scikit-learn (`SVC` inside `GridSearchCV`, Platt scaling by libsvm's internal CV); the fitted model
is then copied into a `PortableSVC`: support vectors, dual coefficients, intercepts, gamma and the Platt
parameters. `PortableSVC` reproduces libsvm's one-vs-one decision values and its probability estimates (Platt
sigmoid per class pair, clipped to [1e-7, 1 - 1e-7], then Wu, Lin & Weng's pairwise coupling "method 2",
iterated exactly as libsvm's `multiclass_probability`; scikit-learn's copy of libsvm runs that coupling for two
classes too). So a stored reference does not depend on pickles or on the scikit-learn version, and `predict` is
the argmax of `predict_proba` everywhere.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from gsrcl.errors import LabelsError

__all__ = ["PortableSVC", "PooledSVCs", "fit_svc", "fit_setting", "quick_score", "PAPER_GRID", "SCORERS"]

log = logging.getLogger("gsrcl.svm")

PAPER_GRID: dict[str, list] = {"C": [0.1, 1, 10, 100], "gamma": ["scale", 1e-4, 1e-3, 1e-2]}
SCORERS = ("mcc", "f1_macro", "accuracy")
FORMAT = 1
_MIN_PROB = 1e-7
_KERNEL_BUDGET = 1 << 24  # kernel entries evaluated at once
DISTANCE_CELLS_MAX = 5000  # fit_svc(distances=True) holds an n x n float64 matrix of squared distances
KERNEL_CELLS_MAX = 10_000  # above DISTANCE_CELLS_MAX a final fit builds its n x n kernel in one buffer (800 MB)


def _rbf(A: np.ndarray, B: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray, gamma: float) -> np.ndarray:
    """The RBF kernel between the rows of A and of B (``sq_a``, ``sq_b``: their squared norms), in one
    (len(A), len(B)) buffer updated in place from the product ``A @ B.T``."""
    k = A @ B.T
    k *= -2.0
    k += sq_a[:, None]
    k += sq_b[None, :]
    np.maximum(k, 0.0, out=k)  # squared distances
    k *= -gamma
    np.exp(k, out=k)
    return k


def _pairs(k: int) -> list[tuple[int, int]]:
    """Class pairs in libsvm's order: (0,1), (0,2), ..., (0,k-1), (1,2), ..."""
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def _sigmoid_predict(dec: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """libsvm's sigmoid_predict: 1 / (1 + exp(dec * A + B)), in its two cancellation-free branches."""
    f = dec * a + b
    out = np.empty_like(f)
    pos = f >= 0
    e = np.exp(-f[pos])
    out[pos] = e / (1.0 + e)
    out[~pos] = 1.0 / (1.0 + np.exp(f[~pos]))
    return out


def _couple(r: np.ndarray) -> np.ndarray:
    """Pairwise coupling of libsvm's `multiclass_probability` for every row at once: r (n, k, k) with
    r[:, i, j] = P(i | i or j). Rows stop iterating when libsvm's stopping rule holds for them, and sums are
    taken in libsvm's order, so the result matches it to rounding."""
    n, k, _ = r.shape
    q = np.empty_like(r)
    for t in range(k):
        diag = np.zeros(n)
        for j in range(k):
            if j != t:
                diag += r[:, j, t] * r[:, j, t]
                q[:, t, j] = -r[:, j, t] * r[:, t, j]
        q[:, t, t] = diag
    p = np.full((n, k), 1.0 / k)
    active = np.arange(n)
    eps = 0.005 / k
    for _ in range(max(100, k)):
        qa, pa = q[active], p[active]
        qp = np.zeros((len(active), k))
        for t in range(k):
            for j in range(k):
                qp[:, t] += qa[:, t, j] * pa[:, j]
        pqp = np.zeros(len(active))
        for t in range(k):
            pqp += pa[:, t] * qp[:, t]
        go_on = np.abs(qp - pqp[:, None]).max(axis=1) >= eps
        active, qa, pa, qp, pqp = active[go_on], qa[go_on], pa[go_on], qp[go_on], pqp[go_on]
        if active.size == 0:
            break
        for t in range(k):
            diff = (-qp[:, t] + pqp) / qa[:, t, t]
            pa[:, t] += diff
            pqp = (pqp + diff * (diff * qa[:, t, t] + 2 * qp[:, t])) / (1 + diff) / (1 + diff)
            qp = (qp + diff[:, None] * qa[:, t, :]) / (1 + diff)[:, None]
            pa /= (1 + diff)[:, None]
        p[active] = pa
    else:
        log.debug("pairwise coupling reached its iteration limit for %d rows", active.size)
    return p


class PortableSVC:
    """A fitted RBF-kernel SVC (libsvm one-vs-one model) evaluated by numpy.

    Attributes: `classes_` (sorted), `gamma` (float), `support_vectors_` (n_SV, d, grouped by class),
    `n_support_` (n_SV per class), `dual_coef_` (K-1, n_SV) and `intercept_` (K(K-1)/2,) in libsvm's sign
    convention (a positive decision value for pair (i, j) favours class i), `probA_`, `probB_` (Platt
    parameters per pair, empty without probabilities), `best_params_`, `cv_score_` (from `fit_svc`).
    """

    def __init__(self, classes, support_vectors, n_support, dual_coef, intercept, gamma, prob_a=None,
                 prob_b=None, *, block_size: int = 4096):
        classes = np.asarray(classes)
        sv = np.asarray(support_vectors, dtype=np.float64)
        n_support = np.asarray(n_support)
        dual = np.asarray(dual_coef, dtype=np.float64)
        intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
        prob_a = np.zeros(0) if prob_a is None else np.asarray(prob_a, dtype=np.float64).reshape(-1)
        prob_b = np.zeros(0) if prob_b is None else np.asarray(prob_b, dtype=np.float64).reshape(-1)
        k = classes.shape[0] if classes.ndim == 1 else -1
        n_pairs = k * (k - 1) // 2
        problems = []
        if classes.ndim != 1 or k < 2 or len(np.unique(classes)) != k:
            problems.append(f"classes must be >= 2 distinct labels, got {classes.tolist()}")
        elif not np.array_equal(np.sort(classes), classes):
            problems.append("classes must be sorted")
        if sv.ndim != 2 or sv.shape[0] == 0:
            problems.append(f"support_vectors must be a non-empty 2-D array, got shape {sv.shape}")
        if (n_support.shape != (max(k, 0),) or not np.issubdtype(n_support.dtype, np.integer)
                or (n_support < 0).any() or n_support.sum() != sv.shape[0]):
            problems.append(f"n_support {n_support.tolist()} must give one count per class summing to the "
                            f"{sv.shape[0]} support vectors")
        if dual.shape != (k - 1, sv.shape[0]):
            problems.append(f"dual_coef has shape {dual.shape}, expected ({k - 1}, {sv.shape[0]})")
        if intercept.shape != (n_pairs,):
            problems.append(f"intercept has {intercept.size} values, expected {n_pairs}")
        if prob_a.shape != prob_b.shape or prob_a.size not in (0, n_pairs):
            problems.append(f"probA/probB have {prob_a.size}/{prob_b.size} values, expected {n_pairs} (or none)")
        if not (np.isscalar(gamma) and np.isfinite(gamma) and float(gamma) > 0):
            problems.append(f"gamma must be a positive number, got {gamma!r}")
        if not problems and not all(np.isfinite(a).all() for a in (sv, dual, intercept, prob_a, prob_b)):
            problems.append("the arrays hold NaN or infinite values")
        if problems:
            raise ValueError("invalid SVM state: " + "; ".join(problems))
        self.classes_ = classes
        self.support_vectors_ = sv
        self.n_support_ = n_support.astype(np.int64)
        self.dual_coef_ = dual
        self.intercept_ = intercept
        self.gamma = float(gamma)
        self.probA_, self.probB_ = prob_a, prob_b
        self.block_size = int(block_size)
        self.best_params_: dict = {}
        self.cv_score_: float = float("nan")
        self._sv_sq = np.einsum("ij,ij->i", sv, sv)
        self._pair_coef = self._pair_coefficients()

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_sklearn(cls, svc) -> PortableSVC:
        """Copy a fitted `sklearn.svm.SVC(kernel="rbf")`."""
        if getattr(svc, "kernel", None) != "rbf" or not hasattr(svc, "support_vectors_"):
            raise ValueError("from_sklearn needs a fitted SVC with kernel='rbf'")
        sv = svc.support_vectors_
        sv = sv.toarray() if sp.issparse(sv) else sv
        # scikit-learn flips the public signs for two classes; _dual_coef_/_intercept_ keep libsvm's
        dual, intercept = svc._dual_coef_, svc._intercept_
        dual = dual.toarray() if sp.issparse(dual) else dual
        return cls(svc.classes_, sv, svc.n_support_, dual, intercept, svc._gamma,
                   getattr(svc, "_probA", None), getattr(svc, "_probB", None))

    def state(self, prefix: str = "") -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able config, float64 arrays named `{prefix}support_vectors|dual_coef|intercept|prob_a|prob_b`)."""
        config = {
            "kind": "rbf_svc",
            "format": FORMAT,
            "classes": self.classes_.tolist(),
            "gamma": self.gamma,
            "n_features": int(self.support_vectors_.shape[1]),
            "n_support": self.n_support_.tolist(),
            "has_probability": bool(self.probA_.size),
            "best_params": dict(self.best_params_),
            "cv_score": None if np.isnan(self.cv_score_) else float(self.cv_score_),
        }
        arrays = {
            f"{prefix}support_vectors": self.support_vectors_,
            f"{prefix}dual_coef": self.dual_coef_,
            f"{prefix}intercept": self.intercept_,
            f"{prefix}prob_a": self.probA_,
            f"{prefix}prob_b": self.probB_,
        }
        return config, arrays

    @classmethod
    def from_state(cls, config: Mapping, arrays: Mapping[str, np.ndarray], prefix: str = "") -> PortableSVC:
        """Rebuild from `state()`; raises ValueError on a missing key or inconsistent shapes."""
        if config.get("kind") != "rbf_svc" or config.get("format", FORMAT) > FORMAT:
            raise ValueError(f"not an SVM state this version can read: kind={config.get('kind')!r}, "
                             f"format={config.get('format')!r}")
        names = ("support_vectors", "dual_coef", "intercept", "prob_a", "prob_b")
        missing = [f"{prefix}{n}" for n in names if f"{prefix}{n}" not in arrays]
        missing += [k for k in ("classes", "gamma", "n_support") if k not in config]
        if missing:
            raise ValueError(f"invalid SVM state: missing {missing}")
        a = {n: np.asarray(arrays[f"{prefix}{n}"]) for n in names}
        if "n_features" in config and (a["support_vectors"].ndim != 2
                                       or a["support_vectors"].shape[1] != config["n_features"]):
            raise ValueError(f"invalid SVM state: support vectors of shape {a['support_vectors'].shape}, "
                             f"expected {config['n_features']} features")
        if config.get("has_probability") and a["prob_a"].size == 0:
            raise ValueError("invalid SVM state: probability parameters are missing")
        n_support = np.asarray(config["n_support"])
        if n_support.dtype.kind not in "iu":
            raise ValueError(f"invalid SVM state: n_support {config['n_support']!r} must be integers")
        model = cls(config["classes"], a["support_vectors"], n_support, a["dual_coef"], a["intercept"],
                    config["gamma"], a["prob_a"], a["prob_b"])
        model.best_params_ = dict(config.get("best_params") or {})
        score = config.get("cv_score")
        model.cv_score_ = float("nan") if score is None else float(score)
        return model

    # -- evaluation ----------------------------------------------------------------------------------------

    @property
    def n_features_in_(self) -> int:
        return self.support_vectors_.shape[1]

    def _pair_coefficients(self) -> np.ndarray:
        """(n_SV, n_pairs) matrix M with decision values = K(X, SV) @ M + intercept."""
        k = len(self.classes_)
        start = np.concatenate([[0], np.cumsum(self.n_support_)])
        m = np.zeros((self.support_vectors_.shape[0], k * (k - 1) // 2))
        for p, (i, j) in enumerate(_pairs(k)):
            m[start[i]:start[i + 1], p] = self.dual_coef_[j - 1, start[i]:start[i + 1]]
            m[start[j]:start[j + 1], p] = self.dual_coef_[i, start[j]:start[j + 1]]
        return m

    def _blocks(self, X, rows: int | None = None):
        """X in float64 row blocks of ``rows`` rows (default: at most `block_size` rows and ~16M kernel entries,
        128 MiB)."""
        if sp.issparse(X):
            X = sp.csr_matrix(X)
        elif not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected an array of shape (n, {self.n_features_in_}), got {X.shape}")
        if rows is None:
            rows = max(1, min(self.block_size, _KERNEL_BUDGET // self.support_vectors_.shape[0]))
        for start in range(0, X.shape[0], rows):
            block = X[start:start + rows]
            block = block.toarray() if sp.issparse(block) else block
            yield np.asarray(block, dtype=np.float64)

    def _decision_libsvm(self, block: np.ndarray) -> np.ndarray:
        """(n, n_pairs) libsvm decision values: positive favours the first class of the pair."""
        k = _rbf(block, self.support_vectors_, np.einsum("ij,ij->i", block, block), self._sv_sq, self.gamma)
        return k @ self._pair_coef + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """One-vs-one decision values as `SVC(decision_function_shape='ovo')`: (n, K(K-1)/2) in libsvm's pair
        order, a positive value favouring the first class of the pair; for two classes (n,) with a positive
        value favouring `classes_[1]` (scikit-learn's sign)."""
        blocks = [self._decision_libsvm(b) for b in self._blocks(X)]
        dec = np.vstack(blocks) if blocks else np.zeros((0, len(self.intercept_)))
        return -dec[:, 0] if len(self.classes_) == 2 else dec

    def predict_proba(self, X) -> np.ndarray:
        """(n, K) class probabilities, as `SVC(probability=True).predict_proba`."""
        if self.probA_.size == 0:
            raise ValueError("this SVM was fitted without probability estimates")
        out = [self._proba_from_decision(self._decision_libsvm(block)) for block in self._blocks(X)]
        return np.vstack(out) if out else np.zeros((0, len(self.classes_)))

    def _proba_from_decision(self, dec: np.ndarray) -> np.ndarray:
        """(n, K) probabilities from libsvm decision values (n, n_pairs): Platt's sigmoids, then coupling."""
        k = len(self.classes_)
        pair = np.clip(_sigmoid_predict(dec, self.probA_, self.probB_), _MIN_PROB, 1 - _MIN_PROB)
        r = np.zeros((dec.shape[0], k, k))
        for p, (i, j) in enumerate(_pairs(k)):
            r[:, i, j] = pair[:, p]
            r[:, j, i] = 1 - pair[:, p]
        return _couple(r)

    def predict(self, X) -> np.ndarray:
        """`classes_[argmax predict_proba]` (one rule for metrics and annotation, §5 item 19); libsvm's
        one-vs-one vote where the model has no probabilities."""
        if self.probA_.size:
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        k = len(self.classes_)
        votes = []
        for block in self._blocks(X):
            dec = self._decision_libsvm(block)
            v = np.zeros((block.shape[0], k), dtype=np.int64)
            for p, (i, j) in enumerate(_pairs(k)):
                v[:, i] += dec[:, p] > 0
                v[:, j] += dec[:, p] <= 0
            votes.append(v)
        return self.classes_[np.argmax(np.vstack(votes), axis=1)] if votes else self.classes_[:0]

    def __repr__(self) -> str:
        return (f"PortableSVC(classes={len(self.classes_)}, n_support={int(self.n_support_.sum())}, "
                f"n_features={self.n_features_in_}, gamma={self.gamma:.4g})")


class PooledSVCs:
    """SVMs with probabilities over the same features (``svcs``, a sequence of `PortableSVC`), evaluated
    together: each distinct support vector is held once, the squared distances of a block of cells to all of them
    are computed once, and each SVM takes its kernel from them with its own gamma. GsRCL's one-vs-rest SVMs on one
    input share most of their support vectors (the same reference cells). ``predict_proba`` equals each SVM's own
    up to the rounding of the matrix product (the same terms, a product of another shape).
    """

    def __init__(self, svcs: Sequence[PortableSVC]):
        self.svcs = list(svcs)
        if not self.svcs:
            raise ValueError("PooledSVCs needs at least one SVM")
        n_features = self.svcs[0].n_features_in_
        if any(s.n_features_in_ != n_features for s in self.svcs) or any(s.probA_.size == 0 for s in self.svcs):
            raise ValueError("PooledSVCs needs SVMs with probabilities over the same features")
        seen: dict[int, list[tuple[int, int]]] = {}  # a row's hash -> (svm, row) of the distinct rows so far
        first: list[tuple[int, int]] = []
        self.index_ = []
        for m, svc in enumerate(self.svcs):
            idx = np.empty(svc.support_vectors_.shape[0], dtype=np.int64)
            for r, row in enumerate(svc.support_vectors_):
                bucket = seen.setdefault(hash(row.tobytes()), [])
                for u in bucket:
                    a, b = first[u]
                    if np.array_equal(self.svcs[a].support_vectors_[b], row):
                        idx[r] = u
                        break
                else:
                    bucket.append(len(first))
                    idx[r] = len(first)
                    first.append((m, r))
            self.index_.append(idx)
        self.support_vectors_ = np.empty((len(first), n_features), dtype=np.float64)
        for u, (m, r) in enumerate(first):
            self.support_vectors_[u] = self.svcs[m].support_vectors_[r]
        self._sq = np.einsum("ij,ij->i", self.support_vectors_, self.support_vectors_)

    def predict_proba(self, X) -> list[np.ndarray]:
        """Each SVM's (n, K) probabilities for the cells ``X`` (dense or sparse), in the order given. Sparse
        cells are made dense a few at a time (~16M values, 128 MiB)."""
        n_pool, n_features = self.support_vectors_.shape
        rows = max(1, min(self.svcs[0].block_size, _KERNEL_BUDGET // n_pool, _KERNEL_BUDGET // n_features))
        out: list[list[np.ndarray]] = [[] for _ in self.svcs]
        blocks = ((b @ self.support_vectors_.T, np.einsum("ij,ij->i", b, b)) for b in self.svcs[0]._blocks(X, rows))
        for d2, sq in blocks:
            d2 *= -2.0  # squared distances, in place, as `_rbf` computes them
            d2 += sq[:, None]
            d2 += self._sq[None, :]
            np.maximum(d2, 0.0, out=d2)
            for m, (svc, idx) in enumerate(zip(self.svcs, self.index_)):
                k = d2[:, idx]
                k *= -svc.gamma
                np.exp(k, out=k)
                out[m].append(svc._proba_from_decision(k @ svc._pair_coef + svc.intercept_))
        return [np.vstack(o) if o else np.zeros((0, len(s.classes_))) for o, s in zip(out, self.svcs)]


# -- training ------------------------------------------------------------------------------------------------


def _scorer(scoring: str):
    from sklearn.metrics import make_scorer, matthews_corrcoef

    if scoring not in SCORERS:
        raise ValueError(f"scoring must be one of {SCORERS}, got {scoring!r}")
    return make_scorer(matthews_corrcoef) if scoring == "mcc" else scoring


def _score(scoring: str, y_true, y_pred) -> float:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if scoring == "mcc":
        return float(matthews_corrcoef(y_true, y_pred))
    if scoring == "f1_macro":
        return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    if scoring == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    raise ValueError(f"scoring must be one of {SCORERS}, got {scoring!r}")


def _svc(seed: int, probability: bool, kernel: str = "rbf", **params):
    from sklearn.svm import SVC

    with warnings.catch_warnings():  # scikit-learn >= 1.9 deprecates probability=True (removed in 1.11)
        warnings.simplefilter("ignore", FutureWarning)
        return SVC(kernel=kernel, probability=probability, random_state=seed, **params)


def _fit_quietly(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return est.fit(X, y)


def _check_xy(X, y):
    if not sp.issparse(X):
        X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise LabelsError(f"the SVM needs at least 2 cell types, got {len(classes)}: {classes.tolist()}; "
                          "label more cell types")
    return X, y, counts


TIE_RULES = ("first", "largest_c")


def squared_distances(X: np.ndarray) -> np.ndarray:
    """The n x n squared Euclidean distances between the rows of a dense X (``fit_svc``'s ``distances``)."""
    sq = np.einsum("ij,ij->i", X, X)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0)


def _grid_on_distances(X: np.ndarray, y, grid: Mapping[str, list], folds, scoring: str, seed: int,
                       D2: np.ndarray) -> dict:
    """GridSearchCV's ``cv_results_`` (``params``, ``mean_test_score``) for an RBF SVC, from the matrix of squared
    distances ``D2`` between X's rows: every setting's kernel is ``exp(-gamma * D2)``, sliced per fold,
    so the 80 fits of the paper grid cost O(n^2) each instead of O(n^2 d). Same folds, settings order and
    gamma='scale' (per training fold, as scikit-learn: 1 / (d * variance of its values)) as the search it
    replaces."""
    from sklearn.model_selection import ParameterGrid
    from sklearn.svm import SVC

    sq = np.einsum("ij,ij->i", X, X)
    row_sums, d = X.sum(axis=1), X.shape[1]
    params = list(ParameterGrid({k: list(v) for k, v in grid.items()}))
    scores = np.zeros((len(params), folds.get_n_splits()))
    for f, (train, test) in enumerate(folds.split(X, y)):
        n_values = len(train) * d
        mean = row_sums[train].sum() / n_values
        scale = 1.0 / (d * (sq[train].sum() / n_values - mean**2))  # gamma='scale' on this fold's cells
        gammas = [scale if s["gamma"] == "scale" else float(s["gamma"]) for s in params]
        for gamma in dict.fromkeys(gammas):  # one kernel in memory at a time
            K = np.exp(-gamma * D2[np.ix_(np.r_[train, test], train)])
            for i in (i for i, g in enumerate(gammas) if g == gamma):
                svc = SVC(kernel="precomputed", C=params[i]["C"], random_state=seed).fit(K[: len(train)], y[train])
                scores[i, f] = _score(scoring, y[test], svc.predict(K[len(train):]))
    return {"params": params, "mean_test_score": scores.mean(axis=1)}


def rbf_kernel(X: np.ndarray, gamma: float, D2: np.ndarray | None = None) -> np.ndarray:
    """The n x n RBF kernel ``exp(-gamma * |x_i - x_j|^2)`` of a dense X's rows, built in one float64 buffer, from
    the squared distances ``D2`` when given (``squared_distances``)."""
    if D2 is None:
        sq = np.einsum("ij,ij->i", X, X)
        return _rbf(X, X, sq, sq, gamma)
    K = np.multiply(D2, -gamma)
    np.exp(K, out=K)
    return K


def _fit_on_kernel(X: np.ndarray, y, D2: np.ndarray | None, params: dict, seed: int,
                   probability: bool) -> PortableSVC:
    """The RBF SVC of ``params`` on all of X, fitted by libsvm on its precomputed kernel (from the squared
    distances ``D2`` when given): with Platt probabilities libsvm fits 6 times (5 internal folds, then all cells),
    and on the cells themselves it would compute every kernel value afresh at O(d). The same model (up to float
    rounding) as ``SVC(kernel='rbf')``, kept on X's support vectors."""
    gamma = params["gamma"]
    if gamma == "scale":  # as scikit-learn resolves it on X
        gamma = 1.0 / (X.shape[1] * X.var())
    svc = _fit_quietly(_svc(seed, probability, kernel="precomputed", C=params["C"]), rbf_kernel(X, float(gamma), D2),
                       y)
    return PortableSVC(svc.classes_, X[svc.support_], svc.n_support_, svc._dual_coef_, svc._intercept_,
                       float(gamma), getattr(svc, "_probA", None), getattr(svc, "_probB", None))


def fit_svc(X, y, *, grid: Mapping[str, list] = PAPER_GRID, cv: int = 5, scoring: str = "mcc", seed: int = 0,
            n_jobs: int = 1, probability: bool = True, ties: str = "first",
            distances: bool | np.ndarray = False) -> PortableSVC:
    """Grid-search an RBF SVC (stratified, shuffled `cv`-fold CV scored by `scoring`), refit the best setting on
    all of X with Platt probabilities, return it as a `PortableSVC` with `best_params_` and `cv_score_`.

    `ties`: which of the settings sharing the best CV score is refitted. ``first`` is GridSearchCV's (and the
    original's) rule: the first in grid order, i.e. the smallest C. ``largest_c`` takes the largest C among
    them (then the first gamma): on contrastive embeddings the CV score often saturates (every setting
    classifies every held-out cell right), and the smallest C then generalised worse than a large one at the
    same CV score (docs/decisions.md).

    `cv` is lowered to the size of the smallest class when that is smaller (at least 2); with a class of a
    single cell there is no CV and the SVC uses C=1, gamma='scale'.

    `distances`: run the grid and the final fit on one matrix of squared distances between the cells
    (`_grid_on_distances`, `_fit_on_kernel`), for a dense X of more than a few features (the SVMs on the genes
    and on the embeddings): libsvm computes each kernel value afresh in every fit, at O(d) each, which dominates
    the fits' cost. True computes that matrix for a dense X of at most ``DISTANCE_CELLS_MAX`` rows; above, the
    grid takes libsvm's own path and the final fit a kernel built in one buffer (up to ``KERNEL_CELLS_MAX``
    rows). An array is that matrix for X's rows, computed once
    by a caller that fits several SVMs on the same cells (``squared_distances``)."""
    from joblib import parallel_config
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    scorer = _scorer(scoring)
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    X, y, counts = _check_xy(X, y)
    D2 = _distance_matrix(X, distances)
    folds = min(int(cv), int(counts.min()))
    if folds < 2:
        log.warning("a cell type has a single cell: no cross-validation, the SVM uses C=1, gamma='scale'")
        best, cv_score = {"C": 1.0, "gamma": "scale"}, float("nan")
    else:
        if folds < cv:
            log.info("smallest cell type has %d cells: %d-fold instead of %d-fold CV", counts.min(), folds, cv)
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
        if D2 is not None:
            results = _grid_on_distances(X, y, grid, splits, scoring, seed, D2)
        else:
            search = GridSearchCV(_svc(seed, False), {k: list(v) for k, v in grid.items()}, scoring=scorer,
                                  cv=splits, n_jobs=n_jobs, refit=False, error_score=np.nan)
            # threads, not processes: libsvm releases the GIL, and worker processes can hang when the caller is
            # itself a worker process
            with parallel_config(backend="threading"):
                _fit_quietly(search, X, y)
            results = search.cv_results_
        best = _best_params(results, ties)
        cv_score = float(np.nanmax(results["mean_test_score"]))
        log.debug("SVC grid: best %s, CV %s %.4f", best, scoring, cv_score)
    return _fit_setting(X, y, D2, best, seed, probability, cv_score, kernel=distances is not False)


def fit_setting(X, y, params: Mapping[str, Any], *, seed: int = 0, probability: bool = True,
                distances: bool | np.ndarray = False) -> PortableSVC:
    """The RBF SVC of one setting ``params`` (``C``, ``gamma``) on all of X, without a search: what `fit_svc`
    refits after its grid, for a setting chosen elsewhere (e.g. on a subset of the cells). ``distances`` as
    `fit_svc`; ``cv_score_`` is NaN."""
    X, y, _ = _check_xy(X, y)
    return _fit_setting(X, y, _distance_matrix(X, distances), dict(params), seed, probability, float("nan"),
                        kernel=distances is not False)


def _distance_matrix(X, distances: bool | np.ndarray) -> np.ndarray | None:
    """`fit_svc`'s ``distances`` as the matrix to fit on, or None for libsvm's own kernel."""
    if isinstance(distances, np.ndarray):
        if distances.shape != (X.shape[0], X.shape[0]):
            raise ValueError(f"distances has shape {distances.shape}, expected ({X.shape[0]}, {X.shape[0]})")
        return distances
    if distances and not sp.issparse(X) and X.shape[0] <= DISTANCE_CELLS_MAX:
        return squared_distances(X)
    return None


def _fit_setting(X, y, D2: np.ndarray | None, best: dict, seed: int, probability: bool,
                 cv_score: float, kernel: bool = False) -> PortableSVC:
    if D2 is not None or (kernel and not sp.issparse(X) and X.shape[0] <= KERNEL_CELLS_MAX):
        model = _fit_on_kernel(X, y, D2, best, seed, probability)
    else:
        model = PortableSVC.from_sklearn(_fit_quietly(_svc(seed, probability, **best), X, y))
    model.best_params_ = {k: (v if isinstance(v, str) else float(v)) for k, v in best.items()}
    model.cv_score_ = cv_score
    return model


def _best_params(results: Mapping, ties: str) -> dict:
    """The setting of GridSearchCV ``results`` chosen under the tie rule ``ties`` (see `fit_svc`)."""
    scores = np.nan_to_num(np.asarray(results["mean_test_score"], dtype=float), nan=-np.inf)
    tied = np.flatnonzero(scores >= scores.max())
    params = results["params"]
    if ties == "largest_c":
        pick = max(tied, key=lambda i: (float(params[i].get("C", 1.0)), -i))
    else:
        pick = tied[0]
    return dict(params[pick])


def quick_score(X_train, y_train, X_val, y_val, scoring: str = "mcc") -> float:
    """A cheap validation score of a representation, for checkpoint selection (docs/methods.md §5 item 18).

    One SVC at C=1, gamma='scale' fitted on the training cells, scored by ``scoring`` on the validation cells.
    It ranks representations nearly as the full grid's validation score does, at a small fraction of its cost
    (docs/decisions.md).

    Raises
    ------
    ValueError
        An unknown ``scoring``.
    """
    _scorer(scoring)
    X_train, y_train, _ = _check_xy(X_train, y_train)
    svc = _fit_quietly(_svc(0, False, C=1.0, gamma="scale"), X_train, y_train)
    return _score(scoring, np.asarray(y_val), svc.predict(X_val))
