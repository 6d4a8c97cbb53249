"""Stream a query through a reference into a `Prediction` (docs/methods.md §2, with §5 items 1, 3, 11, 19).

The path, one way: `prepare` (`gsrcl.preparation`) matches the query's genes to the reference
(`gsrcl.genes.check_overlap`, the overlap rule) and tells its value kind from its first rows (``log``); `predict`
then reads the query once, in blocks of rows, and gives each block to `predict_block`: it is aligned to the
reference genes and made into model input (`model_input`, the one place that builds it), scored by the method and
by the novelty model, and the encoder embedding of a seeded random subset of cells (`Plan`) is kept for the t-SNE,
from the same encoder pass. `Results` adds the blocks' results up in the query's order. The cluster path
(`gsrcl.distributed`) runs the same `predict_block` on the same blocks and adds them up in the same order, so its
outputs are the same. The label rule (`gsrcl.cutoff`) runs on the scores and on
each cell's number of non-zero reference genes (a cell with none, or too few, is Unassigned, with its reason); the
query's neighbourhoods (`gsrcl.neighbours`) take their genes' variances from the same pass and read the query
twice more. Only the n x K scores and the subset's embedding are kept, so memory does not grow with genes x cells.

The settings are checked once, by `Settings.checked` (the Python API's entry points) or by the command line's
argument types, which use the same rules (`gsrcl.cutoff.check_p`, `gsrcl.cutoff.check_percentile`,
`gsrcl.neighbours.check_neighbours`); the functions below trust them.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .cutoff import (BELOW_P, NO_COUNTS, NOVEL, TOO_FEW_GENES, assign_labels, check_p, check_percentile,
                     min_detected_genes, normalise_rows, unassigned_reasons)
from .errors import ValuesError
from .genes import align
from .linear import pool_by_novelty
from .majority import vote
from .neighbours import N_NEIGHBORS, GeneMoments, QueryNeighbours, check_neighbours, fit_rows, min_cells
from .model_input import log1p_cp10k
from .preparation import Prepared, choose_kind, prepare, refuse_negative  # noqa: F401  (re-exported)
from .values import ValueReport

log = logging.getLogger("gsrcl.predict")

DEFAULT_BLOCK_SIZE = 4096
TSNE_MAX_CELLS = 50_000
LOG_MODES = ("auto", "0", "1")

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "TSNE_MAX_CELLS",
    "Prediction",
    "Plan",
    "Prepared",
    "Settings",
    "predict_block",
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
    majority_voting : bool
        Also label each cell with the majority label of its over-cluster of the query (`gsrcl.majority`).
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
    majority_voting: bool = False
    log: str = "auto"
    block_size: int = DEFAULT_BLOCK_SIZE
    tsne_cells: int = TSNE_MAX_CELLS
    seed: int = 0
    quiet: bool = False

    @classmethod
    def checked(cls, *, p=0.5, raw_cutoff=False, novelty_cutoff=None, neighbours=N_NEIGHBORS, log="auto",
                block_size=DEFAULT_BLOCK_SIZE, tsne_cells=TSNE_MAX_CELLS, seed=0, quiet=False,
                majority_voting=False) -> "Settings":
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
        neighbours = check_neighbours(neighbours)
        if majority_voting and not neighbours:
            raise ValueError("majority voting needs the query's neighbourhoods: leave neighbours at its default "
                             "(or give at least 2) with majority voting")
        return cls(p=check_p(p), raw_cutoff=bool(raw_cutoff), novelty_cutoff=check_percentile(novelty_cutoff),
                   neighbours=neighbours, log=log, block_size=block, majority_voting=bool(majority_voting),
                   tsne_cells=max(0, int(tsne_cells)), seed=int(seed), quiet=bool(quiet))

    def record(self) -> dict[str, Any]:
        """The settings as recorded in ``uns['gsrcl']['params']``."""
        return {"p": self.p, "raw_cutoff": self.raw_cutoff, "novelty_cutoff": self.novelty_cutoff,
                "neighbours": self.neighbours, "majority_voting": self.majority_voting, "log": self.log,
                "block_size": self.block_size,
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


# --- preparing the query: gsrcl.preparation (Prepared, prepare, choose_kind, refuse_negative) ------------


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
    majority : ndarray of object (str), shape (n,) or None
        With majority voting: each cell's over-cluster's majority label (`gsrcl.majority`).
    clusters : ndarray of int, shape (n,) or None
        With majority voting: each cell's over-cluster.
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
    majority: np.ndarray | None = None
    clusters: np.ndarray | None = None

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


def progress_bars(quiet: bool) -> Callable[[str, int], Any]:
    """``bars(name, cells)``: a tqdm progress bar counting cells (none shown when ``quiet``), or the factory of
    `reporting_progress` inside one."""
    from tqdm.auto import tqdm

    hook = _PROGRESS.get()
    if hook is not None:
        return hook
    return lambda name, total: tqdm(total=total, unit="cells", desc=name, disable=quiet, leave=False)


@dataclass
class Plan:
    """Which cells get more than scores, fixed before the first block is read (from the query's size alone).

    Attributes
    ----------
    n : int
        Cells in the query.
    sample : ndarray of int
        The sorted indices of the cells whose embedding is kept (the t-SNE's subset).
    moments : bool
        Whether the neighbourhoods' variance pass runs with prediction's pass.
    moment_rows : ndarray of int or None
        The sorted indices of the cells it runs over (`gsrcl.neighbours.fit_rows`); None: all of them.
    """

    n: int
    sample: np.ndarray
    moments: bool
    moment_rows: np.ndarray | None

    @classmethod
    def of(cls, n: int, ref, settings: Settings, embed: bool = True) -> "Plan":
        """The plan for ``n`` cells predicted with ``ref`` and ``settings`` (seeded by ``settings.seed``)."""
        m = min(n, settings.tsne_cells) if embed else 0
        sample = (np.sort(np.random.default_rng(settings.seed).choice(n, size=m, replace=False)) if m < n
                  else np.arange(n))
        moments = bool(settings.neighbours) and needs_neighbours(ref, settings) and n >= min_cells(settings.neighbours)
        return cls(n, sample, moments, fit_rows(n, settings.seed) if moments else None)

    def block_rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """For the block [start, stop): the positions within it of the sampled cells and of the variance
        pass's cells (None: all of them; only meaningful when ``moments``)."""
        rows = None if self.moment_rows is None else rows_in(self.moment_rows, start, stop)
        return rows_in(self.sample, start, stop), rows


@dataclass
class BlockResult:
    """What `predict_block` keeps of one block of cells [start, stop)."""

    start: int
    proba: np.ndarray  # float64, the reported probabilities (rows sum to 1)
    raw: np.ndarray | None  # float64, GsRCL's un-normalised per-type scores; None for AF-RCL
    detected: np.ndarray  # int64, non-zero reference genes per cell
    embedding: np.ndarray | None  # float32, of the sampled cells in the block
    novelty: np.ndarray | None
    moments: tuple | None  # `GeneMoments.partial` of the variance pass's cells

    @property
    def stop(self) -> int:
        return self.start + self.proba.shape[0]


def predict_block(start: int, block: sp.csr_matrix, prepared: Prepared, ref, embed_rows: np.ndarray,
                  moments: bool = False, moment_rows: np.ndarray | None = None) -> BlockResult:
    """Everything prediction computes from one block of query rows: the one per-block function of the
    single-process pass (`predict`) and of the cluster's tasks (`gsrcl.distributed`).

    Parameters
    ----------
    start : int
        The block's first row in the query.
    block : scipy.sparse.csr_matrix
        Query rows as read (cells x query genes).
    prepared : Prepared
    ref : Reference
    embed_rows, moments, moment_rows
        `Plan.block_rows` of this block, and `Plan.moments`.

    Returns
    -------
    BlockResult

    Raises
    ------
    ValuesError
        When the block holds a negative value (`refuse_negative`).
    """
    refuse_negative(block)
    model, novelty = ref.model, ref.novelty
    X = model_input(block, prepared, ref)
    detected = np.bincount(np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), weights=X.data != 0,
                           minlength=X.shape[0]).astype(np.int64)
    emb = None
    if len(embed_rows):
        s, emb = model.predict_scores_and_embed(X, embed_rows)
        emb = np.asarray(emb, dtype=np.float32)
    else:
        s = model.predict_scores(X)
    part = None
    if moments:  # the neighbourhoods' variance pass, on the query's own genes
        part = GeneMoments.partial(log1p_cp10k(block if moment_rows is None else block[moment_rows], prepared.kind))
    nov = None if novelty is None else novelty.score(X, ref.model_input)
    s = np.asarray(s, dtype=np.float64)
    raw = s if ref.method == "gsrcl" else None
    proba = normalise_rows(s)  # AF-RCL's rows sum to 1; GsRCL's are divided by their sum
    if ref.linear is not None and nov is not None:  # cells far from the reference lean on the linear SVM
        proba = pool_by_novelty(proba, ref.linear.predict_proba(X), nov)
        if raw is not None:
            raw = pool_by_novelty(raw, ref.linear.predict_raw(X), nov)
    return BlockResult(start, proba, raw, detected, emb, nov, part)


class Results:
    """The per-cell arrays of prediction, filled by `add` with each block's `BlockResult` in the query's order
    (the embedding's pieces and the variance pass's sums are added in that order)."""

    def __init__(self, plan: Plan, ref):
        n, k = plan.n, len(ref.cell_types)
        self.plan, self.gsrcl = plan, ref.method == "gsrcl"
        self.proba = np.empty((n, k), dtype=np.float64)
        self.scores = np.empty((n, k), dtype=np.float64) if self.gsrcl else None
        self.novelty = np.empty(n, dtype=np.float64) if ref.novelty is not None else None
        self.detected = np.zeros(n, dtype=np.int64)
        self.moments = GeneMoments() if plan.moments else None
        self.pieces: list[np.ndarray] = []
        self.done = 0

    def add(self, r: BlockResult) -> None:
        """Add the next block's result (its ``start`` must be the cells added so far)."""
        if r.start != self.done:
            raise RuntimeError(f"block results out of order: expected row {self.done}, got {r.start}")
        start, stop = r.start, r.stop
        self.proba[start:stop] = r.proba
        if self.scores is not None:
            self.scores[start:stop] = r.raw
        if self.novelty is not None:
            self.novelty[start:stop] = r.novelty
        self.detected[start:stop] = r.detected
        if r.embedding is not None:
            self.pieces.append(r.embedding)
        if self.moments is not None:
            self.moments.merge(r.moments)
        self.done = stop

    def check_count(self) -> None:
        """Raise `ValuesError` when the reader gave another number of cells than the file declares."""
        if self.done != self.plan.n:
            raise ValuesError(f"the reader gave {self.done} cells but the file declares {self.plan.n}: the file "
                              "may be truncated")

    def prediction(self, obs_names, ref, prepared: Prepared, settings: Settings, novelty_max: float | None,
                   graph: QueryNeighbours | None, graph_record: dict[str, Any]) -> Prediction:
        """The labels (`gsrcl.cutoff`), and the `Prediction` with its records."""
        types = list(map(str, ref.cell_types))
        gsrcl = self.gsrcl
        labels = assign_labels(self.proba, types, settings.p,
                               cutoff_on=self.scores if (gsrcl and settings.raw_cutoff) else None)
        labels, reasons = unassigned_reasons(labels, self.detected, len(ref.genes), self.novelty, novelty_max)
        unassigned = _log_unassigned(reasons, len(ref.genes), settings.p)
        embedding = np.concatenate(self.pieces) if self.pieces else np.empty((0, 0), dtype=np.float32)
        majority = vote(labels, graph, settings.seed) if settings.majority_voting else None
        info = {
            "genes": prepared.genes,
            "values": prepared.values,
            "cutoff": {
                "p": settings.p,
                "raw_cutoff": bool(settings.raw_cutoff and gsrcl),
                "applied_to": ("max un-normalised per-type probability (max_raw_score)" if settings.raw_cutoff
                               and gsrcl else "max reported probability (conf_score)"),
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
            **({"majority_voting": majority[2]} if majority else {}),
        }
        return Prediction(pd.Index(obs_names.astype(str)), types, ref.method, self.proba, self.scores, labels,
                          self.plan.sample, embedding, info, self.novelty, graph, reasons,
                          *(majority[:2] if majority else (None, None)))


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
    note_raw_cutoff(ref, settings)
    plan = Plan.of(int(source.n_obs), ref, settings, embed)
    results = Results(plan, ref)
    with progress_bars(settings.quiet)("predict", plan.n) as bar:
        for start, block in source.iter_blocks(settings.block_size):
            embed_rows, moment_rows = plan.block_rows(start, start + block.shape[0])
            r = predict_block(start, block, prepared, ref, embed_rows, plan.moments, moment_rows)
            if on_block is not None:
                on_block(start, block)
            results.add(r)
            bar.update(block.shape[0])
    results.check_count()
    graph, graph_record = _neighbourhoods(source, prepared.kind, settings, results.moments,
                                          needs_neighbours(ref, settings))
    return results.prediction(source.obs_names, ref, prepared, settings, novelty_max, graph, graph_record)


def needs_neighbours(ref, settings: Settings) -> bool:
    """Whether the query's neighbourhoods serve anything: ``unseen_score`` (a reference with a novelty score) or
    majority voting."""
    return ref.novelty is not None or settings.majority_voting


def note_raw_cutoff(ref, settings: Settings) -> None:
    """Say that --raw-cutoff changes nothing for AF-RCL."""
    if settings.raw_cutoff and ref.method != "gsrcl":
        log.info("note: --raw-cutoff changes nothing for AF-RCL, whose probabilities are not renormalised")


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
                    needed: bool) -> tuple[QueryNeighbours | None, dict[str, Any]]:
    """The query's neighbourhoods, the variance pass done (``moments``): two more reads of the query (of a
    subset and of every cell above ``FIT_MAX_CELLS`` cells); (None, why) when off or the query is too small."""
    n = int(source.n_obs)
    off = neighbourhoods_off(n, settings, moments, needed)
    if off is not None:
        return None, off
    t0 = time.perf_counter()

    def blocks(rows=None):
        for start, block in source.iter_blocks(settings.block_size):
            if rows is not None:  # only these cells are normalised
                block = block[rows_in(rows, start, start + block.shape[0])]
            yield log1p_cp10k(block, kind)

    graph = QueryNeighbours(settings.neighbours, seed=settings.seed).fit(blocks, n, moments=moments,
                                                                         progress=progress_bars(settings.quiet))
    return graph, {"applied": True, **graph.record(), "seconds": round(time.perf_counter() - t0, 2)}


def neighbourhoods_off(n: int, settings: Settings, moments: GeneMoments | None,
                       needed: bool) -> dict[str, Any] | None:
    """The neighbourhoods' record when they are not computed (off, no novelty score, too few cells), else None."""
    k = settings.neighbours
    if not k or not needed:
        return {"applied": False, "note": "off (neighbours=0)" if not k else
                "the reference has no novelty score (and no majority voting was asked)"}
    if moments is None:
        note = (f"unseen_score is per cell: {n} cells are too few for neighbourhoods of {k} "
                f"(at least {min_cells(k)} are needed)")
        log.info(note)
        return {"applied": False, "note": note}
    return None
