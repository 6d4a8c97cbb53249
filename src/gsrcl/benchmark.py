"""Accuracy benchmark: GsRCL and AF-RCL against the tools users would pick instead, on the same data.

Protocol (Abdelaal et al. 2019, Genome Biol 20:194, and their ``evaluate.R``):

- for a ``cross`` task with ``genes: "shared"`` (the config's default in ``benchmarks/tasks.json``), every
  method is trained on the reference genes the query has (matched by ``gsrcl.genes``), as Abdelaal et al. used
  the genes common to both datasets in their inter-dataset experiments (and as ``gsrcl train --genes-from``);
  with ``genes: "reference"``, on all the reference's genes. The query is aligned to the training genes
  (genes it lacks are zero columns; CellTypist instead leaves them out of its decision, as its own
  ``annotate``);
- ``macro_f1`` and ``accuracy`` are over the query cells whose type the reference has ("known" cells); an
  ``Unassigned`` known cell counts as wrong; cells of types the reference lacks ("unseen") are left out of them;
- ``median_f1`` / ``pct_unassigned`` as Abdelaal et al.: per-class F1 on the confusion table of the known cells
  without the ones predicted Unassigned (or any other rejection name their evaluator knows), the median over the
  known types present in the query, and the share of known cells left unassigned;
- tasks with unseen types also get ``unseen_auroc``, the AUROC of each method's confidence score for telling known
  cells (positive class) from unseen ones, and ``unseen_unassigned``, the share of unseen cells called Unassigned
  at the method's default cut-off;
- cross-validation tasks pool the predictions of the folds (every cell is predicted once) before scoring;
  per-fold macro-F1 values are kept too.

Methods: ``gsrcl`` / ``afrcl`` (``gsrcl.train`` default preset, ``gsrcl.annotate`` at p = 0.5, confidence
``conf_score``; also scored: GsRCL's ``max_raw_score``, ``novelty_score``, ``unseen_score_cell`` = novelty_score /
conf_score and ``unseen_score``, its mean over each cell's 15 nearest query cells, `gsrcl.neighbours`), ``svm`` and
``svm_rejection`` (Abdelaal's LinearSVC on log1p counts, and LinearSVC in ``CalibratedClassifierCV(cv=3)``
rejecting below 0.7), ``celltypist`` (CellTypist's logistic regression; see `CellTypistLR`); on tasks with unseen
types the baselines' confidence is also scored averaged over the same query neighbourhoods
(``conf_neighbourhood``).

Each task x method runs in a fresh worker process (``isolate=True``), so that its timings and peak memory are its
own; memory is the resident-set high-water mark of that process during the step (see `measure`).
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import __version__
from .errors import CorruptFileError, GsrclError, LabelsError, MissingPathError, OutputError

log = logging.getLogger("gsrcl.benchmark")

UNASSIGNED = "Unassigned"
# The names Abdelaal et al.'s evaluate.R drops from the confusion table before computing F1.
REJECTED = frozenset({"Unassigned", "unassigned", "Unknown", "unknown", "rand", "Node", "ambiguous"})
OURS = ("gsrcl", "afrcl")
BASELINES = ("svm", "svm_rejection", "celltypist")
METHOD_NAMES = OURS + BASELINES
KINDS = ("cross", "cv")
GENE_SETS = ("shared", "reference")
DEFAULT_P = 0.5
SVM_REJECTION_THRESHOLD = 0.7
DEFAULT_SEED = 1111
TARGET_MARGIN = 0.005  # ours should reach the best baseline's macro-F1 minus this on every task
LABEL = "benchmark_label"  # obs column holding the (mapped) truth in the loaded copies
QUICK_MAX_CELLS = 300  # --quick: cells per side at most (stratified)
# --quick: tiny networks and a few epochs for our methods (keys exist in both methods' presets)
QUICK_OVERRIDES = {"hidden": (64,), "out": 32, "head": (32, 16), "epochs": 3, "val_every": 1, "min_epochs": 0,
                   "svm_cv": 3}
RESULTS_JSON, RESULTS_MD, FIGURE = "accuracy.json", "accuracy.md", "accuracy.png"
MEMORY_NOTE = (
    "peak resident memory (VmHWM) of the worker process during the step; the high-water mark is reset just before "
    "the step through /proc/self/clear_refs; delta = that peak minus the resident memory when the step began (the "
    "data already loaded and the libraries imported are in the peak, not in the delta)"
)


# ------------------------------------------------------------------------------------------------- metrics
def _as_str(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def macro_f1(y_true, y_pred, known_types) -> float:
    """Macro-F1 over the known types present in ``y_true``, on the known cells only. A known cell predicted
    ``Unassigned`` (or any label outside those types) is a miss of its true type and nobody's false positive."""
    from sklearn.metrics import f1_score

    y_true, y_pred = _as_str(y_true), _as_str(y_pred)
    known = np.isin(y_true, list(known_types))
    classes = sorted(set(y_true[known]))
    if not classes:
        return float("nan")
    return float(f1_score(y_true[known], y_pred[known], labels=classes, average="macro", zero_division=0))


def accuracy(y_true, y_pred, known_types) -> float:
    """Share of known cells predicted as their type (Unassigned counts as wrong)."""
    y_true, y_pred = _as_str(y_true), _as_str(y_pred)
    known = np.isin(y_true, list(known_types))
    return float(np.mean(y_true[known] == y_pred[known])) if known.any() else float("nan")


def abdelaal_f1(y_true, y_pred, known_types) -> dict[str, Any]:
    """Abdelaal et al.'s scores on the known cells: per-class F1 on the confusion table without the cells
    predicted Unassigned (a type with no correctly assigned cell has F1 0), their median, the share of cells left
    unassigned and the accuracy of the assigned ones."""
    y_true, y_pred = _as_str(y_true), _as_str(y_pred)
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
    """AUROC of ``confidence`` for telling known cells (positive class) from cells of unseen types; None when the
    query holds only one of the two groups."""
    from sklearn.metrics import roc_auc_score

    is_known = np.isin(_as_str(y_true), list(known_types))
    if is_known.all() or not is_known.any():
        return None
    return float(roc_auc_score(is_known.astype(int), np.asarray(confidence, dtype=float)))


def unseen_unassigned(y_true, y_pred, known_types) -> float | None:
    """Share of unseen-type cells predicted Unassigned; None when there are none."""
    y_true, y_pred = _as_str(y_true), _as_str(y_pred)
    unseen = ~np.isin(y_true, list(known_types))
    return float(np.mean(np.isin(y_pred[unseen], list(REJECTED)))) if unseen.any() else None


def confusion(y_true, y_pred, known_types) -> dict[str, Any]:
    """Counts: rows = query types (known first, then unseen), columns = reference types then Unassigned."""
    y_true, y_pred = _as_str(y_true), _as_str(y_pred)
    known = sorted(known_types)
    present = set(y_true)
    rows = [t for t in known if t in present] + sorted(present - set(known))
    cols = known + [UNASSIGNED] + sorted(set(y_pred) - set(known) - {UNASSIGNED})
    table = pd.crosstab(pd.Series(y_true, name="true"), pd.Series(y_pred, name="pred"))
    table = table.reindex(index=rows, columns=cols, fill_value=0)
    return {"rows": rows, "cols": cols, "counts": table.to_numpy().astype(int).tolist()}


def evaluate(y_true, y_pred, known_types, confidence=None, scores: dict[str, np.ndarray] | None = None) -> dict:
    """All metrics of one method on one task (see the module docstring)."""
    y_true, y_pred = _as_str(y_true), _as_str(y_pred)
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


# ------------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Side:
    """One data file and the cells kept from it: ``filter`` maps an obs column to its allowed values (as text)."""

    file: str
    filter: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    reference: Side
    query: Side | None
    label_key: str = "cell_type"
    label_map_name: str | None = None
    label_map: dict[str, str] = field(default_factory=dict)
    unseen: tuple[str, ...] = ()
    folds: int = 5
    seed: int = DEFAULT_SEED
    description: str = ""
    genes: str = "reference"  # cross tasks: "shared" trains every method on the reference genes the query has

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("label_map")
        return d


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    tasks: dict[str, Task]
    label_maps: dict[str, dict[str, str]]


def _side(raw: Any, where: str) -> Side:
    if not isinstance(raw, dict) or not isinstance(raw.get("file"), str):
        raise GsrclError(f"{where}: needs a 'file' (a data file name); fix the task config")
    filt = raw.get("filter") or {}
    if not isinstance(filt, dict) or not all(isinstance(v, list) and v for v in filt.values()):
        raise GsrclError(f"{where}: 'filter' must map obs columns to non-empty lists of values; fix the task config")
    return Side(raw["file"], {str(k): tuple(str(x) for x in v) for k, v in filt.items()})


def load_config(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Config:
    """Read the task config (JSON; see ``benchmarks/tasks.json``). ``data_dir`` overrides the config's (which is
    relative to the config file)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"task config {path} does not exist: pass --config FILE (e.g. benchmarks/tasks.json)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"task config {path} is not valid JSON ({exc}): fix the file") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
        raise GsrclError(f"task config {path} needs a 'tasks' list: fix the file")
    maps = raw.get("label_maps") or {}
    if not isinstance(maps, dict) or not all(isinstance(m, dict) for m in maps.values()):
        raise GsrclError(f"task config {path}: 'label_maps' must map names to tables (old -> new); fix the file")
    maps = {str(k): {str(a): str(b) for a, b in m.items()} for k, m in maps.items()}
    default_genes = raw.get("genes", "reference")
    tasks: dict[str, Task] = {}
    for i, t in enumerate(raw["tasks"]):
        name = t.get("name") if isinstance(t, dict) else None
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise GsrclError(f"task config {path}: task {i} needs a 'name' of letters, digits, '_' or '-'")
        if name in tasks:
            raise GsrclError(f"task config {path}: task name {name!r} occurs twice; rename one")
        kind = t.get("kind")
        if kind not in KINDS:
            raise GsrclError(f"task {name}: kind must be one of {', '.join(KINDS)}, not {kind!r}; fix the task config")
        map_name = t.get("label_map")
        if map_name is not None and map_name not in maps:
            raise GsrclError(f"task {name}: label map {map_name!r} is not in 'label_maps' ({', '.join(maps) or 'none'})")
        query = _side(t.get("query"), f"task {name} query") if kind == "cross" else None
        if kind == "cv" and t.get("unseen"):
            raise GsrclError(f"task {name}: a cross-validation task has no unseen types; remove 'unseen'")
        genes = t.get("genes", default_genes)
        if genes not in GENE_SETS:
            raise GsrclError(f"task {name}: genes must be one of {', '.join(GENE_SETS)}, not {genes!r}; fix the task config")
        folds = int(t.get("folds", 5))
        if kind == "cv" and folds < 2:
            raise GsrclError(f"task {name}: 'folds' must be at least 2")
        tasks[name] = Task(
            name=name, kind=kind, reference=_side(t.get("reference"), f"task {name} reference"), query=query,
            label_key=str(t.get("label_key", "cell_type")), label_map_name=map_name,
            label_map=maps.get(map_name, {}) if map_name else {}, unseen=tuple(map(str, t.get("unseen") or ())),
            folds=folds, seed=int(t.get("seed", DEFAULT_SEED)), description=str(t.get("description", "")),
            genes=str(genes),
        )
    base = Path(data_dir) if data_dir is not None else (path.parent / str(raw.get("data_dir", "."))).resolve()
    return Config(path=path, data_dir=base, tasks=tasks, label_maps=maps)


def map_labels(values, table: dict[str, str]) -> np.ndarray:
    """Labels as text, renamed through ``table`` (names not in it are kept)."""
    return np.asarray([table.get(v, v) for v in map(str, values)], dtype=object)


def load_side(side: Side, task: Task, data_dir: str | os.PathLike):
    """The cells of ``side`` (filtered, unique names) as an in-memory AnnData with the mapped truth in
    ``obs[LABEL]``; the file itself is only read."""
    import anndata as ad

    path = Path(data_dir) / side.file
    if not path.is_file():
        raise MissingPathError(f"task {task.name}: data file {path} does not exist: check data_dir or pass --data DIR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicated obs names, made unique below
        adata = ad.read_h5ad(path)
        adata.obs_names_make_unique()  # the in-memory copy only
    keep = np.ones(adata.n_obs, dtype=bool)
    for col, allowed in side.filter.items():
        if col not in adata.obs:
            raise GsrclError(f"task {task.name}: filter column {col!r} is not in {side.file}'s obs "
                             f"({', '.join(map(str, adata.obs.columns))}); fix the task config")
        keep &= adata.obs[col].astype(str).isin(allowed).to_numpy()
    if task.label_key not in adata.obs:
        raise LabelsError(f"task {task.name}: label column {task.label_key!r} is not in {side.file}'s obs; fix the "
                          "task's label_key")
    if not keep.any():
        raise GsrclError(f"task {task.name}: the filter {side.filter} keeps no cell of {side.file}; fix the filter")
    adata = adata[keep].copy()
    adata.obs[LABEL] = pd.Categorical(map_labels(adata.obs[task.label_key], task.label_map))
    return adata


def _cap(adata, max_cells: int | None, seed: int):
    """At most ``max_cells`` cells, sampled per type in proportion (every type keeps at least one)."""
    if max_cells is None or adata.n_obs <= max_cells:
        return adata
    rng = np.random.default_rng(seed)
    labels = adata.obs[LABEL].astype(str).to_numpy()
    frac = max_cells / adata.n_obs
    idx = [rng.permutation(np.flatnonzero(labels == c))[: max(1, round(frac * np.sum(labels == c)))]
           for c in sorted(set(labels))]
    return adata[np.sort(np.concatenate(idx))].copy()


def task_splits(task: Task, data_dir, max_cells: int | None = None) -> list[tuple[Any, Any]]:
    """The (reference, query) pairs of a task: one for ``cross``, one per fold for ``cv``. Checks the task's
    ``unseen`` list against the data."""
    ref = _cap(load_side(task.reference, task, data_dir), max_cells, task.seed)
    if task.kind == "cv":
        from sklearn.model_selection import StratifiedKFold

        labels = ref.obs[LABEL].astype(str).to_numpy()
        folds = StratifiedKFold(n_splits=task.folds, shuffle=True, random_state=task.seed)
        return [(ref[tr].copy(), ref[te].copy()) for tr, te in folds.split(np.zeros(len(labels)), labels)]
    query = _cap(load_side(task.query, task, data_dir), max_cells, task.seed)
    if task.genes == "shared":
        ref = shared_genes(ref, query)
    unseen = sorted(set(query.obs[LABEL].astype(str)) - set(ref.obs[LABEL].astype(str)))
    if set(unseen) != set(task.unseen):
        raise GsrclError(f"task {task.name}: the query types the reference lacks are {unseen or 'none'}, but the "
                         f"config lists unseen {list(task.unseen) or 'none'}: fix 'unseen' or the label map")
    return [(ref, query)]


def shared_genes(ref, query):
    """``ref`` restricted to the genes ``query`` has (matched as prediction matches them), in its order."""
    from .genes import match_genes

    keep = match_genes(query.var, list(map(str, ref.var_names))).ref_to_query >= 0
    return ref if keep.all() else ref[:, keep].copy()


# ------------------------------------------------------------------------------------------------- methods
@dataclass
class Prediction:
    labels: np.ndarray  # text, UNASSIGNED for rejected cells
    confidence: np.ndarray  # higher = more confident (used for the unseen-type AUROC)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # further confidence scores
    best: np.ndarray | None = None  # the top-scoring type of every cell, before any rejection (None: = labels)


def model_input(adata) -> sp.csr_matrix:
    """The matrix as natural log1p values (counts get log1p; log values are never logged twice)."""
    from .values import detect_values, to_model_input

    return to_model_input(adata.X, detect_values(adata.X))


def log1p_cp10k(adata) -> sp.csr_matrix:
    """log1p of counts per 10,000 over the file's own genes, as CellTypist expects; log values are first taken
    back to their linear scale (``expm1`` of their natural log1p form)."""
    from .values import detect_values, library_size_normalize, to_model_input

    report = detect_values(adata.X)
    linear = to_model_input(adata.X, report)
    np.expm1(linear.data, out=linear.data)
    out = library_size_normalize(linear, 1e4)
    np.log1p(out.data, out=out.data)
    return out


def align_to(X: sp.csr_matrix, var: pd.DataFrame, genes: Sequence[str]) -> sp.csr_matrix:
    """X (cells x the query's genes) as cells x ``genes``, zero where the query lacks a gene."""
    from .genes import align, match_genes

    return align(X, match_genes(var, list(genes)))


def _top(decision: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if decision.ndim == 1:  # binary problems give one column: the score of classes[1]
        decision = np.column_stack([-decision, decision])
    return classes[decision.argmax(axis=1)].astype(object), decision.max(axis=1)


class LinearSVM:
    """Abdelaal et al.'s SVM: ``LinearSVC()`` on log1p counts; confidence = the highest decision value."""

    name = "svm"
    implementation = "scikit-learn LinearSVC (C=1) on log1p counts, as Abdelaal et al. run_SVM.py"
    modules = ("sklearn.svm", "sklearn.calibration", "gsrcl.genes", "gsrcl.values")

    def __init__(self, seed: int = DEFAULT_SEED):
        self.seed = seed

    def fit(self, adata, labels) -> "LinearSVM":
        from sklearn.svm import LinearSVC

        self.genes_ = list(adata.var_names.astype(str))
        self.model_ = LinearSVC(random_state=self.seed).fit(model_input(adata), _as_str(labels))
        return self

    def predict(self, adata) -> Prediction:
        X = align_to(model_input(adata), adata.var, self.genes_)
        labels, conf = _top(self.model_.decision_function(X), self.model_.classes_)
        return Prediction(labels, conf)


class SVMRejection(LinearSVM):
    """Abdelaal et al.'s SVMrejection: ``CalibratedClassifierCV(LinearSVC(), cv=3)``; a cell whose highest
    calibrated probability is below ``threshold`` (0.7) is Unassigned; confidence = that probability."""

    name = "svm_rejection"
    implementation = ("scikit-learn CalibratedClassifierCV(LinearSVC(), cv=3) on log1p counts, Unassigned below "
                      "max probability 0.7, as Abdelaal et al. run_SVMrejection.py")

    def __init__(self, seed: int = DEFAULT_SEED, threshold: float = SVM_REJECTION_THRESHOLD):
        super().__init__(seed)
        self.threshold = threshold

    def fit(self, adata, labels) -> "SVMRejection":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        self.genes_ = list(adata.var_names.astype(str))
        model = CalibratedClassifierCV(LinearSVC(random_state=self.seed), cv=3)
        self.model_ = model.fit(model_input(adata), _as_str(labels))
        return self

    def predict(self, adata) -> Prediction:
        X = align_to(model_input(adata), adata.var, self.genes_)
        proba = self.model_.predict_proba(X)
        best = self.model_.classes_[proba.argmax(axis=1)].astype(object)
        conf = proba.max(axis=1)
        labels = np.where(conf < self.threshold, UNASSIGNED, best).astype(object)
        return Prediction(labels, conf, best=best)


class CellTypistLR:
    """CellTypist's model (``celltypist.train`` defaults, ``annotate(mode='best match')``) rebuilt with
    scikit-learn: log1p CP10k (each file normalised over its own genes, as CellTypist requires); genes never
    expressed in the reference dropped; per-gene z-scores (``StandardScaler``, mean-centred) clipped above at 10;
    one-vs-rest ``LogisticRegression(C=1, lbfgs, max_iter=1000)``; label = highest decision value; confidence =
    its logistic probability. Reference genes the query lacks are left out of the decision (z-score 0), which is
    what ``celltypist.annotate`` does (it keeps only the model's features found in the query), rather than being
    zero-filled before scaling. Best match never rejects. The celltypist 1.7.1 package installs but cannot train with scikit-learn >= 1.8 (it passes
    ``multi_class='ovr'``, which LogisticRegression no longer takes), hence the rebuild."""

    name = "celltypist"
    modules = ("sklearn.linear_model", "sklearn.multiclass", "sklearn.preprocessing", "gsrcl.genes", "gsrcl.values")
    implementation = ("CellTypist 1.7.1's model rebuilt with scikit-learn (the package cannot train under "
                      "scikit-learn >= 1.8): z-scored log1p CP10k (clip 10), one-vs-rest LogisticRegression "
                      "(C=1, lbfgs, max_iter=1000), best match, no rejection; reference genes absent from the "
                      "query are left out of the decision, as celltypist.annotate does")

    def __init__(self, seed: int = DEFAULT_SEED, max_iter: int = 1000):
        self.seed = seed
        self.max_iter = max_iter

    def fit(self, adata, labels) -> "CellTypistLR":
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
        self.model_.fit(Z, _as_str(labels))
        return self

    def predict(self, adata) -> Prediction:
        from .genes import align, match_genes

        match = match_genes(adata.var, self.genes_)
        Z = self.scaler_.transform(align(log1p_cp10k(adata), match).toarray())
        np.minimum(Z, 10, out=Z)
        Z[:, match.ref_to_query < 0] = 0  # genes the query lacks drop out of the decision, as celltypist.annotate
        labels, top = _top(self.model_.decision_function(Z), self.model_.classes_)
        return Prediction(labels, 1.0 / (1.0 + np.exp(-top)))


class OurMethod:
    """GsRCL or AF-RCL through the public API: ``gsrcl.train`` (default preset) then ``gsrcl.annotate`` at
    ``p`` on the query aligned to the reference genes. Confidence = ``conf_score``; also scored: GsRCL's
    ``max_raw_score`` and (negated) ``novelty_score``, ``unseen_score`` and ``unseen_score_cell``."""

    modules = ("torch", "gsrcl.training", "gsrcl.annotation", "gsrcl.methods.afrcl", "gsrcl.methods.gsrcl", "gsrcl.genes")

    def __init__(self, method: str, seed: int = DEFAULT_SEED, p: float = DEFAULT_P, quick: bool = False,
                 overrides: dict[str, Any] | None = None):
        self.name = self.method = method
        self.seed, self.p, self.quick = seed, p, quick
        self.overrides = dict(overrides or {})  # hyperparameters other than the preset's (trials, not the benchmark)
        settings = "".join(f", {k}={v!r}" for k, v in self.overrides.items())
        self.implementation = (f"gsrcl.train(method='{method}', preset='default', seed={seed}{settings})"
                               + (f" with --quick overrides {QUICK_OVERRIDES}" if quick else "")
                               + f" + gsrcl.annotate(p={p})")

    def fit(self, adata, labels) -> "OurMethod":
        from .training import train

        overrides = {**(QUICK_OVERRIDES if self.quick else {}), **self.overrides}
        epochs = overrides.pop("epochs", None)
        self.reference_ = train(adata, labels_key=np.asarray(_as_str(labels)), method=self.method, preset="default",
                                epochs=epochs, seed=self.seed, quiet=True, **overrides)
        return self

    @property
    def svm_inputs(self) -> dict[str, str] | None:
        """GsRCL: what each type's SVM takes, ``encoder`` or ``genes`` (``gene_svm``); None for AF-RCL."""
        tasks = (self.reference_.manifest.get("validation") or {}).get("tasks") or {}
        inputs = {t: v["input"] for t, v in tasks.items() if isinstance(v, dict) and "input" in v}
        return inputs or None

    def predict(self, adata) -> Prediction:
        import anndata as ad

        from .annotation import annotate

        genes = list(self.reference_.genes)
        query = ad.AnnData(align_to(adata.X, adata.var, genes), obs=pd.DataFrame(index=adata.obs_names),
                           var=pd.DataFrame(index=pd.Index(genes)))
        out = annotate(query, self.reference_, p=self.p, quiet=True)
        obs = out.obs
        scores = {"max_raw_score": obs["max_raw_score"].to_numpy(float)} if "max_raw_score" in obs else {}
        for name in ("novelty_score", "unseen_score", "unseen_score_cell"):  # negated: higher = more likely known
            if name in obs:
                scores[name] = -obs[name].to_numpy(float)
        types = np.asarray(out.uns["gsrcl"]["cell_types"], dtype=object)
        best = types[np.asarray(out.obsm["probabilities"]).argmax(axis=1)]
        return Prediction(obs["predicted_labels"].astype(str).to_numpy(object), obs["conf_score"].to_numpy(float),
                          scores, best=best)


def make_method(name: str, seed: int = DEFAULT_SEED, quick: bool = False, overrides: dict[str, Any] | None = None):
    """A method of the benchmark; ``overrides``: hyperparameters of ours other than the preset's."""
    if name in OURS:
        return OurMethod(name, seed=seed, quick=quick, overrides=overrides)
    if overrides:
        raise GsrclError(f"settings {sorted(overrides)} are for gsrcl or afrcl, not the baseline {name!r}")
    if name == "svm":
        return LinearSVM(seed)
    if name == "svm_rejection":
        return SVMRejection(seed)
    if name == "celltypist":
        return CellTypistLR(seed)
    raise GsrclError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")


def ours_available() -> str | None:
    """None when ``gsrcl.train`` and ``gsrcl.annotate`` can be imported, else why not."""
    for mod, attr in (("gsrcl.training", "train"), ("gsrcl.annotation", "annotate")):
        try:
            if not hasattr(importlib.import_module(mod), attr):
                return f"{mod}.{attr} does not exist yet"
        except ImportError as exc:
            return f"{mod} cannot be imported ({exc})"
    return None


# ------------------------------------------------------------------------------------------------- running
def _proc_status(key: str) -> int | None:
    """A memory line of /proc/self/status in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _maxrss_kib() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if platform.system() == "Darwin" else rss


@contextmanager
def measure() -> Iterator[dict[str, Any]]:
    """Wall seconds and peak resident memory (MiB) of the enclosed step; ``delta_mib`` is the peak minus the
    resident memory at the start. Where the high-water mark cannot be reset, the peak is the process's so far."""
    gc.collect()
    record: dict[str, Any] = {}
    reset = _reset_peak()
    start = _proc_status("VmRSS")
    t0 = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = time.perf_counter() - t0
        peak = _proc_status("VmHWM") if reset else _maxrss_kib()
        record["peak_mib"] = peak / 1024 if peak is not None else None
        record["delta_mib"] = (peak - start) / 1024 if peak is not None and start is not None else None
        record["peak_reset"] = reset


def run_job(task: Task, data_dir: str, method: str, seed: int = DEFAULT_SEED, quick: bool = False,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and predict ``method`` on every split of ``task``; what `score_job` needs, as plain values."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the baselines run with their default max_iter
        warnings.simplefilter("ignore", FutureWarning)
        return _run_splits(task, data_dir, method, seed, quick, overrides)


def _child_job(task: Task, data_dir: str, method: str, seed: int, quick: bool, overrides=None) -> dict[str, Any]:
    logging.getLogger("gsrcl").setLevel(logging.ERROR)  # the parent reports failures
    return run_job(task, data_dir, method, seed, quick, overrides)


def _run_splits(task: Task, data_dir: str, method: str, seed: int, quick: bool, overrides=None) -> dict[str, Any]:
    out: dict[str, Any] = {"splits": []}
    for ref, query in task_splits(task, data_dir, QUICK_MAX_CELLS if quick else None):
        est = make_method(method, seed=seed, quick=quick, overrides=overrides)
        for mod in est.modules:  # imports are not the method's memory or time
            importlib.import_module(mod)
        with measure() as fit:
            est.fit(ref, ref.obs[LABEL].to_numpy())
        with measure() as pred:
            result = est.predict(query)
        scores = dict(result.scores)
        if method in BASELINES and not np.isin(_as_str(query.obs[LABEL]), _as_str(ref.obs[LABEL])).all():
            graph = query_neighbourhoods(query, list(ref.var_names.astype(str)))
            if graph is not None:  # the neighbourhoods our unseen_score reads, for a like-for-like comparison
                scores["conf_neighbourhood"] = graph.smooth(result.confidence)
        out["implementation"] = est.implementation
        out["splits"].append({
            "n_ref": int(ref.n_obs), "n_query": int(query.n_obs), "n_genes": int(ref.n_vars),
            "ref_types": sorted(set(ref.obs[LABEL].astype(str))),
            "y_true": list(_as_str(query.obs[LABEL])), "y_pred": list(_as_str(result.labels)),
            "y_best": list(_as_str(result.labels if result.best is None else result.best)),
            "confidence": np.asarray(result.confidence, float).tolist(),
            "scores": {k: np.asarray(v, float).tolist() for k, v in scores.items()},
            "fit": fit, "predict": pred, "svm_inputs": getattr(est, "svm_inputs", None),
        })
    return out


def query_neighbourhoods(query, genes: Sequence[str]):
    """The query neighbourhoods our methods average ``unseen_score`` over (`gsrcl.neighbours`, default settings),
    from the query aligned to the training ``genes`` as the benchmark gives it to them; None for too few cells."""
    from .neighbours import QueryNeighbours, in_blocks, min_cells
    from .novelty import novelty_input

    if query.n_obs < min_cells():
        return None
    return QueryNeighbours().fit(in_blocks(novelty_input(align_to(model_input(query), query.var, genes))), query.n_obs)


def _run_isolated(task: Task, data_dir: str, method: str, seed: int, quick: bool, overrides=None) -> dict[str, Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child_job, task, data_dir, method, seed, quick, overrides).result()


def score_job(job: dict[str, Any]) -> dict[str, Any]:
    """Metrics, confusion table, timings and memory of one method on one task from `run_job`'s output."""
    splits = job["splits"]
    known = sorted(set().union(*(s["ref_types"] for s in splits)))
    cat = lambda key: np.concatenate([np.asarray(s[key], dtype=object if key != "confidence" else float)
                                      for s in splits])
    scores = {k: np.concatenate([np.asarray(s["scores"][k], float) for s in splits]) for k in splits[0]["scores"]}
    y_true, y_pred = cat("y_true"), cat("y_pred")
    metrics = evaluate(y_true, y_pred, known, cat("confidence"), scores)
    if all("y_best" in s for s in splits):  # entries made before this was recorded lack it
        metrics["macro_f1_best"] = macro_f1(y_true, cat("y_best"), known)
    mem = lambda step, key: (max((s[step][key] for s in splits if s[step][key] is not None), default=None))
    entry = {
        "status": "ok",
        "implementation": job.get("implementation", ""),
        "metrics": metrics,
        "confusion": confusion(y_true, y_pred, known),
        "n_ref": [s["n_ref"] for s in splits],
        "n_query": [s["n_query"] for s in splits],
        "n_genes": [s.get("n_genes") for s in splits],
        "reference_types": known,
        "fit_seconds": [s["fit"]["seconds"] for s in splits],
        "predict_seconds": [s["predict"]["seconds"] for s in splits],
        "memory_mib": {"fit_peak": mem("fit", "peak_mib"), "fit_delta": mem("fit", "delta_mib"),
                       "predict_peak": mem("predict", "peak_mib"), "predict_delta": mem("predict", "delta_mib"),
                       "peak_reset": all(s["fit"]["peak_reset"] for s in splits)},
    }
    if any(s.get("svm_inputs") for s in splits):
        entry["svm_inputs"] = [s.get("svm_inputs") for s in splits]
    if len(splits) > 1:
        entry["per_fold"] = [{"macro_f1": macro_f1(s["y_true"], s["y_pred"], s["ref_types"]),
                              "accuracy": accuracy(s["y_true"], s["y_pred"], s["ref_types"])} for s in splits]
    return entry


def _environment() -> dict[str, Any]:
    import sklearn

    env = {"gsrcl": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "scikit-learn": sklearn.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        env["cpus_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_benchmark(
    config: Config,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    *,
    quick: bool = False,
    seed: int = DEFAULT_SEED,
    isolate: bool = True,
    merge: bool = False,
    command: str = "",
    quiet: bool = False,
) -> dict[str, Any]:
    """Run ``methods`` on ``tasks`` (all by default), write ``accuracy.{json,md,png}`` (and one
    ``confusion_<task>.png`` per task where our methods ran) to ``out`` and return the results. ``merge`` keeps
    the other tasks / methods of an earlier ``accuracy.json`` in ``out``. A method that fails on a task is recorded
    as failed with its one-line error; the run goes on."""
    from tqdm.auto import tqdm

    task_names = list(tasks) if tasks else list(config.tasks)
    unknown = [t for t in task_names if t not in config.tasks]
    if unknown:
        raise GsrclError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(config.tasks)}")
    method_names = list(methods) if methods else list(METHOD_NAMES)
    unknown = [m for m in method_names if m not in METHOD_NAMES]
    if unknown:
        raise GsrclError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHOD_NAMES)}")
    for name in task_names:  # load every task once (files, filters, labels, unseen types) before training
        task_splits(config.tasks[name], config.data_dir, QUICK_MAX_CELLS if quick else None)
    out = Path(out) if out is not None else config.path.parent / "results"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out} ({exc.strerror}): pass another --out") from None

    results = _load_previous(out / RESULTS_JSON) if merge else None
    if results is None:
        results = {"tasks": {}}
    results.update({"command": command, "created": _now(), "quick": quick, "seed": seed,
                    "environment": _environment(), "memory": MEMORY_NOTE if isolate else
                    MEMORY_NOTE + " (all methods in one process: freed memory of an earlier method may be reused)",
                    "isolated": isolate, "config": str(config.path), "data_dir": str(config.data_dir),
                    "protocol": __doc__.split("Methods:")[0].strip()})
    missing_ours = ours_available() if any(m in OURS for m in method_names) else None
    jobs = [(t, m) for t in task_names for m in method_names]
    bar = tqdm(jobs, disable=quiet, desc="benchmark", unit="job")
    for name, method in bar:
        task = config.tasks[name]
        bar.set_postfix_str(f"{name} / {method}")
        slot = results["tasks"].setdefault(name, {"methods": {}})
        slot.update({"task": task.summary()})
        entry: dict[str, Any]
        if method in OURS and missing_ours:
            entry = {"status": "not available", "note": missing_ours}
        else:
            t0 = time.perf_counter()
            try:
                job = (_run_isolated if isolate else run_job)(task, str(config.data_dir), method, seed, quick)
                entry = score_job(job)
            except Exception as exc:  # one method failing does not stop the others
                msg = " ".join(f"{type(exc).__name__}: {exc}".split())
                log.warning("%s on %s failed: %s", method, name, msg)
                entry = {"status": "failed", "note": msg[:500]}
            entry["wall_seconds"] = time.perf_counter() - t0
        entry.update({"command": command, "finished": _now(), "quick": quick, "seed": seed})
        slot["methods"][method] = entry
        if entry.get("status") == "ok":
            # cross-validation: reference cells per fold (mean); query cells = every cell once
            slot["n_ref"], slot["n_query"] = round(float(np.mean(entry["n_ref"]))), sum(entry["n_query"])
            slot["reference_types"] = entry["reference_types"]
            slot["query_types"] = entry["confusion"]["rows"]
        _write_json(out / RESULTS_JSON, results)  # after every job, so that a long run can be followed
    write_report(results, out, config)
    return results


def _load_previous(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s cannot be read; starting a fresh results file", path)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("tasks"), dict) else None


# ------------------------------------------------------------------------------------------------- report
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the report private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)

    _atomic_write(path, write)


def _write_json(path: Path, results: dict) -> None:
    _write_text(path, json.dumps(_jsonable(results), indent=1) + "\n")


def target_f1(task: dict[str, Any]) -> float | None:
    """The macro-F1 ours should reach on a task of the results: the best baseline's minus ``TARGET_MARGIN``
    (None when no baseline ran)."""
    scores = [e["metrics"]["macro_f1"] for m, e in task["methods"].items()
              if m in BASELINES and e.get("status") == "ok" and e["metrics"].get("macro_f1") is not None]
    return max(scores) - TARGET_MARGIN if scores else None


def _fmt(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _seconds(values) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    return f"{mean:.2f}" if mean < 10 else f"{mean:.0f}"


def _mib(mem: dict, step: str) -> str:
    peak, delta = mem.get(f"{step}_peak"), mem.get(f"{step}_delta")
    if peak is None:
        return "–"
    return f"{peak:.0f} (+{max(delta, 0):.0f})" if delta is not None else f"{peak:.0f}"


def _side_text(side: dict | None) -> str:
    if not side:
        return ""
    filt = "; ".join(f"{k} in {', '.join(v)}" for k, v in (side.get("filter") or {}).items())
    return f"`{side['file']}`" + (f" ({filt})" if filt else "")


def _extra_aurocs(metrics: dict, digits: int = 3) -> str:
    """'name AUROC' for each further confidence score of an entry (GsRCL's max_raw_score, our novelty_score,
    unseen_score and unseen_score_cell, the baselines' conf_neighbourhood)."""
    prefix = "unseen_auroc_"
    return ", ".join(f"{k[len(prefix):]} {_fmt(v, digits)}" for k, v in metrics.items()
                     if k.startswith(prefix) and v is not None)


def markdown(results: dict[str, Any]) -> str:
    """The report: command, summary table of macro-F1, one table per task, method and protocol notes."""
    tasks = results["tasks"]
    methods = [m for m in METHOD_NAMES if any(m in t["methods"] for t in tasks.values())]
    entries = [e for t in tasks.values() for e in t["methods"].values()]
    commands = sorted({e.get("command", "") for e in entries} - {""})
    quick = any(e.get("quick") for e in entries)
    lines = ["# Accuracy benchmark: GsRCL and AF-RCL against the usual alternatives", ""]
    lines += ["Made with:", "", "```", *(commands or [results.get("command", "")]), "```", ""]
    env = results.get("environment", {})
    lines += [f"Last run {results.get('created', '')} with gsrcl {env.get('gsrcl', '')}, scikit-learn "
              f"{env.get('scikit-learn', '')}, torch {env.get('torch', '–')}, on {env.get('cpus_available', env.get('cpu_count'))} "
              f"CPU core(s) ({env.get('platform', '')}). `benchmarks/accuracy.py` takes the same flags."
              + (" **Entries made with --quick (tiny models, at most "
                 f"{QUICK_MAX_CELLS} cells per side) are not a measurement.**" if quick else ""), ""]
    lines += ["## Macro-F1 over the reference's types present in the query", "",
              f"`target`: the best baseline's macro-F1 minus {TARGET_MARGIN}, what GsRCL and AF-RCL should reach; "
              "an entry of ours below it is marked with *.", "",
              "| task | " + " | ".join(methods) + " | target |", "|---" * (len(methods) + 2) + "|"]
    for name, t in tasks.items():
        cells = []
        target = target_f1(t)
        for m in methods:
            e = t["methods"].get(m)
            if e is None or e["status"] != "ok":
                cells.append("" if e is None else e["status"])
                continue
            f1 = e["metrics"]["macro_f1"]
            short = m in OURS and target is not None and f1 is not None and f1 < target
            cells.append(_fmt(f1) + (" *" if short else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(target)} |")
    lines += ["", "## Macro-F1 without rejection", "",
              "Every cell labelled with its top-scoring type (no Unassigned), which is what svm and celltypist "
              "always do; ours and svm_rejection above reject at their default cut-offs (p = 0.5, 0.7). Blank: an "
              "entry made before this was recorded.", "",
              "| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for name, t in tasks.items():
        cells = []
        for m in methods:
            e = t["methods"].get(m)
            ok = e is not None and e["status"] == "ok" and "macro_f1_best" in e["metrics"]
            cells.append(_fmt(e["metrics"]["macro_f1_best"]) if ok else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    unseen_tasks = [(n, t) for n, t in tasks.items() if t.get("task", {}).get("unseen")]
    if unseen_tasks:
        lines += ["", "## Unseen-type AUROC", "",
                  "AUROC of each method's confidence for telling the query's cells of known types from those of "
                  "types the reference lacks; in brackets further scores (ours: `novelty_score`, how unlike "
                  "every reference type a cell is, `gsrcl.novelty`; `unseen_score_cell`: novelty_score / "
                  "conf_score; `unseen_score`: that averaged over each cell's 15 nearest query cells in the "
                  "query's own principal components, `gsrcl.neighbours`; the baselines' `conf_neighbourhood`: "
                  "their confidence averaged over the same neighbourhoods); four decimals, as several lie "
                  "within 0.001 of each other.", "",
                  "| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for name, t in unseen_tasks:
            cells = []
            for m in methods:
                e = t["methods"].get(m)
                ok = e is not None and e["status"] == "ok"
                extra = _extra_aurocs(e["metrics"], 4) if ok else ""
                cells.append(_fmt(e["metrics"].get("unseen_auroc"), 4) + (f" ({extra})" if extra else "") if ok else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Per task", "",
              "Columns: macro-F1 and accuracy over the known cells (Unassigned counts as wrong); median F1 / % "
              "unassigned as Abdelaal et al. (F1 per type on the assigned known cells); for tasks with unseen "
              "types, the AUROC of the confidence score for known vs unseen cells and the share of unseen cells "
              "called Unassigned; train / predict seconds (per fold for cross-validation); peak memory of the "
              "step in MiB (+ its increase over the start of the step).", ""]
    for name, t in tasks.items():
        spec = t.get("task", {})
        lines.append(f"### {name}")
        lines.append("")
        if spec.get("description"):
            lines += [spec["description"] + ".", ""]
        if spec.get("kind") == "cv":
            lines.append(f"{spec.get('folds')}-fold stratified cross-validation (seed {spec.get('seed')}) on "
                         f"{_side_text(spec.get('reference'))}")
        else:
            lines.append(f"Reference {_side_text(spec.get('reference'))} → query {_side_text(spec.get('query'))}")
        done = next((e for e in t["methods"].values() if e.get("status") == "ok"), None)
        if done:
            n_ref, n_query = round(float(np.mean(done["n_ref"]))), sum(done["n_query"])
            cells = (f"{n_query} cells, each predicted once by a model of ~{n_ref} cells"
                     if spec.get("kind") == "cv" else f"{n_ref} reference / {n_query} query cells")
            lines[-1] += f": {cells}, reference types {', '.join(done['reference_types'])}"
        if done and spec.get("kind") == "cross" and (done.get("n_genes") or [None])[0]:
            which = "the reference genes the query has" if spec.get("genes") == "shared" else "the reference's genes"
            lines[-1] += f"; every method trained on {which} ({done['n_genes'][0]:,})"
        if spec.get("unseen"):
            lines[-1] += f"; unseen in the query: {', '.join(spec['unseen'])}"
        if spec.get("label_map_name"):
            lines[-1] += f"; labels harmonised with the `{spec['label_map_name']}` table"
        lines[-1] += "."
        lines.append("")
        unseen = bool(spec.get("unseen"))
        head = ["method", "macro-F1", "accuracy", "median F1 / % unassigned"]
        head += ["unseen AUROC", "unseen → Unassigned"] if unseen else []
        head += ["train s", "predict s", "train MiB", "predict MiB"]
        lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for m in methods:
            e = t["methods"].get(m)
            if e is None:
                continue
            if e["status"] != "ok":
                lines.append(f"| {m} | {e['status']}: {e.get('note', '')} |" + " |" * (len(head) - 2))
                continue
            r = e["metrics"]
            row = [m, _fmt(r["macro_f1"]), _fmt(r["accuracy"]),
                   f"{_fmt(r['median_f1'])} / {_fmt(r['pct_unassigned'], 1)}%"]
            if unseen:
                auc = _fmt(r.get("unseen_auroc"), 4)
                extra = _extra_aurocs(r, 4)
                if extra:
                    auc += f" ({extra})"
                row += [auc, "never rejects" if m == "celltypist" else
                        f"{_fmt(100 * r['unseen_unassigned'], 1)}%" if r.get("unseen_unassigned") is not None else "–"]
            mem = e.get("memory_mib", {})
            row += [_seconds(e["fit_seconds"]), _seconds(e["predict_seconds"]), _mib(mem, "fit"), _mib(mem, "predict")]
            lines.append("| " + " | ".join(row) + " |")
        if spec.get("kind") == "cv":
            folds = {m: e["per_fold"] for m, e in t["methods"].items() if e.get("status") == "ok" and "per_fold" in e}
            if folds:
                lines += ["", "Per-fold macro-F1: " + "; ".join(
                    f"{m} {', '.join(_fmt(f['macro_f1']) for f in v)}" for m, v in folds.items())]
        pics = [m for m in OURS if t["methods"].get(m, {}).get("status") == "ok"]
        if pics:
            lines += ["", f"Confusion of {' and '.join(pics)}: `confusion_{name}.png`."]
        for m in pics:
            splits = t["methods"][m].get("svm_inputs") or []
            on_genes = [", ".join(k for k, v in (f or {}).items() if v == "genes") or "no type" for f in splits]
            if len(on_genes) > 1:
                on_genes = [f"fold {i + 1}: {g}" for i, g in enumerate(on_genes)]
            inputs = [v for f in splits for v in (f or {}).values()]
            if inputs and all(v == "encoder+genes" for v in inputs):
                lines += ["", f"{m}'s every type pools an SVM on its encoder's output and one on the genes "
                          "(`gene_svm='pool'`)."]
            elif on_genes:
                lines += ["", f"{m}'s SVM on the genes (`gene_svm`) for: {'; '.join(on_genes)} (the others on the "
                          "encoder)."]
        lines.append("")
    lines += ["## Methods", ""]
    impl = {}
    for t in tasks.values():
        for m, e in t["methods"].items():
            if e.get("implementation"):
                impl.setdefault(m, e["implementation"])
            elif e.get("status") == "not available":
                impl.setdefault(m, f"not available: {e.get('note', '')}")
    lines += [f"- **{m}**: {impl[m]}" for m in methods if m in impl]
    lines += ["- Confidence scores for the AUROC: ours `conf_score` (GsRCL also `max_raw_score`, the highest "
              "un-normalised one-vs-rest probability; both also `novelty_score`, `unseen_score_cell` = novelty_score / "
              "conf_score and `unseen_score`, its mean over each cell's 15 nearest query cells, negated); svm the "
              "highest decision value; svm_rejection the highest calibrated probability; celltypist the highest "
              "one-vs-rest probability; for the baselines also that confidence averaged over the same query "
              "neighbourhoods (`conf_neighbourhood`).",
              "- Cut-offs: ours p = 0.5 (Unassigned when the reported probability is <= p); svm_rejection 0.7; "
              "svm and celltypist (best match) never reject.", ""]
    lines += ["## Notes", "",
              f"- Memory: {results.get('memory', MEMORY_NOTE)}.",
              "- Timings are wall-clock seconds of one process on a machine shared with other work; compare them "
              "within a run, not across machines.",
              "- Protocol: Abdelaal et al. 2019 (Genome Biol 20:194). Every method is trained on the reference's "
              "genes and the query is aligned to them (absent genes are zero; celltypist leaves them out of its "
              "decision, as celltypist.annotate does). Cross-validation scores pool the "
              "folds' predictions.", ""]
    return "\n".join(lines)


def _figure_bars(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    methods = [m for m in METHOD_NAMES if any(results["tasks"][t]["methods"].get(m, {}).get("status") == "ok"
                                              for t in tasks)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) + 2), 4.2))
    width = 0.8 / max(1, len(methods))
    colours = plt.get_cmap("tab10")
    for j, m in enumerate(methods):
        vals = [results["tasks"][t]["methods"].get(m, {}) for t in tasks]
        ys = [v["metrics"]["macro_f1"] if v.get("status") == "ok" and v["metrics"]["macro_f1"] is not None
              else np.nan for v in vals]
        ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, ys, width, label=m,
               color=colours(METHOD_NAMES.index(m)))  # a method keeps its colour whichever ran
    targets = [target_f1(results["tasks"][t]) for t in tasks]
    label = f"target: best baseline - {TARGET_MARGIN}"
    for i, target in enumerate(targets):
        if target is not None:
            ax.hlines(target, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1, label=label)
            label = None  # one legend entry
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels(tasks, rotation=30, ha="right", fontsize=8)
    # the axis starts just below the lowest bar: the differences that matter are a few hundredths
    shown = [h.get_height() for h in ax.patches if np.isfinite(h.get_height())] + [t for t in targets if t]
    low = min(shown, default=0.0)
    ax.set_ylim(max(0.0, np.floor((low - 0.02) * 20) / 20), 1.005)
    ax.set_ylabel("macro-F1 over known types")
    ax.legend(fontsize=8, ncol=min(6, max(1, len(methods) + 1)), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))
    plt.close(fig)


def _figure_confusion(name: str, task: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [(m, task["methods"][m]) for m in OURS if task["methods"].get(m, {}).get("status") == "ok"]
    if not panels:
        return False
    first = panels[0][1]["confusion"]
    fig, axes = plt.subplots(1, len(panels), figsize=(0.55 * len(first["cols"]) * len(panels) + 2.5 * len(panels),
                                                       0.45 * len(first["rows"]) + 2.2), squeeze=False)
    for ax, (m, e) in zip(axes[0], panels):
        c = e["confusion"]
        counts = np.asarray(c["counts"], float)
        frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.6 else "black")
        n_known = sum(r in e["reference_types"] for r in c["rows"])
        if n_known < len(c["rows"]):  # rows below the line are the unseen types
            ax.axhline(n_known - 0.5, color="black", lw=0.8)
        ax.set_xticks(range(len(c["cols"])))
        ax.set_xticklabels(c["cols"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(c["rows"])))
        ax.set_yticklabels(c["rows"], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{m}: macro-F1 {_fmt(e['metrics']['macro_f1'])}", fontsize=9)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))
    plt.close(fig)
    return True


def write_report(results: dict[str, Any], out: str | os.PathLike, config: Config | None = None) -> None:
    """``accuracy.json``, ``accuracy.md``, ``accuracy.png`` and ``confusion_<task>.png`` in ``out``; a
    confusion picture left from an earlier run of a task without our methods now is removed."""
    out = Path(out)
    _write_json(out / RESULTS_JSON, results)
    _write_text(out / RESULTS_MD, markdown(results))
    _figure_bars(results, out / FIGURE)
    names = set(config.tasks) if config else set()
    for name, task in results["tasks"].items():
        if not _figure_confusion(name, task, out / f"confusion_{name}.png"):
            names.add(name)
        else:
            names.discard(name)
    for name in names:
        if name not in results["tasks"] or not any(results["tasks"][name]["methods"].get(m, {}).get("status") == "ok"
                                                   for m in OURS):
            (out / f"confusion_{name}.png").unlink(missing_ok=True)
