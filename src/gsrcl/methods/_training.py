"""What both methods share: labels and splits, seeds and torch settings, sparse encoding in blocks,
checkpoint scoring and selection, and the estimator plumbing (presets, parameters, state checks)."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from typing import Any, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..errors import LabelsError
from ..nn import flush_denormals
from ..nn.allocator import reuse_large_allocations

log = logging.getLogger("gsrcl.methods")

BLOCK = 4096  # rows encoded at once at prediction time: bounds memory whatever the number of cells
MIN_VALIDATION_CELLS = 10  # a class with fewer cells goes to training only (no validation cells)
MIN_CELLS = 5  # a class with fewer cells is dropped before training (5 = the folds of the SVM's CV)


# --- labels and splits ---------------------------------------------------------------------------------------
def check_labels(y, n: int | None = None) -> np.ndarray:
    """Labels as an array of str; missing (NaN/None) or empty labels raise LabelsError with one clear line."""
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
    return text.to_numpy(dtype=str)


def drop_rare_classes(y: np.ndarray, min_cells: int = MIN_CELLS) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of the cells kept and the classes dropped (name -> cells) for having fewer than ``min_cells`` cells.

    A class that small cannot be split for validation nor fill the folds of the SVM's cross-validation
    (METHODS §5.21). It is dropped with a warning naming it; fewer than two classes left is a LabelsError."""
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
    """Indices of the training and validation cells: stratified, ``size`` of each class with at least
    ``min_class`` cells (at least one cell to each side); smaller classes go to training only."""
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


# --- torch settings ----------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device: use 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but PyTorch sees no CUDA device: use device 'cpu'")
    if dev.type not in {"cpu", "cuda"}:
        raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
    return dev


@contextlib.contextmanager
def torch_session(seed: int, threads: int | None = None, device: torch.device | None = None) -> Iterator[None]:
    """Seeded torch for one fit; the caller's RNG state, thread count and determinism flag are restored
    afterwards. Denormals are flushed: once the loss is near 1e-4 they made matmuls 100x slower.

    The CPU kernels used here (dense and embedding-bag products, Adam) are deterministic for a given thread
    count, which the tests check bitwise. On CUDA, where the sparse first layer's backward uses atomics,
    deterministic algorithms are switched on (``torch.use_deterministic_algorithms`` imports the compiler
    stack, ~2-6 s, so it is not paid on the CPU). Freed large blocks are kept for the next step
    (``gsrcl.nn.allocator``): each step's first-layer gradient then costs no page faults."""
    old_threads = torch.get_num_threads()
    cuda = device is not None and device.type == "cuda"
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices), reuse_large_allocations():
        try:
            if threads:
                torch.set_num_threads(int(threads))
            flush_denormals()
            if cuda:
                torch.use_deterministic_algorithms(True, warn_only=True)
            torch.manual_seed(seed)
            yield
        finally:
            if cuda:
                torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
            torch.set_num_threads(old_threads)


def adam(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Adam:
    """Adam as published (L2 weight decay, not AdamW). The fused kernel does the same update in one pass:
    4 ms instead of 72 ms per step for the 19,371 x 1,024 first layer on 2 cores."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - a build without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def step_schedule(p: dict[str, Any], steps_per_epoch: int) -> tuple[int, int]:
    """``(val_every, min_epochs)`` for this many optimiser steps per epoch. With ``val_steps`` / ``min_steps``
    set, a large reference (many steps per epoch) validates and may stop after as many STEPS as a small one
    would, instead of as many epochs: never later than ``val_every`` / ``min_epochs`` epochs."""
    val_every, min_epochs = int(p["val_every"]), int(p["min_epochs"])
    steps = max(1, int(steps_per_epoch))
    if p.get("val_steps"):
        val_every = max(1, min(val_every, math.ceil(p["val_steps"] / steps)))
    if p.get("min_steps"):
        min_epochs = min(min_epochs, math.ceil(p["min_steps"] / steps))
    return val_every, min_epochs


class Patience:
    """Early stopping: stop after ``patience`` validations without a new best score, once ``min_epochs`` ran.
    A ``patience`` of 0 or None never stops."""

    def __init__(self, patience: int | None, min_epochs: int):
        self.patience, self.min_epochs = patience, min_epochs
        self.top, self.since = -math.inf, 0

    def update(self, score: float, epochs_done: int) -> bool:
        if score > self.top:
            self.top, self.since = score, 0
        else:
            self.since += 1
        return bool(self.patience) and self.since >= self.patience and epochs_done >= self.min_epochs


def as_csr(X) -> sp.csr_matrix:
    """Model input as CSR float32 (a dense array is accepted too)."""
    if sp.issparse(X):
        X = X.tocsr()
    else:
        X = sp.csr_matrix(np.asarray(X))
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    return X


def sparse_tensor(X: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR block as a torch sparse CSR tensor (the encoder's first layer multiplies it as is)."""
    from ..nn import to_torch_sparse

    return to_torch_sparse(X, device=device)


def encode(encoder: torch.nn.Module, X, device: torch.device, block: int = BLOCK) -> np.ndarray:
    """The encoder's output for every row of X, in blocks of ``block`` rows, eval mode, no autograd."""
    X = as_csr(X)
    was_training = encoder.training
    encoder.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, X.shape[0], block):
            out.append(encoder(sparse_tensor(X[start : start + block], device)).float().cpu().numpy())
    encoder.train(was_training)
    if not out:
        return np.zeros((0, encoder_out_features(encoder)), dtype=np.float32)
    return np.concatenate(out)


def encoder_out_features(encoder: torch.nn.Module) -> int:
    last = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    return int(last.out_features)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state (a checkpoint kept in memory)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class CheckpointStore:
    """Encoder checkpoints kept during training: in memory up to ``max_bytes`` in all, beyond that in a
    temporary folder as plain ``.npy`` arrays (read back without pickle), removed by ``close``. GsRCL keeps
    one checkpoint per distinct best epoch of its tasks: 485 MB each at the published width."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = int(max_bytes)
        self._memory: dict[Any, dict[str, torch.Tensor]] = {}
        self._disk: dict[Any, dict[str, str]] = {}
        self._tmp = None

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, key) -> bool:
        return key in self._memory or key in self._disk

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for st in self._memory.values() for t in st.values())

    def put(self, key, module: torch.nn.Module) -> None:
        state = snapshot(module)
        size = sum(t.numel() * t.element_size() for t in state.values())
        if self._memory and self._bytes() + size > self.max_bytes:
            import os
            import tempfile

            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="gsrcl-checkpoints-")
            files = {}
            for i, (name, t) in enumerate(state.items()):
                files[name] = os.path.join(self._tmp.name, f"{len(self._disk)}-{abs(hash(key))}-{i}.npy")
                np.save(files[name], t.cpu().numpy(), allow_pickle=False)
            self._disk[key] = files
        else:
            self._memory[key] = state

    def get(self, key) -> dict[str, torch.Tensor]:
        if key in self._memory:
            return self._memory[key]
        return {name: torch.from_numpy(np.load(f, allow_pickle=False)) for name, f in self._disk[key].items()}

    def retain(self, keys) -> None:
        """Forget every checkpoint whose key is not in ``keys``."""
        import os

        keys = set(keys)
        for key in [k for k in self._memory if k not in keys]:
            del self._memory[key]
        for key in [k for k in self._disk if k not in keys]:
            for f in self._disk.pop(key).values():
                with contextlib.suppress(OSError):
                    os.remove(f)

    def close(self) -> None:
        self._memory.clear()
        self._disk.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class WeightAverage:
    """The running mean of a module's floating-point weights and buffers, taken at chosen points of training:
    averaged weights (as stochastic weight averaging, Izmailov et al. 2018) are one more candidate checkpoint of
    both methods. ``on_disk`` keeps the sum in a temporary file, read and written in 16 MB pieces, so that a
    485 MB GsRCL encoder adds nothing to the peak memory of training."""

    CHUNK = 1 << 22  # float32 values per read / write

    def __init__(self, on_disk: bool = False):
        self.on_disk = bool(on_disk)
        self.count = 0
        self._sum: dict[str, torch.Tensor] = {}
        self._layout: dict[str, tuple[int, int]] = {}  # name -> (offset in values, number of values)
        self._file = None

    def __enter__(self) -> "WeightAverage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _floats(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                yield name, t.detach()

    def add(self, module: torch.nn.Module) -> None:
        if not self.on_disk:
            for name, t in self._floats(module):
                if self.count == 0:
                    self._sum[name] = t.to(torch.float32, copy=True)
                else:
                    self._sum[name] += t
        else:
            import tempfile

            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="gsrcl-average-")
            offset = 0
            for name, t in self._floats(module):
                flat = t.reshape(-1).cpu().to(torch.float32)
                self._layout.setdefault(name, (offset, flat.numel()))
                for a in range(0, flat.numel(), self.CHUNK):
                    piece = flat[a : a + self.CHUNK].numpy()
                    self._file.seek(4 * (offset + a))
                    if self.count:
                        piece = np.fromfile(self._file, dtype=np.float32, count=len(piece)) + piece
                        self._file.seek(4 * (offset + a))
                    piece.tofile(self._file)
                offset += flat.numel()
        self.count += 1

    def load_into(self, module: torch.nn.Module) -> None:
        """Replace the module's floating-point weights and buffers by their mean, in place."""
        if not self.count:
            raise RuntimeError("no weights were added to the average")
        with torch.no_grad():
            for name, t in self._floats(module):
                if not self.on_disk:
                    t.copy_(self._sum[name] / self.count)
                    continue
                offset, n = self._layout[name]
                flat = t.view(-1)
                for a in range(0, n, self.CHUNK):
                    self._file.seek(4 * (offset + a))
                    piece = np.fromfile(self._file, dtype=np.float32, count=min(self.CHUNK, n - a)) / self.count
                    flat[a : a + len(piece)].copy_(torch.from_numpy(piece))

    def close(self) -> None:
        self._sum.clear()
        if self._file is not None:
            self._file.close()
            self._file = None


def refresh_batch_norm(encoder, X, batch_size: int, device, noise_std: float = 0.0) -> None:
    """Recompute BatchNorm running statistics for averaged weights: one pass over the training cells (with
    ``noise_std``, as GsRCL's views: each cell plus N(0, noise_std) noise on every gene)."""
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    encoder.train()
    with torch.no_grad():
        for start in range(0, X.shape[0], batch_size):
            block = X[start : start + batch_size]
            if noise_std:
                xb = torch.from_numpy(block.toarray()).to(device)
                encoder(xb + noise_std * torch.randn_like(xb))
            else:
                encoder(sparse_tensor(block, device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    encoder.eval()


# --- checkpoint scores ---------------------------------------------------------------------------------------
def validation_score(selection: str, emb_tr, y_tr, emb_val, y_val, seed: int, cv: int = 5) -> float:
    """The validation MCC of a classifier fitted on the training embeddings.

    ``quick``: ``gsrcl.svm.quick_score`` (cheap; used during training by the default preset).
    ``grid``: the original's procedure: grid-search an RBF SVC over the paper grid with stratified CV and the
    MCC scorer on the training embeddings, then the MCC of the best SVC's predictions on the validation cells.
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


def stratified_subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of about ``n`` cells with each class's share kept (at least min(its cells, 5) of each);
    None when ``n`` is None or there are no more than ``n`` cells (use them all)."""
    if n is None or len(y) <= n:
        return None
    rng = np.random.default_rng(seed)
    names, counts = np.unique(y, return_counts=True)
    picked = []
    for cls, count in zip(names, counts):
        take = min(count, max(5, int(round(n * count / len(y)))))
        picked.append(rng.permutation(np.flatnonzero(y == cls))[:take])
    return np.sort(np.concatenate(picked))


GRID_JOBS_MIN_CELLS = 1000  # below this, starting worker processes costs more than the fits


def fit_final_svc(emb: np.ndarray, y: np.ndarray, cv: int, seed: int, grid_cells: int | None = None,
                  ties: str = "first", distances: bool | np.ndarray = False):
    """The final RBF SVC with Platt probabilities: C and gamma by stratified CV over the paper grid (MCC),
    ties between settings broken by ``ties`` (``gsrcl.svm.fit_svc``).

    With ``grid_cells``, the grid search runs on a stratified subset of that many cells (its cost grows with
    the square of the cells: 80 fits) and the chosen setting is then fitted on all cells. ``distances``: the
    grid and the final fit run on one matrix of squared distances (``gsrcl.svm.fit_svc``), for inputs of many
    features; an array is that matrix for ``emb``'s rows, sliced for the grid's subset."""
    from ..svm import PAPER_GRID, fit_setting, fit_svc

    smallest = int(np.unique(y, return_counts=True)[1].min())
    folds = max(2, min(int(cv), smallest))
    sub = stratified_subset(y, grid_cells, seed)
    # the grid's 80 fits are independent: one per torch thread (the encoder is idle meanwhile); same result
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


# --- fitted SVMs ----------------------------------------------------------------------------------------------
def vstack(A, B) -> sp.csr_matrix:
    return sp.vstack([A, B], format="csr")


def svc_params(svc) -> dict[str, Any]:
    """The SVM's chosen C and gamma and its CV score (for the manifest)."""
    cv = getattr(svc, "cv_score_", float("nan"))
    return jsonable({**dict(getattr(svc, "best_params_", {}) or {}), "cv_mcc": None if math.isnan(cv) else cv})


def column_order(svc, labels: list) -> np.ndarray:
    classes = [c.item() if isinstance(c, np.generic) else c for c in svc.classes_]
    classes = [str(c) for c in classes]
    return np.array([classes.index(str(t)) for t in labels])


def check_svc(svc, labels: list, n_features: int, what: str) -> None:
    classes = sorted(str(c) for c in svc.classes_)
    if classes != sorted(str(t) for t in labels):
        raise ValueError(f"{what} has classes {classes[:5]}, expected {sorted(map(str, labels))[:5]}")
    n_in = getattr(svc, "n_features_in_", None)
    if n_in is None:
        sv = getattr(svc, "support_vectors_", None)
        n_in = None if sv is None else np.asarray(sv).shape[1]
    if n_in is not None and int(n_in) != int(n_features):
        raise ValueError(f"{what} takes {n_in} features, its input has {n_features}")


def better(score: float, best: float | None, ties: str) -> bool:
    """Whether a checkpoint scoring ``score`` replaces the one scoring ``best``.

    ``later`` keeps the later checkpoint on ties (AF-RCL's rule, and our fix for GsRCL, whose first-on-ties
    rule kept the untrained encoder on easy data); ``first`` is the published GsRCL rule."""
    if best is None or math.isnan(best):
        return True
    if math.isnan(score):
        return False
    return score >= best if ties == "later" else score > best


# --- estimator plumbing ------------------------------------------------------------------------------------
SCALE_CLIP = 10.0  # as scanpy's scale(max_value=10)
SCALE_OFFSET = 0.1  # added to each gene's sd: rare genes, whose sd is tiny, are not blown up
GENE_SCALE_KEY = "input.scale"  # the gene scale's array in a saved model


def gene_scale(X) -> np.ndarray:
    """1 / (sd + SCALE_OFFSET) of each column of CSR ``X`` (float32), the sd over all rows, zeros included."""
    X = as_csr(X)
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
    return (1.0 / (np.sqrt(np.maximum(sq - mean * mean, 0.0)) + SCALE_OFFSET)).astype(np.float32)


class EstimatorBase:
    """Presets, parameters and progress shared by the two estimators."""

    method_name = ""
    PRESETS: dict[str, dict[str, Any]] = {}
    # settings a saved model lacks because it predates them, and the value it was fitted with
    ABSENT_MEANS: dict[str, Any] = {"normalize_embedding": False, "gene_svm": False}

    def __init__(self, preset: str = "default", epochs: int | None = None, seed: int = 1111, device: str = "cpu",
                 quiet: bool = False, **overrides):
        if preset not in self.PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(self.PRESETS)}")
        unknown = sorted(set(overrides) - set(self.PRESETS[preset]))
        if unknown:
            raise TypeError(
                f"unknown {self.method_name} parameter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self.PRESETS[preset]))}"
            )
        if epochs is not None and (int(epochs) != epochs or epochs < 1):
            raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
        self.preset = preset
        self.epochs = epochs
        self.seed = int(seed)
        self.device = device
        self.quiet = quiet
        self.overrides = dict(overrides)
        self.params = self.resolve_params()

    def resolve_params(self) -> dict[str, Any]:
        params = copy.deepcopy(self.PRESETS[self.preset])
        params.update(copy.deepcopy(self.overrides))
        if self.epochs is not None:
            params["epochs"] = int(self.epochs)
        for key in ("hidden", "head"):
            params[key] = tuple(int(h) for h in params[key])
        return params

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The resolved parameters, JSON-able, for the manifest."""
        return {"preset": self.preset, "seed": self.seed, **jsonable(self.params)}

    @classmethod
    def _from_config(cls, config: dict[str, Any], **kwargs):
        """An unfitted estimator with the saved ``hyperparameters`` of ``config`` (``from_state``'s first step)."""
        if config.get("method") != cls.method_name:
            raise ValueError(f"the model config is for method {config.get('method')!r}, not {cls.method_name!r}")
        hp = dict(config.get("hyperparameters", {}))
        extra = {k: hp.pop(k, v) for k, v in kwargs.items()}
        model = cls(preset=hp.pop("preset", "default"), seed=hp.pop("seed", 1111), quiet=True, **extra)
        model.params.update({k: v for k, v in hp.items() if k in model.params})
        model.params.update({k: v for k, v in cls.ABSENT_MEANS.items() if k in model.params and k not in hp})
        return model

    def _progress(self, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"{self.method_name} training", unit="epoch", disable=self.quiet,
                    leave=False, dynamic_ncols=True)

    def _check_fitted(self) -> None:
        if not getattr(self, "cell_types", None):
            raise RuntimeError(f"this {type(self).__name__} is not fitted: call fit() or from_state() first")

    def _represent(self, emb: np.ndarray) -> np.ndarray:
        """What the classifiers see of the encoder output ``emb``: its rows scaled to unit length with
        ``normalize_embedding``, else ``emb`` itself."""
        if not self.params.get("normalize_embedding"):
            return emb
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, np.finfo(np.float32).tiny)

    # --- the gene scaling (``scale_genes``): each gene divided by its spread over the reference cells --------
    def _fit_gene_scale(self, X, X_val):
        """Fit the gene scale on the training and validation cells (with ``scale_genes``) and return both
        scaled; without it ``gene_scale_`` is None and both come back as they are."""
        self.gene_scale_ = (gene_scale(vstack(X, X_val) if X_val.shape[0] else X)
                            if self.params.get("scale_genes") else None)
        return self._scaled(X), self._scaled(X_val)

    def _scaled(self, X):
        """X with the reference's gene scaling applied (X itself when the model has none)."""
        if getattr(self, "gene_scale_", None) is None:
            return X
        out = sp.csr_matrix(as_csr(X) @ sp.diags(self.gene_scale_), dtype=np.float32)
        np.minimum(out.data, SCALE_CLIP, out=out.data)
        return out

    def _gene_scale_arrays(self) -> dict[str, np.ndarray]:
        scale = getattr(self, "gene_scale_", None)
        return {} if scale is None else {GENE_SCALE_KEY: scale}

    def _load_gene_scale(self, arrays: dict[str, np.ndarray], n_genes: int) -> None:
        scale = arrays.get(GENE_SCALE_KEY)
        if scale is not None and (scale.ndim != 1 or len(scale) != n_genes or not np.isfinite(scale).all()
                                  or (scale <= 0).any()):
            raise ValueError(f"the gene scale has shape {scale.shape} (positive values needed, one per gene: "
                             f"{n_genes})")
        self.gene_scale_ = None if scale is None else scale.astype(np.float32)

    def predict_proba(self, X) -> np.ndarray:
        scores = self.predict_scores(X)
        total = scores.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            proba = np.where(total > 0, scores / np.where(total > 0, total, 1), 1.0 / scores.shape[1])
        return proba.astype(np.float64)


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def split_arrays(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose key starts with ``prefix``, with it removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": np.asarray(v) for k, v in arrays.items()}


def fit_inputs(X, y, X_val, y_val, validation_size: float, seed: int):
    """Checked training and validation data; without X_val a stratified split of X is made here."""
    X = as_csr(X)
    y = check_labels(y, X.shape[0])
    if X_val is None:
        tr, va = split_validation(y, validation_size, seed)
        X_val, y_val, X, y = X[va], y[va], X[tr], y[tr]
    else:
        X_val = as_csr(X_val)
        y_val = check_labels(y_val, X_val.shape[0]) if X_val.shape[0] else np.array([], dtype=str)
        if X_val.shape[1] != X.shape[1]:
            raise ValueError(f"X_val has {X_val.shape[1]} genes, X has {X.shape[1]}")
    if len(np.unique(y)) < 2:
        raise LabelsError("the training cells hold fewer than two cell types: a reference needs at least two")
    unseen = sorted(set(y_val) - set(y))
    if unseen:
        raise LabelsError(f"validation labels {unseen[:3]} do not occur in the training cells")
    if not np.isfinite(X.data).all() or (X.data < 0).any():
        from ..errors import ValuesError

        raise ValuesError("the model input holds NaN, infinite or negative values: give log1p values of counts")
    return X, y, X_val, y_val
