"""Stream a query through a reference into a `Prediction` (docs/methods.md §2, with §5 items 1, 3, 11, 19).

The path, one way: `prepare` matches the query's genes to the reference (`gsrcl.genes.check_overlap`, the overlap
rule) and tells its value kind from its first rows (``log``); `predict` then reads the query once, in blocks of
rows: each block is aligned to the reference genes and made into model input (`model_input`, the one place that
builds it), scored by the method and by the novelty model, and the encoder embedding of a seeded random subset of
cells is kept for the t-SNE, from the same encoder pass. The label rule (`gsrcl.cutoff`) runs on the scores and on
each cell's number of non-zero reference genes (a cell with none, or too few, is Unassigned, with its reason); the
query's neighbourhoods (`gsrcl.neighbours`) take their genes' variances from the same pass and read the query
twice more. Only the n x K scores and the subset's embedding are kept, so memory does not grow with genes x cells.

The settings are checked once, by `Settings.checked` (the Python API's entry points) or by the command line's
argument types, which use the same rules (`gsrcl.cutoff.check_p`, `gsrcl.cutoff.check_percentile`,
`gsrcl.neighbours.check_neighbours`); the functions below trust them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .cutoff import (BELOW_P, NO_COUNTS, NOVEL, TOO_FEW_GENES, assign_labels, check_cell_types,
                     check_p, check_percentile, min_detected_genes, normalise_rows, unassigned_reasons)
from .errors import InvalidReferenceError, ValuesError
from .genes import GeneMatch, align, check_overlap, gene_record, match_genes
from .neighbours import N_NEIGHBORS, GeneMoments, QueryNeighbours, check_neighbours, fit_rows, min_cells
from .model_input import log1p_cp10k
from .values import ValueReport, detect_values, to_model_input

log = logging.getLogger("gsrcl.predict")

DEFAULT_BLOCK_SIZE = 4096
TSNE_MAX_CELLS = 50_000
VALUE_SAMPLE_CELLS = 5000  # rows read up front to tell counts from log1p values
LOG_MODES = ("auto", "0", "1")

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "TSNE_MAX_CELLS",
    "Prediction",
    "Prepared",
    "Settings",
    "load_reference",
    "model_input",
    "predict",
    "prepare",
    "reporting_progress",
]


# --- the settings, checked once ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How to predict; built by `checked` (or by the command line from its checked flags) and trusted after.

    Attributes
    ----------
    p : float
        The probability cut-off in [0, 1]: a cell whose cut-off probability is <= p is Unassigned.
    raw_cutoff : bool
        GsRCL: apply p to the un-normalised per-type probabilities.
    novelty_cutoff : float or None
        A percentile of the reference cells' novelty scores; cells above it are Unassigned (None: off).
    neighbours : int
        The query cells ``unseen_score`` is averaged over (0: each cell on its own).
    log : str
        ``"auto"`` (detect), ``"1"`` (raw counts: log1p is applied) or ``"0"`` (natural log1p already).
    block_size : int
        Cells read at a time.
    tsne_cells : int
        At most this many cells (a seeded random subset) get an embedding for the t-SNE.
    seed : int
        Seeds the t-SNE, its subset and the neighbourhoods' subset.
    quiet : bool
        No progress bars.
    """

    p: float = 0.5
    raw_cutoff: bool = False
    novelty_cutoff: float | None = None
    neighbours: int = N_NEIGHBORS
    log: str = "auto"
    block_size: int = DEFAULT_BLOCK_SIZE
    tsne_cells: int = TSNE_MAX_CELLS
    seed: int = 0
    quiet: bool = False

    @classmethod
    def checked(cls, *, p=0.5, raw_cutoff=False, novelty_cutoff=None, neighbours=N_NEIGHBORS, log="auto",
                block_size=DEFAULT_BLOCK_SIZE, tsne_cells=TSNE_MAX_CELLS, seed=0, quiet=False) -> "Settings":
        """Settings from a caller's values, each checked (the Python API's entry points call this once).

        Raises
        ------
        ValueError
            For a value out of range, with a message naming it.
        """
        log = str(log)
        if log not in LOG_MODES:
            raise ValueError(f"log must be one of {', '.join(LOG_MODES)}, not {log!r}")
        try:
            block = int(block_size)
        except (TypeError, ValueError):
            block = 0
        if block < 1:
            raise ValueError(f"block size must be a positive number of cells, not {block_size}")
        return cls(p=check_p(p), raw_cutoff=bool(raw_cutoff), novelty_cutoff=check_percentile(novelty_cutoff),
                   neighbours=check_neighbours(neighbours), log=log, block_size=block,
                   tsne_cells=max(0, int(tsne_cells)), seed=int(seed), quiet=bool(quiet))

    def record(self) -> dict[str, Any]:
        """The settings as recorded in ``uns['gsrcl']['params']``."""
        return {"p": self.p, "raw_cutoff": self.raw_cutoff, "novelty_cutoff": self.novelty_cutoff,
                "neighbours": self.neighbours, "log": self.log, "block_size": self.block_size,
                "tsne_cells": self.tsne_cells, "seed": self.seed}


def load_reference(reference):
    """A loaded ``Reference`` as it is, or the one in the directory ``reference`` names.

    Raises
    ------
    TypeError
        For anything else.
    InvalidReferenceError
        From ``Reference.load``.
    """
    from .reference import Reference

    if isinstance(reference, Reference):
        return reference
    if isinstance(reference, (str, os.PathLike)):
        return Reference.load(reference)
    raise TypeError("reference must be a gsrcl Reference or the path of a reference directory")


# --- preparing the query -------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """What `prepare` found: the gene match and its record, the value kind and its record."""

    match: GeneMatch
    genes: dict[str, Any]
    kind: ValueReport  # the query's value kind, given to ModelInput.transform
    values: dict[str, Any]


def _reference_kind(ref) -> str | None:
    """The value kind the reference was trained on, if its manifest says."""
    values = ref.values or {}
    for key in ("kind", "detected", "expected", "input"):
        v = values.get(key)
        if isinstance(v, str) and v in ("counts", "log1p", "normalized", "scaled"):
            return v
    return None


def choose_kind(first_block: sp.csr_matrix, log_mode: str, ref) -> tuple[ValueReport, dict[str, Any]]:
    """How to turn the query into model input, from its first rows.

    Parameters
    ----------
    first_block : scipy.sparse.csr_matrix
        The query's first rows, as read.
    log_mode : str
        ``"auto"`` trusts the detection; ``"1"``: raw counts (log1p is applied); ``"0"``: natural log(1+x) already.
    ref : Reference
        Its training value kind is compared with the query's (a warning when they differ).

    Returns
    -------
    kind : ValueReport
        For `ModelInput.transform`.
    record : dict
        How it was chosen, for ``uns['gsrcl']['values']``.

    Raises
    ------
    ValuesError
        When the values are scaled (negative: whatever ``log_mode`` says), or unusable.
    """
    report = detect_values(first_block)
    detected = report.kind
    if detected == "scaled":
        refuse_negative(first_block)  # the one rule verify applies too: before any --log override
    if log_mode == "auto":
        spec = report
    else:
        kind = "counts" if log_mode == "1" else "log1p"
        spec = replace(report, kind=kind, log_base=math.e if kind == "log1p" else None)
        same = kind == detected or (kind == "counts" and detected == "normalized") or (
            kind == "log1p" and detected == "log1p" and report.log_base in (None, math.e))
        if not same:
            log.warning("warning: --log %s treats the values as %s, but they look otherwise: %s",
                        log_mode, "raw counts (log1p applied)" if kind == "counts" else "natural log(1+x) (used as is)",
                        report.message)
    (log.warning if report.warn else log.info)("values: %s", report.message)  # after the refusal: one line
    expected = _reference_kind(ref)
    if expected and detected != expected and {detected, expected} != {"counts", "normalized"}:
        log.warning(
            "warning: reference %r was trained on %s values but this query looks like %s: predictions may be "
            "off-distribution (check the query's values, or force --log 0/1)", ref.name, expected, detected,
        )
    record = {"log": log_mode, "detected": detected, "used": spec.kind,
              "log_base": float(spec.log_base) if spec.log_base else 0.0, "message": report.message,
              "reference_trained_on": expected or "unknown"}
    return spec, record


def refuse_negative(X) -> None:
    """Refuse values with any negative entry (scaled or centred, e.g. z-scores), as ``to_model_input`` refuses
    ``scaled`` values: the one value rule of ``gsrcl verify`` and prediction (the same error, the same exit code).

    Parameters
    ----------
    X : sparse matrix or ndarray
        Cells x genes, as read.

    Raises
    ------
    ValuesError
        When an entry is negative.
    """
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size and data.min() < 0:
        to_model_input(sp.csr_matrix((0, X.shape[1]), dtype=np.float32), "scaled")  # raises, with its advice


def _match(source, ref, verify_record: dict | None) -> tuple[GeneMatch, dict[str, Any]]:
    """The gene match and its record; a verified file (``verify_record``) must be for this reference."""
    if verify_record is None:
        match = check_overlap(source.var, ref.genes, ref.name)
        return match, gene_record(match)
    if list(map(str, source.var.index)) != list(ref.genes):
        raise InvalidReferenceError(
            f"the verified file was made for reference {verify_record.get('reference', '?')!r}, whose genes "
            f"differ from {ref.name!r}: run 'gsrcl verify' again with this reference, or pass the raw query"
        )
    match = match_genes(source.var, ref.genes)
    record = gene_record(match)
    return match, {k: verify_record[k] for k in record if k in verify_record} or record


def prepare(source, ref, log_mode: str = "auto", verify_record: dict | None = None) -> Prepared:
    """The checks that need no prediction: gene matching with the overlap rule, and the value kind.

    Parameters
    ----------
    source : QuerySource
        The query; its first ``VALUE_SAMPLE_CELLS`` rows are read.
    ref : Reference
    log_mode : str
        As in `Settings`.
    verify_record : dict, optional
        ``uns['gsrcl_verify']`` when the query is a verified file (its genes are the reference's already).

    Returns
    -------
    Prepared

    Raises
    ------
    GeneOverlapError
        When half or fewer of the query genes are reference genes and half or fewer of the reference genes are
        in the query.
    InvalidReferenceError
        When a verified file was made for another reference, or the reference's cell types cannot be labels (one
        named ``Unassigned``, or one listed twice: `gsrcl.cutoff.check_cell_types`).
    ValuesError
        When the values are unusable.
    """
    check_cell_types(ref.cell_types, ref.name)  # before the query is read: prediction never fails late on a label
    match, genes = _match(source, ref, verify_record)
    first = next((b for _, b in source.iter_blocks(max(1, min(VALUE_SAMPLE_CELLS, source.n_obs)))),
                 sp.csr_matrix((0, source.n_vars), dtype=np.float32))
    kind, values = choose_kind(first, log_mode, ref)
    return Prepared(match, genes, kind, values)


def model_input(block: sp.csr_matrix, prepared: Prepared, ref) -> sp.csr_matrix:
    """The model input of a block of query rows: the one place it is built for a query.

    Parameters
    ----------
    block : scipy.sparse.csr_matrix
        Query rows as read (cells x query genes).
    prepared : Prepared
        The gene match and the values' kind (`prepare`).
    ref : Reference
        Its `ModelInput` (``ref.model_input``) turns the aligned rows into model input.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32, cells x reference genes (genes the query lacks as zeros), as the model takes them.
    """
    return ref.model_input.transform(align(block, prepared.match), prepared.kind)


# --- prediction ----------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What prediction keeps for n cells and K reference types.

    Attributes
    ----------
    obs_names : pandas.Index
    cell_types : list of str
    method : str
    proba : ndarray of shape (n, K)
        The reported probabilities (rows sum to 1).
    scores : ndarray of shape (n, K) or None
        GsRCL's un-normalised per-type probabilities; None for AF-RCL.
    labels : ndarray of object (str), shape (n,)
        A cell type or Unassigned.
    sample : ndarray of int
        The sorted indices of the cells whose embedding was kept.
    embedding : ndarray of shape (len(sample), d)
    info : dict
        Records for ``uns['gsrcl']``: ``genes``, ``values``, ``cutoff``, ``block_size``, ``seed``, ``neighbours``.
    novelty : ndarray of shape (n,) or None
        The novelty score (`gsrcl.novelty`); None when the reference has none.
    neighbours : QueryNeighbours or None
        None when off, or the query is too small.
    reasons : ndarray of object (str), shape (n,) or None
        Why each Unassigned cell is (one of ``gsrcl.cutoff.REASONS``), ``""`` for an assigned one.
    """

    obs_names: pd.Index
    cell_types: list[str]
    method: str
    proba: np.ndarray
    scores: np.ndarray | None
    labels: np.ndarray
    sample: np.ndarray
    embedding: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    novelty: np.ndarray | None = None
    neighbours: Any = None
    reasons: np.ndarray | None = None

    @property
    def conf(self) -> np.ndarray:
        """Each cell's highest reported probability."""
        return self.proba.max(axis=1) if len(self.proba) else np.empty(0)

    @property
    def unseen_cell(self) -> np.ndarray | None:
        """novelty / conf (None without a novelty score): conf is at least 1/K, so this is finite."""
        return None if self.novelty is None else self.novelty / self.conf

    @property
    def unseen(self) -> np.ndarray | None:
        """``unseen_cell`` averaged over each cell's query neighbourhood (``unseen_cell`` itself without one)."""
        cell = self.unseen_cell
        return cell if cell is None or self.neighbours is None else self.neighbours.smooth(cell)

    @property
    def max_raw(self) -> np.ndarray | None:
        """Each cell's highest un-normalised score (GsRCL); None for AF-RCL."""
        return None if self.scores is None else (self.scores.max(axis=1) if len(self.scores) else np.empty(0))


def rows_in(rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The sorted cell indices ``rows`` that fall in the block [start, stop), as positions within it."""
    lo, hi = np.searchsorted(rows, [start, stop])
    return rows[lo:hi] - start


_PROGRESS: ContextVar[Callable[[str, int], Any] | None] = ContextVar("gsrcl_progress", default=None)


@contextmanager
def reporting_progress(factory: Callable[[str, int], Any]):
    """Within this block, prediction's progress (its pass over the query, the neighbourhoods' passes) goes to
    ``factory(pass name, cells)`` instead of tqdm bars; the object it returns needs ``update(n)``, ``close()``
    and use as a context manager, as a tqdm bar has (``gsrcl serve``'s jobs report a percentage through it)."""
    token = _PROGRESS.set(factory)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _progress(quiet: bool) -> Callable[[str, int], Any]:
    from tqdm.auto import tqdm

    hook = _PROGRESS.get()
    if hook is not None:
        return hook
    return lambda name, total: tqdm(total=total, unit="cells", desc=name, disable=quiet, leave=False)


def predict(source, ref, prepared: Prepared, settings: Settings, *, novelty_max: float | None = None,
            embed: bool = True, on_block: Callable[[int, sp.csr_matrix], None] | None = None) -> Prediction:
    """Predict every cell of ``source``, reading it block by block; the settings are trusted.

    Parameters
    ----------
    source : QuerySource
    ref : Reference
    prepared : Prepared
        `prepare` of this source and reference.
    settings : Settings
    novelty_max : float, optional
        ``gsrcl.cutoff.novelty_threshold`` of the settings: cells whose novelty score is above it are
        Unassigned.
    embed : bool
        Keep the embedding of a seeded random ``settings.tsne_cells`` cells (for the t-SNE).
    on_block : callable, optional
        ``on_block(start, block)`` sees each block as read (cells x query genes).

    Returns
    -------
    Prediction

    Raises
    ------
    ValuesError
        When the reader gives another number of cells than the file declares, or a block holds a negative value
        (`refuse_negative`; the first rows were checked by `prepare`).
    """
    model, novelty = ref.model, ref.novelty
    types = list(map(str, ref.cell_types))
    gsrcl = ref.method == "gsrcl"
    if settings.raw_cutoff and not gsrcl:
        log.info("note: --raw-cutoff changes nothing for AF-RCL, whose probabilities are not renormalised")
    n = int(source.n_obs)
    kind = prepared.kind

    m = min(n, settings.tsne_cells) if embed else 0
    sample = np.sort(np.random.default_rng(settings.seed).choice(n, size=m, replace=False)) if m < n else np.arange(n)
    want_neighbours = bool(settings.neighbours) and novelty is not None and n >= min_cells(settings.neighbours)
    moments, moment_rows = (GeneMoments(), fit_rows(n, settings.seed)) if want_neighbours else (None, None)

    proba = np.empty((n, len(types)), dtype=np.float64)
    scores = np.empty((n, len(types)), dtype=np.float64) if gsrcl else None
    novel = np.empty(n, dtype=np.float64) if novelty is not None else None
    detected = np.zeros(n, dtype=np.int64)  # non-zero reference genes per cell
    pieces: list[np.ndarray] = []
    done = 0
    with _progress(settings.quiet)("predict", n) as bar:
        for start, block in source.iter_blocks(settings.block_size):
            stop = start + block.shape[0]
            refuse_negative(block)
            if on_block is not None:
                on_block(start, block)
            X = model_input(block, prepared, ref)
            detected[start:stop] = np.bincount(np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)),
                                               weights=X.data != 0, minlength=X.shape[0]).astype(np.int64)
            rows = rows_in(sample, start, stop)
            if len(rows):
                s, emb = model.predict_scores_and_embed(X, rows)
                pieces.append(np.asarray(emb, dtype=np.float32))
            else:
                s = model.predict_scores(X)
            s = np.asarray(s, dtype=np.float64)
            proba[start:stop] = normalise_rows(s)  # AF-RCL's rows sum to 1 already; GsRCL's are divided by their sum
            if gsrcl:
                scores[start:stop] = s
            if novel is not None:
                novel[start:stop] = novelty.score(X, ref.model_input)
            if moments is not None:  # the neighbourhoods' variance pass, on the query's own genes
                moments.add(log1p_cp10k(block if moment_rows is None else
                                        block[rows_in(moment_rows, start, stop)], kind))
            done += block.shape[0]
            bar.update(block.shape[0])
    if done != n:
        raise ValuesError(f"the reader gave {done} cells but the file declares {n}: the file may be truncated")

    labels = assign_labels(proba, types, settings.p, cutoff_on=scores if (gsrcl and settings.raw_cutoff) else None)
    labels, reasons = unassigned_reasons(labels, detected, len(ref.genes), novel, novelty_max)
    unassigned = _log_unassigned(reasons, len(ref.genes), settings.p)
    embedding = np.concatenate(pieces) if pieces else np.empty((0, 0), dtype=np.float32)
    graph, graph_record = _neighbourhoods(source, kind, settings, moments, novelty is not None)
    info = {
        "genes": prepared.genes,
        "values": prepared.values,
        "cutoff": {
            "p": settings.p,
            "raw_cutoff": bool(settings.raw_cutoff and gsrcl),
            "applied_to": ("max un-normalised per-type probability (max_raw_score)" if settings.raw_cutoff and gsrcl
                           else "max reported probability (conf_score)"),
            "rule": "Unassigned when that probability <= p"
                    + ("" if novelty_max is None else ", or when novelty_score > novelty_max")
                    + f", or when fewer than {min_detected_genes(len(ref.genes))} reference genes are non-zero "
                      "(obs['unassigned_reason'] says which)",
            "novelty_percentile": None if novelty_max is None else float(settings.novelty_cutoff),
            "novelty_max": novelty_max,
        },
        "block_size": settings.block_size,
        "seed": settings.seed,
        "neighbours": graph_record,
        "unassigned": unassigned,
    }
    return Prediction(pd.Index(source.obs_names.astype(str)), types, ref.method, proba, scores, labels, sample,
                      embedding, info, novel, graph, reasons)


_REASON_KEYS = {NO_COUNTS: "no_counts", TOO_FEW_GENES: "too_few_genes", BELOW_P: "below_p", NOVEL: "novelty"}


def _log_unassigned(reasons: np.ndarray, n_genes: int, p: float) -> dict[str, int]:
    """Log how many cells are Unassigned and why (a warning when some had no or too few reference genes);
    the counts by reason, for ``uns['gsrcl']['unassigned']``."""
    counts = {key: int(np.count_nonzero(reasons == reason)) for reason, key in _REASON_KEYS.items()}
    record = {**counts, "min_reference_genes": min_detected_genes(n_genes)}
    total = sum(counts.values())
    if not total:
        return record
    parts = [f"{counts['no_counts']} with no counts in the reference genes",
             f"{counts['too_few_genes']} with fewer than {record['min_reference_genes']} reference genes detected",
             f"{counts['below_p']} at or below p={p:g}", f"{counts['novelty']} above the novelty cut-off"]
    data = counts["no_counts"] + counts["too_few_genes"]
    (log.warning if data else log.info)(
        "%s%d of %d cells are Unassigned: %s (obs['unassigned_reason'])", "warning: " if data else "", total,
        len(reasons), ", ".join(x for x in parts if not x.startswith("0 ")))
    return record


def _neighbourhoods(source, kind: ValueReport, settings: Settings, moments: GeneMoments | None,
                    has_novelty: bool) -> tuple[QueryNeighbours | None, dict[str, Any]]:
    """The query's neighbourhoods, the variance pass done (``moments``): two more reads of the query (of a
    subset and of every cell above ``FIT_MAX_CELLS`` cells); (None, why) when off or the query is too small."""
    k, n = settings.neighbours, int(source.n_obs)
    if not k or not has_novelty:
        return None, {"applied": False, "note": "off (neighbours=0)" if not k else "the reference has no novelty score"}
    if moments is None:
        note = (f"unseen_score is per cell: {n} cells are too few for neighbourhoods of {k} "
                f"(at least {min_cells(k)} are needed)")
        log.info(note)
        return None, {"applied": False, "note": note}
    t0 = time.perf_counter()

    def blocks(rows=None):
        for start, block in source.iter_blocks(settings.block_size):
            if rows is not None:  # only these cells are normalised
                block = block[rows_in(rows, start, start + block.shape[0])]
            yield log1p_cp10k(block, kind)

    graph = QueryNeighbours(k, seed=settings.seed).fit(blocks, n, moments=moments,
                                                       progress=_progress(settings.quiet))
    return graph, {"applied": True, **graph.record(), "seconds": round(time.perf_counter() - t0, 2)}
