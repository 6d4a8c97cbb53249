"""``gsrcl.train``: build a reference from labelled cells.

The steps, in order: the labels checked; the values' kind detected and the model input fitted
(`gsrcl.model_input.ModelInput`: raw counts get log1p, log1p values are used as they are, scaled values are
refused); cell types with fewer than ``min_cells`` cells dropped, with a warning naming them; the genes chosen
(only those shared with a query, ``genes_from``, then the ``top_genes`` most variable, by the variance of the
log1p values); each cell scaled to the preset's library size (log1p CP10k), over the chosen genes, as prediction
does over the reference's genes; per ensemble member, a stratified validation split and the method's ``fit``;
the novelty score (`gsrcl.novelty`) on all the cells; and the `Reference`, whose manifest records all of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DuplicateGenesError, GeneOverlapError, GsrclError, LabelsError, ValuesError
from .methods import METHODS, get_method
from .methods.base import DEFAULT_SEED
from .methods.encoding import Rows, as_csr
from .methods.ensemble import Ensemble, check_pool, member_seeds
from .io.source import QuerySource
from .methods.labels import (MIN_CELLS, MIN_VALIDATION_CELLS, cap_per_type, check_labels, drop_rare_classes,
                             split_validation)
from .methods.presets import MAX_CELLS_PER_TYPE, get_preset
from .methods.session import resolve_device
from .model_input import ModelInput
from .reference import Reference

log = logging.getLogger("gsrcl.training")

PROVENANCE_KEYS = ("input", "labels", "genes_from")
MIN_GENES = 2  # the fewest genes a reference is trained on (the novelty score's PCA needs two)
READ_BLOCK = 10_000  # rows read at a time from a file


def train(
    adata,
    labels_key: str | Any = "cell_type",
    method: str = "afrcl",
    *,
    name: str | None = None,
    preset: str = "default",
    seed: int = DEFAULT_SEED,
    ensemble: int | None = None,
    pool: str | None = None,
    library_size: float | None = None,
    top_genes: int | None = None,
    genes_from=None,
    min_cells: int = MIN_CELLS,
    max_cells_per_type: int | None = MAX_CELLS_PER_TYPE,
    novelty: bool = True,
    linear_pool: bool | None = None,
    device: str = "cpu",
    threads: int | None = None,
    quiet: bool = False,
    provenance: Mapping[str, str] | None = None,
    **params,
) -> Reference:
    """Train a reference of ``method`` on the labelled cells of ``adata``; it is not saved.

    Parameters
    ----------
    adata : anndata.AnnData or gsrcl.io.QuerySource
        Cells x genes, raw counts or log1p values in ``X``; gene names unique. A backed AnnData
        (``anndata.read_h5ad(path, backed="r")``) or a `gsrcl.io.open_query` source is read a block of rows at a
        time and only the rows ``max_cells_per_type`` keeps are held (all of them when no type reaches it).
    labels_key : str or array-like or pandas.Series
        A column of ``adata.obs``, or the labels themselves (a Series indexed by cell names is aligned to
        ``adata.obs_names``; every cell needs a label).
    method : {"afrcl", "gsrcl"}
    name : str, optional
        The reference's name (default "reference").
    preset : str
        The preset (`gsrcl.methods.presets.PRESETS`) of every setting not given here.
    seed : int
        The seed of the first ensemble member; the others' are drawn from it (`member_seeds`).
    ensemble, pool, library_size : optional
        The pipeline settings (`gsrcl.methods.presets.Preset`); None: the preset's. ``library_size`` 0: no
        per-cell scaling.
    top_genes : int, optional
        Keep the ``top_genes`` most variable genes only (at least `MIN_GENES`).
    genes_from : AnnData, pandas.DataFrame or list of str, optional
        A query (or its ``var``, or its gene names): train on the genes it shares with ``adata`` only, so the
        encoder never learns from genes that query lacks (applied before ``top_genes``).
    min_cells : int
        Cell types with fewer cells are dropped.
    max_cells_per_type : int or None
        Each cell type keeps at most this many cells, drawn at random (seeded) before anything else: training,
        the SVMs and the novelty score use that sample, and memory and time stop growing with the reference's
        largest types. Recorded in the manifest (``training.max_cells_per_type``, the cells each type had in
        ``cells_per_type_input``). None: every cell.
    novelty : bool
        Also fit the novelty score, stored with the reference.
    linear_pool : bool, optional
        None: the preset's (`gsrcl.methods.presets.Preset.linear_pool`, where ``novelty`` is on: the
        ``default`` and ``demo`` presets). True (needs ``novelty``): also fit a linear SVM on the model input
        (`gsrcl.linear`), stored with the reference; prediction gives it a say that grows with each cell's
        novelty score (`gsrcl.linear.pool_by_novelty`), for queries far from the reference (another species).
        GsRCL's raw per-type scores are pooled with the linear SVM's per-class scores
        (`gsrcl.linear.LinearClassifier.predict_raw`) likewise.
    device, threads, quiet :
        Runtime settings: the torch device, torch threads (None: torch's choice), no progress bars. They are
        not saved as hyperparameters.
    provenance : mapping, optional
        Where the data came from, recorded in the manifest's ``training`` section: ``input`` (the data file),
        ``labels`` (replaces the labels' description, e.g. a label file's path), ``genes_from`` (the file of
        ``genes_from``).
    **params
        The estimator's hyperparameters (the fields of `AFRCLParams` / `GsRCLParams`, e.g. ``epochs=50``,
        ``hidden=(64,)``, ``validation_size=0.3``) and its other runtime settings (``block``).

    Returns
    -------
    Reference
        The networks' weight matrices held in half precision (`gsrcl.reference.half_precision`); its model is
        rebuilt from its arrays, so it predicts as the saved reference does.

    Raises
    ------
    GsrclError
        For an unknown method, preset or parameter, or a value out of range (before the data is read).
    LabelsError, DuplicateGenesError, GeneOverlapError, ValuesError
        For labels, gene names or values the training cannot use.
    """
    t0 = time.perf_counter()
    unknown = sorted(set(provenance or {}) - set(PROVENANCE_KEYS))
    if unknown:
        raise GsrclError(f"unknown provenance key(s) {', '.join(unknown)}; known: {', '.join(PROVENANCE_KEYS)}")
    if linear_pool and not novelty:
        raise GsrclError("the linear pool needs the novelty score: train with novelty=True, or without linear_pool")
    make, p, seeds, pool, library_size = _settings(method, preset, seed, ensemble, pool, library_size, device,
                                                   threads, quiet, params)
    if linear_pool is None:
        linear_pool = novelty and get_preset(method, preset).linear_pool
    if top_genes is not None and (isinstance(top_genes, bool) or not isinstance(top_genes, (int, np.integer))
                                  or top_genes < MIN_GENES):
        raise GsrclError(f"top_genes must be a whole number of genes, at least {MIN_GENES}, not {top_genes!r}")
    model = make(seed)
    validation_size = p["validation_size"]

    if max_cells_per_type is not None and (isinstance(max_cells_per_type, bool)
                                           or not isinstance(max_cells_per_type, (int, np.integer))
                                           or max_cells_per_type < max(int(min_cells), 1)):
        raise GsrclError(f"max_cells_per_type must be a whole number of cells, at least min_cells ({min_cells}), "
                         f"or None, not {max_cells_per_type!r}")
    source = adata if isinstance(adata, QuerySource) else QuerySource.from_anndata(adata)
    labels, labels_source = _labels(adata, labels_key)
    n_input = len(labels)
    types_input = dict(zip(*(a.tolist() for a in np.unique(labels, return_counts=True))))
    rows = cap_per_type(labels, max_cells_per_type, seed)
    if rows is not None:
        labels = labels[rows]
        log.info("at most %d cells of each type: %d of %d cells kept", max_cells_per_type, len(rows), n_input)
    genes = pd.Index(source.var.index.astype(str))
    if genes.has_duplicates:
        dup = genes[genes.duplicated()].unique()
        raise DuplicateGenesError(
            f"{len(dup)} gene names occur more than once (e.g. {', '.join(map(str, dup[:3]))}): make them unique "
            "(e.g. anndata's var_names_make_unique) before training"
        )
    X, own = _matrix(adata, source, rows)
    if X.shape[1] < MIN_GENES:
        raise ValuesError(f"the data has {X.shape[1]} gene(s): a reference needs at least {MIN_GENES}")
    model_input = ModelInput.fit(X, library_size)
    Xm = model_input.log1p(X, copy=not own)  # the values read are transformed where they lie
    del X  # only the model input is used from here

    keep, dropped = drop_rare_classes(labels, min_cells)
    if not keep.all():
        Xm, labels = Xm[keep], labels[keep]

    selection = None
    if genes_from is not None:
        Xm, genes, selection = _shared_genes(Xm, genes, genes_from)
        if provenance and provenance.get("genes_from"):
            selection["query"] = provenance["genes_from"]
    if top_genes is not None:
        Xm, genes, top = _top_genes(Xm, genes, int(top_genes))
        selection = top if selection is None else {**top, "after": selection}

    # after the gene selection: prediction scales over the reference's genes; Xm is this function's own here
    Xm = model_input.normalize(Xm, copy=False)
    # each member its own seed: its own validation split, weights and batches (the first is the seed's own)
    splits = [split_validation(labels, validation_size, s, MIN_VALIDATION_CELLS) for s in seeds]
    tr, va = splits[0]
    types, counts = np.unique(labels, return_counts=True)
    log.info("training %s (%s preset) on %d cells (%d for validation), %d genes, %d cell types%s",
             method, preset, len(labels), len(va), Xm.shape[1], len(types),
             f", {len(seeds)} models with different seeds" if len(seeds) > 1 else "")
    t_fit = time.perf_counter()
    members = []
    for i, (s, (m_tr, m_va)) in enumerate(zip(seeds, splits)):
        member = model if i == 0 else make(s)
        member.fit(Rows(Xm, m_tr), labels[m_tr], Rows(Xm, m_va), labels[m_va])  # rows of Xm, not copies
        members.append(member)
        if len(seeds) > 1:
            log.info("model %d of %d (seed %d) trained", i + 1, len(seeds), s)
    model = members[0] if len(members) == 1 else Ensemble(members, pool=pool)
    fit_seconds = time.perf_counter() - t_fit
    novelty_model, novelty_seconds = None, 0.0
    if novelty:
        from .novelty import NoveltyModel

        t_nov = time.perf_counter()
        novelty_model = NoveltyModel(seed=seed).fit(Xm, labels, model_input)
        novelty_seconds = time.perf_counter() - t_nov
        log.info("novelty score fitted on %d cells, %d components, in %.1f s", len(labels),
                 novelty_model.components_.shape[0], novelty_seconds)

    linear, linear_seconds = None, 0.0
    if linear_pool:
        from .linear import FIT_MAX_CELLS as LINEAR_MAX_CELLS
        from .linear import LinearClassifier

        t_lin = time.perf_counter()
        linear = LinearClassifier.fit(Xm, labels, seed)
        linear_seconds = time.perf_counter() - t_lin
        log.info("linear SVM on the genes fitted on %d cells in %.1f s", min(len(labels), LINEAR_MAX_CELLS),
                 linear_seconds)

    import torch

    provenance = dict(provenance or {})
    training = {
        "labels": provenance.get("labels", labels_source),
        **({"input": provenance["input"]} if "input" in provenance else {}),
        "cells_input": int(n_input),
        "cells": int(len(labels)),
        "cells_train": int(len(tr)),
        "cells_validation": int(len(va)),
        "genes": int(Xm.shape[1]),
        "cells_per_type": {str(t): int(c) for t, c in zip(types, counts)},
        "validation_cells_per_type": {str(t): int(c) for t, c in zip(*np.unique(labels[va], return_counts=True))},
        "dropped_classes": dropped,
        "min_cells": int(min_cells),
        "max_cells_per_type": None if max_cells_per_type is None else int(max_cells_per_type),
        "cells_per_type_input": {str(t): int(c) for t, c in types_input.items()},
        "validation_size": float(validation_size),
        "gene_selection": selection,
        "seed": int(seed),
        "member_seeds": seeds,
        "device": str(device),
        # the threads the fit ran with (torch's setting is restored after it): results depend on them
        "torch_threads": int(threads) if threads else int(torch.get_num_threads()),
        "seconds_fit": round(fit_seconds, 2),
        "seconds_novelty": round(novelty_seconds, 2),
        **({"seconds_linear": round(linear_seconds, 2)} if linear_pool else {}),
        "seconds": round(time.perf_counter() - t0, 2),
        "history": _history(getattr(model, "history_", {})),
    }
    pipeline = {"ensemble": len(seeds), "pool": pool, **({"member_seeds": seeds} if len(seeds) > 1 else {})}
    return Reference.from_model(
        model,
        name=name or "reference",
        genes=list(genes),
        model_input=model_input,
        preset=preset,
        hyperparameters={**model.hyperparameters, **pipeline},
        training=training,
        validation=getattr(model, "validation_", {}),
        novelty=novelty_model,
        linear=linear,
        compact=True,
    )


def check_settings(method: str, preset: str = "default", **settings) -> None:
    """Check the settings of a `train` call without training (the CLI calls it before reading the data).

    Parameters
    ----------
    method, preset :
        As `train`.
    **settings
        `train`'s keyword settings (``seed``, ``ensemble``, ``pool``, ``library_size``, ``device``, ``threads``,
        ``quiet``, ``linear_pool``) and the estimator's parameters.

    Raises
    ------
    GsrclError
        As `train` raises it for these settings.
    """
    known = ("seed", "ensemble", "pool", "library_size", "device", "threads", "quiet", "linear_pool")
    kw = {k: settings.pop(k) for k in known if k in settings}
    _settings(method, preset, kw.get("seed", DEFAULT_SEED), kw.get("ensemble"), kw.get("pool"),
              kw.get("library_size"), kw.get("device", "cpu"), kw.get("threads"), kw.get("quiet", False), settings)


def _settings(method, preset, seed, ensemble, pool, library_size, device, threads, quiet, params):
    """The resolved settings of `train`: a maker of member estimators, the first one's checked parameters, the
    member seeds, the pool and the library size; GsrclError for any that is unknown or out of range."""
    if method not in METHODS:
        raise GsrclError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    try:
        setting = get_preset(method, preset)
        resolve_device(device)

        def make(member_seed: int):
            return get_method(method)(preset=preset, seed=member_seed, device=device, threads=threads, quiet=quiet,
                                      **params)

        p = make(seed)._check_params()
        seeds = member_seeds(seed, setting.ensemble if ensemble is None else ensemble)
        pool = setting.pool if pool is None else pool
        check_pool(pool)
        library_size = setting.library_size if library_size is None else library_size
        if library_size is not None and not library_size >= 0:
            raise ValueError(f"library_size must be a positive total (or 0: none), not {library_size!r}")
    except (TypeError, ValueError) as exc:  # an unknown parameter or preset, a bad value
        raise GsrclError(str(exc)) from None
    return make, p, seeds, pool, library_size


def _labels(adata, labels_key) -> tuple[np.ndarray, str]:
    n = adata.n_obs
    if isinstance(labels_key, str):
        obs = adata.obs() if isinstance(adata, QuerySource) else adata.obs
        if labels_key not in obs.columns:
            cols = ", ".join(map(str, obs.columns[:10])) or "none"
            raise LabelsError(
                f"the labels column {labels_key!r} is not in the data's obs (columns: {cols}): name another "
                "column or give a CSV of cell id -> label"
            )
        return check_labels(obs[labels_key], n), f"obs[{labels_key!r}]"
    y = labels_key
    if isinstance(y, pd.Series) and not isinstance(y.index, pd.RangeIndex):
        names = pd.Index(adata.obs_names.astype(str))
        index = y.index.astype(str)
        if index.has_duplicates:
            raise LabelsError("the labels' cell ids are not unique: give one label per cell id")
        missing = names.difference(index)
        if len(missing):
            raise LabelsError(
                f"{len(missing)} of {n} cells have no label (e.g. {', '.join(missing[:3])}): label every cell "
                "or remove the unlabelled cells from the input"
            )
        y = pd.Series(y.to_numpy(dtype=object), index=index).reindex(names)
    return check_labels(y, n), "given"


def _matrix(adata, source: QuerySource, rows: np.ndarray | None) -> tuple[sp.csr_matrix, bool]:
    """The rows ``rows`` (sorted; None: all) of the data's matrix, CSR float32, and whether it is a matrix of
    its own (False: it may be the caller's ``adata.X``, which must not be changed). From a file, a block of rows
    is read at a time and its kept rows are appended to one growing matrix: the blocks are never all held."""
    if rows is None and not isinstance(adata, QuerySource) and not adata.isbacked:
        if adata.X is None:
            raise ValuesError("the data has no expression matrix (X): put the values in X or pick a layer")
        X = as_csr(adata.X)
        shared = X is adata.X or (sp.issparse(adata.X) and np.may_share_memory(X.data, adata.X.data))
        return X, not shared
    if rows is None:
        return as_csr(source.to_memory(_release=True).X), True
    out = _RowBuffer(len(rows), source.n_vars)
    for start, block in source.iter_blocks(READ_BLOCK):
        lo, hi = np.searchsorted(rows, [start, start + block.shape[0]])
        if hi > lo:
            out.append(as_csr(block[rows[lo:hi] - start]))
    return out.matrix(), True


class _RowBuffer:
    """Rows of CSR blocks appended to one CSR float32 matrix of ``n_rows`` rows, without holding the blocks.

    Its value and column arrays grow as needed (room for half as much again as the rows so far suggest, so a
    regrowth copy is rare); the room never written is never touched, so it takes no memory."""

    def __init__(self, n_rows: int, n_cols: int):
        self.n_cols = n_cols
        self.indptr = np.zeros(n_rows + 1, dtype=np.int64)
        self.data = np.empty(0, dtype=np.float32)
        self.indices = np.empty(0, dtype=np.int32)
        self.rows = 0

    def append(self, block: sp.csr_matrix) -> None:
        lo, n = int(self.indptr[self.rows]), block.shape[0]
        hi = lo + block.nnz
        if hi > self.data.size:
            per_row = hi / (self.rows + n)
            room = max(hi, int(per_row * (len(self.indptr) - 1) * 1.5) + 1)
            self.data = _grown(self.data, lo, room)
            self.indices = _grown(self.indices, lo, room)
        self.data[lo:hi] = block.data
        self.indices[lo:hi] = block.indices
        self.indptr[self.rows + 1 : self.rows + n + 1] = lo + block.indptr[1:]
        self.rows += n

    def matrix(self) -> sp.csr_matrix:
        nnz = int(self.indptr[self.rows])
        index = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
        return sp.csr_matrix((self.data[:nnz], self.indices[:nnz].astype(index, copy=False),
                              self.indptr[: self.rows + 1].astype(index, copy=False)),
                             shape=(self.rows, self.n_cols), copy=False)


def _grown(a: np.ndarray, used: int, size: int) -> np.ndarray:
    """A new array of ``size`` entries whose first ``used`` are those of ``a``."""
    out = np.empty(size, dtype=a.dtype)
    out[:used] = a[:used]
    return out


def _shared_genes(Xm: sp.csr_matrix, genes: pd.Index, query):
    """The reference genes that ``query`` (AnnData, var DataFrame or gene names) has, by `match_genes`."""
    from .genes import match_genes

    var = query.var if hasattr(query, "obs") and hasattr(query, "var") else query  # AnnData or QuerySource
    if not isinstance(var, pd.DataFrame):
        var = pd.DataFrame(index=pd.Index([str(g) for g in var], dtype=object))
    match = match_genes(var, list(genes))
    keep = np.flatnonzero(match.ref_to_query >= 0)
    if keep.size < MIN_GENES:
        raise GeneOverlapError(
            f"the query given for the genes shares {keep.size or 'none'} of the reference's {len(genes)} genes "
            f"({match.summary()}); a reference needs at least {MIN_GENES}: check it is the right file, and that it "
            "is cells x genes"
        )
    log.info("genes: keeping the %d of %d reference genes the query has", keep.size, len(genes))
    selection = {"method": "shared with the query", "n": int(keep.size), "of": int(len(genes)),
                 "query_genes": int(match.n_query)}
    if keep.size == len(genes):
        return Xm, genes, selection
    return Xm[:, keep].tocsr(), genes[keep], selection


def _top_genes(Xm: sp.csr_matrix, genes: pd.Index, n: int):
    """The ``n`` genes of highest variance of the log1p values over the reference cells (in their order)."""
    from sklearn.utils.sparsefuncs import mean_variance_axis

    if n < 1:
        raise ValueError(f"top_genes must be a positive number of genes, not {n}")
    if n >= Xm.shape[1]:
        return Xm, genes, {"method": "variance of log1p values", "n": int(Xm.shape[1]), "of": int(Xm.shape[1])}
    _, var = mean_variance_axis(Xm, axis=0)
    idx = np.sort(np.argsort(-var, kind="stable")[:n])
    selection = {"method": "variance of log1p values", "n": int(n), "of": int(Xm.shape[1])}
    return Xm[:, idx].tocsr(), genes[idx], selection


def _history(history: dict) -> dict:
    """The per-epoch history, JSON-able and rounded (it goes into the manifest)."""
    from .methods.state import jsonable

    def rnd(v):
        if isinstance(v, float):
            return round(v, 6)
        if isinstance(v, list):
            return [rnd(x) for x in v]
        if isinstance(v, dict):
            return {k: rnd(x) for k, x in v.items()}
        return v

    return rnd(jsonable(history))
