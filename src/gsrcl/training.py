"""``gsrcl.train``: build a reference from labelled cells.

The steps: labels checked (missing or empty labels are a LabelsError); values detected (raw counts get log1p,
values already log1p are used as they are, never logged twice; scaled values are refused; the default preset
then scales each cell to 10,000 on the count scale, log1p CP10k, after any gene selection, as prediction
does over the reference genes); cell types with
fewer than ``min_cells`` cells dropped with a warning naming them; optionally the ``top_genes`` most variable
genes (variance of the log1p values over the reference cells; the reference's gene list is then those genes);
optionally only the genes the reference shares with a query (``genes_from``: the query's genes, matched
as prediction matches them; applied first); a stratified validation split (``validation_size`` of each type
with at least 10 cells; smaller types go to training only); the method's ``fit``; the novelty score
(`gsrcl.novelty`, on all the cells); and a `Reference` whose manifest records all of it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DuplicateGenesError, GeneOverlapError, GsrclError, LabelsError, ValuesError
from .methods import METHODS, get_method
from .methods.ensemble import Ensemble, check_pool, member_seeds
from .methods._training import (
    MIN_CELLS,
    MIN_VALIDATION_CELLS,
    as_csr,
    check_labels,
    drop_rare_classes,
    resolve_device,
    split_validation,
)
from .reference import Reference

log = logging.getLogger("gsrcl.training")


def train(
    adata,
    labels_key: str | Any = "cell_type",
    method: str = "afrcl",
    *,
    name: str | None = None,
    preset: str = "default",
    epochs: int | None = None,
    seed: int = 1111,
    device: str = "cpu",
    quiet: bool = False,
    validation_size: float = 0.2,
    top_genes: int | None = None,
    genes_from=None,
    min_cells: int = MIN_CELLS,
    novelty: bool = True,
    **overrides,
) -> Reference:
    """Train ``method`` ("afrcl" or "gsrcl") on ``adata`` and return the reference (not yet saved).

    ``labels_key``: a column of ``adata.obs``, or the labels themselves (array or Series; a Series indexed
    by cell names is aligned to ``adata.obs_names``). ``overrides`` go to the method (e.g. ``hidden=(64,)``).
    ``genes_from``: a query (AnnData, its ``var``, or gene names): train on the genes it shares with ``adata``
    only, so the encoder never learns from genes that query will lack (applied before ``top_genes``).
    ``novelty``: also fit the novelty score (`gsrcl.novelty`) on all the reference cells, stored with it.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    try:
        resolve_device(device)
    except ValueError as exc:
        raise GsrclError(str(exc)) from None
    if not 0 <= validation_size < 1:
        raise GsrclError(f"validation_size must be at least 0 and below 1, not {validation_size}")
    try:
        make = lambda s: get_method(method)(preset=preset, epochs=epochs, seed=s, device=device, quiet=quiet,
                                            **overrides)
        model = make(seed)
        seeds = member_seeds(seed, model.params["ensemble"])
        check_pool(model.params["pool"])
    except (TypeError, ValueError) as exc:  # an unknown parameter or preset, a bad value
        raise GsrclError(str(exc)) from None

    labels, labels_source = _labels(adata, labels_key)
    genes = pd.Index(adata.var_names.astype(str))
    if genes.has_duplicates:
        dup = genes[genes.duplicated()].unique()
        raise DuplicateGenesError(
            f"{len(dup)} gene names occur more than once (e.g. {', '.join(map(str, dup[:3]))}): make them unique "
            "(e.g. anndata's var_names_make_unique) before training"
        )
    X = _matrix(adata)

    from .values import detect_values, log1p_normalized, to_model_input

    report = detect_values(X)
    if report.kind != "scaled":  # scaled values are refused just below, with their own message
        (log.warning if report.warn else log.info)("values: %s", report.message)
    Xm = to_model_input(X, report)
    library_size = model.params.get("library_size")
    values = {
        "expected": report.kind,
        "transform": "log1p" if report.kind in ("counts", "normalized") else "none",
        "log_base": float(report.log_base) if report.log_base else None,
        # then each cell scaled to this total on the count scale and logged again (None: not scaled)
        "library_size": float(library_size) if library_size else None,
        "message": report.message,
    }

    n_input = Xm.shape[0]
    keep, dropped = drop_rare_classes(labels, min_cells)
    if not keep.all():
        Xm, labels = Xm[keep], labels[keep]

    selection = None
    if genes_from is not None:
        Xm, genes, selection = _shared_genes(Xm, genes, genes_from)
    if top_genes is not None:
        Xm, genes, top = _top_genes(Xm, genes, int(top_genes))
        selection = top if selection is None else {**top, "after": selection}

    if library_size:  # after the gene selection: prediction scales each query cell over the reference genes
        Xm = log1p_normalized(Xm, float(library_size))
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
        member.fit(Xm[m_tr], labels[m_tr], Xm[m_va], labels[m_va])
        members.append(member)
        if len(seeds) > 1:
            log.info("model %d of %d (seed %d) trained", i + 1, len(seeds), s)
    model = members[0] if len(members) == 1 else Ensemble(members)
    fit_seconds = time.perf_counter() - t_fit
    novelty_model, novelty_seconds = None, 0.0
    if novelty:
        from .novelty import CP10K, NoveltyModel

        t_nov = time.perf_counter()
        novelty_model = NoveltyModel(seed=seed).fit(Xm, labels, cp10k=library_size == CP10K)
        novelty_seconds = time.perf_counter() - t_nov
        log.info("novelty score fitted on %d cells, %d components, in %.1f s", len(labels),
                 novelty_model.components_.shape[0], novelty_seconds)

    import torch

    history = getattr(model, "history_", {})
    training = {
        "labels": labels_source,
        "cells_input": int(n_input),
        "cells": int(len(labels)),
        "cells_train": int(len(tr)),
        "cells_validation": int(len(va)),
        "genes": int(Xm.shape[1]),
        "cells_per_type": {str(t): int(c) for t, c in zip(types, counts)},
        "validation_cells_per_type": {str(t): int(c) for t, c in zip(*np.unique(labels[va], return_counts=True))},
        "dropped_classes": dropped,
        "min_cells": int(min_cells),
        "validation_size": float(validation_size),
        "gene_selection": selection,
        "seed": int(seed),
        "member_seeds": seeds,
        "device": str(device),
        "torch_threads": int(torch.get_num_threads()),
        "seconds_fit": round(fit_seconds, 2),
        "seconds_novelty": round(novelty_seconds, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "history": _history(history),
    }
    return Reference.from_model(
        model,
        name=name or "reference",
        genes=list(genes),
        values=values,
        preset=preset,
        hyperparameters=model.hyperparameters,
        training=training,
        validation=getattr(model, "validation_", {}),
        novelty=novelty_model,
    )


def _labels(adata, labels_key) -> tuple[np.ndarray, str]:
    n = adata.n_obs
    if isinstance(labels_key, str):
        if labels_key not in adata.obs.columns:
            cols = ", ".join(map(str, adata.obs.columns[:10])) or "none"
            raise LabelsError(
                f"the labels column {labels_key!r} is not in the data's obs (columns: {cols}): name another "
                "column or give a CSV of cell id -> label"
            )
        return check_labels(adata.obs[labels_key], n), f"obs[{labels_key!r}]"
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


def _matrix(adata) -> sp.csr_matrix:
    X = adata.X
    if X is None:
        raise ValuesError("the data has no expression matrix (X): put the values in X or pick a layer")
    return as_csr(X)


def _shared_genes(Xm: sp.csr_matrix, genes: pd.Index, query):
    """The reference genes that ``query`` (AnnData, var DataFrame or gene names) has, by `match_genes`."""
    from .genes import match_genes

    var = query.var if hasattr(query, "obs") and hasattr(query, "var") else query  # AnnData or QuerySource
    if not isinstance(var, pd.DataFrame):
        var = pd.DataFrame(index=pd.Index([str(g) for g in var], dtype=object))
    match = match_genes(var, list(genes))
    keep = np.flatnonzero(match.ref_to_query >= 0)
    if keep.size == 0:
        raise GeneOverlapError(
            f"the query given for the genes shares none of the reference's {len(genes)} genes ({match.summary()}): "
            "check it is the right file, and that it is cells x genes"
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
    from .methods._training import jsonable

    def rnd(v):
        if isinstance(v, float):
            return round(v, 6)
        if isinstance(v, list):
            return [rnd(x) for x in v]
        if isinstance(v, dict):
            return {k: rnd(x) for k, x in v.items()}
        return v

    return rnd(jsonable(history))
