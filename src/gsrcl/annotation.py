"""Step 2 of the original tool: annotate a query with a reference (METHODS.md §2, with §5 items 1, 3, 11, 19).

The query is read in blocks of rows (``QuerySource.iter_blocks``), each block aligned to the reference genes,
turned into model input and passed through the method; only the n x K probabilities and, for the t-SNE, the
encoder embedding of a seeded random subset of at most ``TSNE_MAX_CELLS`` cells are kept, so memory does not grow
with the number of genes x cells.

Labels (``Identified as`` / ``obs['predicted_labels']``): the argmax cell type, or ``Unassigned`` when the
probability the cut-off is applied to is **<= p** (equal to p is Unassigned, as the original). Which probability:

- AF-RCL: the multi-class probability (rows sum to 1);
- GsRCL, by default: the per-type probabilities divided by their row sum (the reported ones, as the original);
- GsRCL with ``raw_cutoff=True``: the highest *un-normalised* per-type probability (``obs['max_raw_score']``).
  The row normalisation makes a cell that every one-vs-rest task rejects look confident (raw 0.02, 0.005,
  0.005, 0.005 become 0.57, 0.14, 0.14, 0.14), so the raw cut-off is the one that can flag unseen cell types.

Every cell also gets ``obs['novelty_score']`` (`gsrcl.novelty`: how unlike every reference type it is, 1 = a
typical reference cell), which tells cells of types the reference lacks from known ones better than any
probability; with ``novelty_cutoff`` (a percentile of the scores of reference cells held out of the novelty
model's fit, so new cells like the reference's cross it at about that rate) cells above it are Unassigned as
well. ``obs['unseen_score_cell']`` is ``novelty_score / conf_score``: high for a cell that is far from every
reference type, or unsure between types, or both; ``obs['unseen_score']`` is its mean over the cell's
``neighbours`` nearest query cells (`gsrcl.neighbours`: in the query's own principal components), since cells of a
type the reference lacks come in groups. On the benchmark's two unseen-type tasks the neighbourhood score ranks
such cells first better than any per-cell score (``benchmarks/results/accuracy.md``); labels do not depend on it.

Outputs (``predict_files``), each written to a temporary file in OUT and renamed into place once all are done:
``probabilities.csv``, ``tsne.svg``, ``legend.txt`` and ``annotated.h5ad`` (see ``annotate`` for its content).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .atomic import temp_file
from .errors import InvalidReferenceError, MissingPathError, OutputError, ValuesError
from .versions import versions
from .neighbours import N_NEIGHBORS, check_neighbours
from .plot import UNASSIGNED, MIN_TSNE_CELLS, legend_text, palette, plot_tsne, tsne_embedding, tsne_perplexity

log = logging.getLogger("gsrcl.annotation")

DEFAULT_BLOCK_SIZE = 4096
TSNE_MAX_CELLS = 50_000
VALUE_SAMPLE_CELLS = 5000  # rows read up front to tell counts from log1p values
LOG_MODES = ("auto", "0", "1")
PROBABILITIES = "probabilities.csv"
TSNE = "tsne.svg"
LEGEND = "legend.txt"
ANNOTATED = "annotated.h5ad"
OUTPUTS = (PROBABILITIES, TSNE, LEGEND, ANNOTATED)
UNS_KEY = "gsrcl"

__all__ = [
    "UNASSIGNED",
    "OUTPUTS",
    "Prediction",
    "annotate",
    "assign_labels",
    "normalise_rows",
    "predict_files",
    "predict_source",
    "probabilities",
]


# --- the rule ------------------------------------------------------------------------------------------------


def assign_labels(proba: np.ndarray, cell_types, p: float, cutoff_on: np.ndarray | None = None) -> np.ndarray:
    """Argmax cell type per row of ``proba``, or ``Unassigned`` where the row's max (of ``cutoff_on`` when given,
    e.g. the un-normalised GsRCL scores) is <= ``p``."""
    proba = np.asarray(proba)
    types = np.asarray(list(map(str, cell_types)) + [UNASSIGNED], dtype=object)
    if proba.ndim != 2 or proba.shape[1] != len(types) - 1:
        raise ValueError(f"probabilities of shape {proba.shape} do not match {len(types) - 1} cell types")
    if proba.shape[0] == 0:
        return np.empty(0, dtype=object)
    best = np.argmax(proba, axis=1)
    top = (proba if cutoff_on is None else np.asarray(cutoff_on)).max(axis=1)
    return types[np.where(top <= p, len(types) - 1, best)]


def normalise_rows(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (GsRCL's reported probabilities); an all-zero row becomes uniform."""
    scores = np.asarray(scores, dtype=np.float64)
    total = scores.sum(axis=1, keepdims=True)
    out = np.divide(scores, total, out=np.full_like(scores, 1.0 / max(scores.shape[1], 1)), where=total > 0)
    return out


def check_novelty_cutoff(percentile: float | None, ref) -> float | None:
    """The novelty score above which a cell is Unassigned, from a percentile of held-out reference cells' scores."""
    if percentile is None:
        return None
    try:
        percentile = float(percentile)
    except (TypeError, ValueError):
        raise ValueError(f"the novelty cut-off must be a percentile between 0 and 100, not {percentile!r}") from None
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"the novelty cut-off must be a percentile above 0 and at most 100, not {percentile}")
    if ref.novelty is None:
        raise InvalidReferenceError(f"reference {ref.name!r} has no novelty score (made by an older gsrcl or with "
                                    "novelty=False): retrain it, or leave out the novelty cut-off")
    return ref.novelty.threshold(percentile)


def check_p(p: float) -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"the probability cut-off must be a number between 0 and 1, not {p!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"the probability cut-off must be between 0 and 1, not {p}")
    return p


# --- a query held in memory, seen through the QuerySource interface ----------------------------------------


class _MemorySource:
    """An AnnData (or any cells x genes matrix) behind the part of ``QuerySource`` prediction uses."""

    format = "anndata"

    def __init__(self, adata):
        self.adata = adata
        self.n_obs, self.n_vars = adata.shape
        self.obs_names = pd.Index(adata.obs_names.astype(str))
        self.var = adata.var

    def iter_blocks(self, block_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
        X = self.adata.X
        if X is None:
            raise ValuesError("the AnnData has no X: put the expression values in X (or pass layer/use_raw to the reader)")
        if sp.issparse(X) and X.format != "csr":
            X = X.tocsr()
        for start in range(0, self.n_obs, block_size):
            block = X[start : start + block_size]
            block = sp.csr_matrix(block, dtype=np.float32) if not sp.issparse(block) else block.astype(np.float32)
            yield start, block


# --- prediction --------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What prediction keeps for n cells and K reference types."""

    obs_names: pd.Index
    cell_types: list[str]
    method: str
    proba: np.ndarray  # n x K, the reported probabilities (rows sum to 1)
    scores: np.ndarray | None  # n x K, GsRCL's un-normalised per-type probabilities; None for AF-RCL
    labels: np.ndarray  # n, str (object), a cell type or Unassigned
    sample: np.ndarray  # indices of the cells whose embedding was kept (sorted)
    embedding: np.ndarray  # len(sample) x d
    info: dict[str, Any] = field(default_factory=dict)
    novelty: np.ndarray | None = None  # n, the novelty score (`gsrcl.novelty`); None: the reference has none
    neighbours: Any = None  # a fitted `gsrcl.neighbours.QueryNeighbours`, or None (off, or too few cells)

    @property
    def conf(self) -> np.ndarray:
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
        return None if self.scores is None else (self.scores.max(axis=1) if len(self.scores) else np.empty(0))


def _load_reference(reference):
    from .reference import Reference

    if isinstance(reference, Reference):
        return reference
    if isinstance(reference, (str, os.PathLike)):
        return Reference.load(reference)
    raise TypeError("reference must be a gsrcl Reference or the path of a reference directory")


def _reference_kind(ref) -> str | None:
    """The value kind the reference was trained on, if its manifest says."""
    values = ref.values or {}
    for key in ("kind", "detected", "expected", "input"):
        v = values.get(key)
        if isinstance(v, str) and v in ("counts", "log1p", "normalized", "scaled"):
            return v
    return None


def choose_kind(first_block: sp.csr_matrix, log_mode: str, ref):
    """How to turn the query into model input (``--log``): a ``ValueReport`` for ``to_model_input``, and a
    record of how it was chosen. ``auto`` trusts the detection; ``1`` = raw counts (log1p is applied);
    ``0`` = already natural log(1+x) (used as is)."""
    import dataclasses
    import math

    from .values import detect_values

    log_mode = str(log_mode)
    if log_mode not in LOG_MODES:
        raise ValueError(f"log must be one of {', '.join(LOG_MODES)}, not {log_mode!r}")
    report = detect_values(first_block)
    detected = report.kind
    (log.warning if report.warn else log.info)("values: %s", report.message)
    if log_mode == "auto":
        spec = report
    else:
        kind = "counts" if log_mode == "1" else "log1p"
        spec = dataclasses.replace(report, kind=kind, log_base=math.e if kind == "log1p" else None)
        same = kind == detected or (kind == "counts" and detected == "normalized") or (
            kind == "log1p" and detected == "log1p" and report.log_base in (None, math.e))
        if not same:
            log.warning("warning: --log %s treats the values as %s, but they look otherwise: %s",
                        log_mode, "raw counts (log1p applied)" if kind == "counts" else "natural log(1+x) (used as is)",
                        report.message)
    if spec.kind == "scaled":
        from .values import to_model_input

        to_model_input(first_block[:0], spec)  # raises the ValuesError with its advice
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


def _first_rows(source, n: int) -> sp.csr_matrix:
    for _, block in source.iter_blocks(max(1, min(n, source.n_obs))):
        return block
    return sp.csr_matrix((0, source.n_vars if hasattr(source, "n_vars") else len(source.var)), dtype=np.float32)


def match_query(source, ref, verify_record: dict | None = None):
    """Gene matching with the verify checks (overlap rule); a verified file must be for this reference."""
    from .genes import match_genes
    from .verify import check_genes, gene_record

    if verify_record is not None:
        genes = list(map(str, source.var.index))
        if genes != list(ref.genes):
            raise InvalidReferenceError(
                f"the verified file was made for reference {verify_record.get('reference', '?')!r}, whose genes "
                f"differ from {ref.name!r}: run 'gsrcl verify' again with this reference, or pass the raw query"
            )
        match = match_genes(source.var, ref.genes)
        record = {k: verify_record[k] for k in gene_record(match) if k in verify_record} or gene_record(match)
        return match, record
    match = check_genes(source.var, ref)
    return match, gene_record(match)


@dataclass
class Prepared:
    match: Any
    genes: dict[str, Any]
    kind: Any  # the ValueReport given to to_model_input
    values: dict[str, Any]


def prepare(source, ref, *, log_mode: str = "auto", verify_record: dict | None = None) -> Prepared:
    """The checks before prediction: genes (overlap rule) and value kind (``--log``)."""
    match, genes = match_query(source, ref, verify_record)
    kind, values = choose_kind(_first_rows(source, VALUE_SAMPLE_CELLS), log_mode, ref)
    return Prepared(match, genes, kind, values)


def predict_source(
    source,
    ref,
    *,
    p: float = 0.5,
    raw_cutoff: bool = False,
    novelty_cutoff: float | None = None,
    neighbours: int = N_NEIGHBORS,
    log_mode: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    tsne_cells: int = TSNE_MAX_CELLS,
    seed: int = 0,
    quiet: bool = False,
    verify_record: dict | None = None,
    on_block: Callable[[int, sp.csr_matrix], None] | None = None,
    prepared: "Prepared | None" = None,
) -> Prediction:
    """Predict every cell of ``source`` block by block; ``on_block(start, raw_block)`` sees each block as read.
    ``prepared``: the result of ``prepare`` when the checks were run already. ``novelty_cutoff``: a percentile
    of the reference cells' novelty scores; cells scoring above it are Unassigned too (None: no such rule).
    ``neighbours``: the query cells over which ``unseen`` is averaged (0: each cell on its own)."""
    from tqdm.auto import tqdm

    from .genes import align
    from .novelty import CP10K
    from .values import log1p_normalized, to_model_input

    p = check_p(p)
    novelty_max = check_novelty_cutoff(novelty_cutoff, ref)
    neighbours = check_neighbours(neighbours)
    novelty = ref.novelty
    library_size = ref.values.get("library_size")  # None for references that take log1p counts as they are
    cp10k = library_size == CP10K  # the model input is the novelty score's input already
    if int(block_size) < 1:
        raise ValueError(f"block size must be a positive number of cells, not {block_size}")
    block_size = int(block_size)
    model = ref.model
    # optional estimator method returning (predict_scores(X), embed(X)) from one encoder pass
    both = getattr(model, "predict_scores_and_embed", None)
    types = list(map(str, ref.cell_types))
    gsrcl = ref.method == "gsrcl"
    if raw_cutoff and not gsrcl:
        log.info("note: --raw-cutoff changes nothing for AF-RCL, whose probabilities are not renormalised")

    n = int(source.n_obs)
    prep = prepared or prepare(source, ref, log_mode=log_mode, verify_record=verify_record)
    match, genes, kind, values = prep.match, prep.genes, prep.kind, prep.values

    rng = np.random.default_rng(seed)
    m = min(n, max(0, int(tsne_cells)))
    sample = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    proba = np.empty((n, len(types)), dtype=np.float64)
    scores = np.empty((n, len(types)), dtype=np.float64) if gsrcl else None
    novel = np.empty(n, dtype=np.float64) if novelty is not None else None
    pieces: list[np.ndarray] = []
    done = 0
    with tqdm(total=n, unit="cells", desc="predict", disable=quiet, leave=False) as bar:
        for start, block in source.iter_blocks(block_size):
            stop = start + block.shape[0]
            if on_block is not None:
                on_block(start, block)
            X = to_model_input(align(block, match), kind)
            if library_size:
                X = log1p_normalized(X, library_size)
            rows = _rows_in(sample, start, stop)
            if len(rows) and both is not None:  # one encoder pass for the scores and the t-SNE embedding
                s, emb = both(X)
                pieces.append(np.asarray(emb, dtype=np.float32)[rows])
            else:
                s = model.predict_scores(X)
                if len(rows):
                    pieces.append(np.asarray(model.embed(X[rows]), dtype=np.float32))
            s = np.asarray(s, dtype=np.float64)
            proba[start:stop] = normalise_rows(s)  # AF-RCL's rows sum to 1 already; GsRCL's are divided by their sum
            if gsrcl:
                scores[start:stop] = s
            if novel is not None:
                novel[start:stop] = novelty.score(X, cp10k=cp10k)
            done += block.shape[0]
            bar.update(block.shape[0])
    if done != n:
        raise ValuesError(f"the reader gave {done} cells but the file declares {n}: the file may be truncated")
    labels = assign_labels(proba, types, p, cutoff_on=scores if (gsrcl and raw_cutoff) else None)
    if novelty_max is not None:
        labels[novel > novelty_max] = UNASSIGNED
    embedding = np.concatenate(pieces) if pieces else np.empty((0, 0), dtype=np.float32)
    graph, graph_record = None, {"applied": False, "note": "off (neighbours=0)" if not neighbours else
                                 "the reference has no novelty score"}
    if neighbours and novel is not None:
        graph, graph_record = query_neighbours(source, kind, n_neighbors=neighbours, block_size=block_size,
                                               seed=seed, quiet=quiet)
    info = {
        "genes": genes,
        "values": values,
        "cutoff": {
            "p": p,
            "raw_cutoff": bool(raw_cutoff and gsrcl),
            "applied_to": ("max un-normalised per-type probability (max_raw_score)" if raw_cutoff and gsrcl
                           else "max reported probability (conf_score)"),
            "rule": "Unassigned when that probability <= p"
                    + ("" if novelty_max is None else ", or when novelty_score > novelty_max"),
            "novelty_percentile": None if novelty_max is None else float(novelty_cutoff),
            "novelty_max": novelty_max,
        },
        "block_size": block_size,
        "seed": int(seed),
        "neighbours": graph_record,
    }
    return Prediction(pd.Index(source.obs_names.astype(str)), types, ref.method, proba, scores, labels, sample,
                      embedding, info, novel, graph)


def _rows_in(rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The sorted cell indices ``rows`` that fall in the block [start, stop), as positions within it."""
    lo, hi = np.searchsorted(rows, [start, stop])
    return rows[lo:hi] - start


def query_neighbours(source, kind, *, n_neighbors: int, block_size: int = DEFAULT_BLOCK_SIZE, seed: int = 0,
                     quiet: bool = False):
    """The query's neighbourhoods (`gsrcl.neighbours`) from its own values over all its genes, read three
    times more (twice of a subset only above ``FIT_MAX_CELLS`` cells); (None, why) for a query too small."""
    from tqdm.auto import tqdm

    from .neighbours import QueryNeighbours, min_cells
    from .novelty import novelty_input
    from .values import to_model_input

    n = int(source.n_obs)
    if n < min_cells(n_neighbors):
        note = (f"unseen_score is per cell: {n} cells are too few for neighbourhoods of {n_neighbors} "
                f"(at least {min_cells(n_neighbors)} are needed)")
        log.info(note)
        return None, {"applied": False, "note": note}
    t0 = time.perf_counter()
    with tqdm(total=3 * n, unit="cells", desc="neighbours", disable=quiet, leave=False) as bar:
        def blocks(rows=None):
            for start, block in source.iter_blocks(block_size):
                bar.update(block.shape[0])
                if rows is not None:  # only these cells are normalised
                    block = block[_rows_in(rows, start, start + block.shape[0])]
                yield novelty_input(to_model_input(block, kind))

        graph = QueryNeighbours(n_neighbors, seed=seed).fit(blocks, n)
    return graph, {"applied": True, **graph.record(), "seconds": round(time.perf_counter() - t0, 2)}


def run_tsne(pred: Prediction, *, seed: int = 0) -> tuple[np.ndarray | None, dict[str, Any]]:
    """t-SNE coordinates of the kept cells (``pred.sample``), and a record for uns."""
    n = len(pred.sample)
    if n < MIN_TSNE_CELLS:
        msg = f"t-SNE not drawn: {n} cell{'s' if n != 1 else ''} (at least {MIN_TSNE_CELLS} are needed)"
        log.info(msg)
        return None, {"drawn": False, "note": msg, "n_cells": int(n)}
    log.info("t-SNE of %d cells%s", n, "" if n == len(pred.proba) else f" (a seeded random subset of {len(pred.proba)})")
    t0 = time.perf_counter()
    coords = tsne_embedding(pred.embedding, seed=seed)
    return coords, {
        "drawn": True,
        "n_cells": int(n),
        "subsampled": bool(n < len(pred.proba)),
        "perplexity": tsne_perplexity(n),
        "on": f"encoder embedding ({pred.embedding.shape[1]} dims{', PCA to 50' if pred.embedding.shape[1] > 50 else ''})",
        "seed": int(seed),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _title(pred: Prediction) -> str | None:
    n, m = len(pred.proba), len(pred.sample)
    return None if m == n else f"a seeded random {m:,} of the {n:,} cells (legend: cells shown)"


# --- what goes into the AnnData --------------------------------------------------------------------------------


def _reference_record(ref) -> dict[str, Any]:
    m = ref.manifest
    return {
        "name": str(m.get("name", "")),
        "path": str(ref.path) if ref.path is not None else "",
        "method": str(m["method"]),
        "preset": str(m.get("preset", "")),
        "n_genes": len(m["genes"]),
        "cell_types": list(map(str, m["cell_types"])),
        "created": str(m.get("created", "")),
        "gsrcl_version": str(m.get("versions", {}).get("gsrcl", "")),
        "arrays_sha256": str(m.get("files", {}).get("arrays.npz", {}).get("sha256", "")),
    }


def _plain(obj):
    """Something anndata can write to uns: no None, no numpy scalars, no empty lists of unknown type."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if not obj:
            return np.array([], dtype=str)
        return [_plain(v) for v in obj]
    if obj is None:
        return ""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def annotations(pred: Prediction, ref, *, params: dict[str, Any], tsne: dict[str, Any] | None = None,
                source: dict[str, Any] | None = None):
    """obs columns, obsm entries and the uns records that ``annotate`` / ``predict_files`` add to the query."""
    types = pred.cell_types
    categories = types + [UNASSIGNED]
    obs = pd.DataFrame(index=pred.obs_names)
    obs["predicted_labels"] = pd.Categorical(pred.labels, categories=categories)
    obs["conf_score"] = pred.conf.astype(np.float32)
    if pred.scores is not None:
        obs["max_raw_score"] = pred.max_raw.astype(np.float32)
    if pred.novelty is not None:
        obs["novelty_score"] = pred.novelty.astype(np.float32)
        obs["unseen_score"] = pred.unseen.astype(np.float32)
        if pred.neighbours is not None:
            obs["unseen_score_cell"] = pred.unseen_cell.astype(np.float32)
    # plain arrays, columns in uns['gsrcl']['cell_types'] order: as DataFrame columns, type names holding '/'
    # (e.g. "CD4+/CD25 T Reg") would become nested HDF5 groups; ``probabilities(adata)`` gives the DataFrame
    obsm = {"probabilities": np.ascontiguousarray(pred.proba)}
    if pred.scores is not None:
        obsm["raw_scores"] = np.ascontiguousarray(pred.scores)
    colours = palette(types)
    counts = obs["predicted_labels"].value_counts()
    record = {
        "method": ref.method,
        "params": params,
        "reference": _reference_record(ref),
        "genes": pred.info["genes"],
        "values": pred.info["values"],
        "cutoff": pred.info["cutoff"],
        "neighbours": pred.info.get("neighbours", {}),
        "cell_types": types,
        # two lists, not a dict: cell-type names may hold '/', which HDF5 keys cannot
        "labels": categories,
        "label_counts": [int(counts.get(c, 0)) for c in categories],
        "columns": {
            "predicted_labels": "argmax cell type, or Unassigned when the cut-off probability is <= p",
            "conf_score": "the highest reported probability (GsRCL: after dividing by the row sum)",
            **({"max_raw_score": "GsRCL: the highest un-normalised one-vs-rest probability; low for a cell that "
                                 "no cell-type task claims, however high conf_score is"} if pred.scores is not None else {}),
            **({"novelty_score": "distance to the nearest reference cell type in the reference's principal "
                                 "components, over the median reference cell's (1 = typical; high = unlike every "
                                 "reference type, e.g. a type the reference lacks)",
                "unseen_score": "novelty_score / conf_score, averaged over the cell's nearest query cells "
                                "(uns['gsrcl']['neighbours']; per cell when that is off): high where cells are far "
                                "from every reference type or unsure between them; sort by it to find cells of "
                                "types the reference lacks"}
               if pred.novelty is not None else {}),
            **({"unseen_score_cell": "novelty_score / conf_score of the cell alone"}
               if pred.neighbours is not None else {}),
            "obsm.probabilities": "reported probabilities (n x K array), columns = uns['gsrcl']['cell_types']",
            **({"obsm.raw_scores": "GsRCL: un-normalised one-vs-rest probabilities (n x K array), columns = "
                                   "uns['gsrcl']['cell_types']"} if pred.scores is not None else {}),
        },
        "tsne": tsne or {"drawn": False, "note": "not requested"},
        "source": source or {},
        "versions": versions("numpy", "scipy", "pandas", "anndata", "torch", "scikit-learn", "openTSNE"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    uns = {UNS_KEY: _plain(record), "predicted_labels_colors": [colours[c] for c in categories]}
    return obs, obsm, uns


def _merge_obs(base: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    clash = [c for c in new.columns if c in base.columns]
    if clash:
        log.warning("warning: replacing existing obs columns %s with this prediction", ", ".join(clash))
    out = base.drop(columns=clash).copy()
    for c in new.columns:
        out[c] = new[c].to_numpy() if not isinstance(new[c].dtype, pd.CategoricalDtype) else new[c].values
    return out


def annotate(
    adata,
    reference,
    p: float = 0.5,
    *,
    raw_cutoff: bool = False,
    novelty_cutoff: float | None = None,
    neighbours: int = N_NEIGHBORS,
    log: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    plot: bool | str | os.PathLike = False,
    tsne_cells: int = TSNE_MAX_CELLS,
    seed: int = 0,
    quiet: bool = False,
):
    """Annotate an in-memory query; returns an annotated copy (``adata`` itself is not modified).

    ``reference``: a loaded ``gsrcl.Reference`` or the path of a reference directory. The query's genes are
    matched to the reference (more than half of the query genes must be found, else ``GeneOverlapError``);
    a ``verified.h5ad`` from ``gsrcl verify`` is taken as is. ``log``: ``"auto"`` detects counts vs log(1+x),
    ``"1"`` = raw counts (log1p is applied), ``"0"`` = already log(1+x).

    The copy gains ``obs['predicted_labels']`` (categorical: the reference types then ``Unassigned``),
    ``obs['conf_score']`` (the highest reported probability), for GsRCL ``obs['max_raw_score']`` (the highest
    un-normalised one-vs-rest probability) and ``obsm['raw_scores']``, ``obs['novelty_score']`` (how unlike
    every reference type the cell is, `gsrcl.novelty`; ``novelty_cutoff``, a percentile of the reference
    cells' scores, makes cells above it Unassigned), ``obs['unseen_score']`` (novelty_score / conf_score
    averaged over the cell's ``neighbours`` nearest query cells, ``obs['unseen_score_cell']`` the cell's own;
    ``neighbours=0``: per cell only), ``obsm['probabilities']`` (n x K arrays,
    columns = ``uns['gsrcl']['cell_types']``; ``probabilities(adata)`` of this module gives a DataFrame),
    ``uns['predicted_labels_colors']`` (the plot colours, scanpy's convention) and ``uns['gsrcl']``
    (parameters, versions, reference summary, gene-match numbers, value kind).
    ``plot=True`` adds the t-SNE of the encoder embedding as ``obsm['X_tsne']`` (NaN for cells outside the
    seeded subset of at most ``tsne_cells``); a path also writes the SVG there.
    """
    ref = _load_reference(reference)
    verify_record = None
    from .verify import UNS_KEY as VERIFY_KEY

    if VERIFY_KEY in adata.uns and list(map(str, adata.var_names)) == list(ref.genes):
        verify_record = dict(adata.uns[VERIFY_KEY])
    want_plot = plot is not False and plot is not None
    pred = predict_source(_MemorySource(adata), ref, p=p, raw_cutoff=raw_cutoff, novelty_cutoff=novelty_cutoff,
                          neighbours=neighbours, log_mode=log, block_size=block_size,
                          tsne_cells=tsne_cells if want_plot else 0, seed=seed, quiet=quiet,
                          verify_record=verify_record)
    coords, tsne = (None, None)
    if want_plot:
        coords, tsne = run_tsne(pred, seed=seed)
    params = {"p": pred.info["cutoff"]["p"], "raw_cutoff": bool(raw_cutoff), "novelty_cutoff": novelty_cutoff,
              "neighbours": int(neighbours), "log": str(log),
              "block_size": int(block_size), "tsne_cells": int(tsne_cells), "seed": int(seed)}
    obs, obsm, uns = annotations(pred, ref, params=params, tsne=tsne, source={"format": "anndata"})
    out = adata.copy()
    out.obs = _merge_obs(out.obs, obs.set_axis(out.obs_names))
    for k, v in obsm.items():
        out.obsm[k] = v
    out.uns.update(uns)
    if coords is not None:
        full = np.full((out.n_obs, 2), np.nan)
        full[pred.sample] = coords
        out.obsm["X_tsne"] = full
    if isinstance(plot, (str, os.PathLike)):
        colours = palette(pred.cell_types)
        plot_tsne(coords, pred.labels[pred.sample], colours, plot, note=(tsne or {}).get("note"), title=_title(pred))
    return out


def probabilities(adata, key: str = "probabilities") -> pd.DataFrame:
    """``adata.obsm[key]`` of an annotated query as a DataFrame: cells x reference cell types."""
    return pd.DataFrame(np.asarray(adata.obsm[key]), index=adata.obs_names,
                        columns=list(map(str, adata.uns[UNS_KEY]["cell_types"])))


# --- files -----------------------------------------------------------------------------------------------------


class _Staging:
    """Temporary files in OUT, renamed onto their targets together at the end; removed on failure."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.tmp: dict[str, Path] = {}
        self.created_dir = False

    def open(self) -> None:
        try:
            if not self.out_dir.exists():
                self.out_dir.mkdir(parents=True)
                self.created_dir = True
            for name in OUTPUTS:
                self.tmp[name] = temp_file(self.out_dir, name)
        except OSError as exc:
            self.discard()
            raise OutputError(f"cannot write to {self.out_dir}: {exc.strerror or exc}") from None

    def __getitem__(self, name: str) -> Path:
        return self.tmp[name]

    def commit(self, written: set[str]) -> dict[str, Path]:
        done = {}
        for name in OUTPUTS:
            target = self.out_dir / name
            if name in written:
                os.replace(self.tmp.pop(name), target)
                done[name] = target
            elif target.exists():  # e.g. a t-SNE from an earlier run, now not drawn: it must not stay
                target.unlink()
        self.discard()
        return done

    def discard(self) -> None:
        for path in self.tmp.values():
            path.unlink(missing_ok=True)
        self.tmp.clear()
        if self.created_dir:
            try:
                self.out_dir.rmdir()  # only if still empty
            except OSError:
                pass


class _H5adXWriter:
    """Writes X of ``annotated.h5ad`` as a CSR group block by block (anndata's on-disk encoding)."""

    def __init__(self, path: Path, n_obs: int, n_vars: int):
        import h5py

        self.f = h5py.File(path, "w")
        self.n_obs, self.n_vars = n_obs, n_vars
        g = self.f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = np.array([n_obs, n_vars], dtype=np.int64)
        idx = np.int32 if n_vars < 2**31 else np.int64
        self.data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 18,))
        self.indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=idx, chunks=(1 << 18,))
        self.indptr = g.create_dataset("indptr", shape=(n_obs + 1,), dtype=np.int64)
        self.indptr[0] = 0
        self.nnz = 0
        self.rows = 0

    def add(self, start: int, block: sp.csr_matrix) -> None:
        if start != self.rows:
            raise RuntimeError(f"blocks out of order: expected row {self.rows}, got {start}")
        block = block.tocsr()
        k = int(block.indptr[-1])
        lo, hi = self.nnz, self.nnz + k
        if k:
            self.data.resize((hi,))
            self.indices.resize((hi,))
            self.data[lo:hi] = block.data[:k].astype(np.float32, copy=False)
            self.indices[lo:hi] = block.indices[:k]
        r = block.shape[0]
        self.indptr[self.rows + 1 : self.rows + r + 1] = block.indptr[1:].astype(np.int64) + lo
        self.nnz, self.rows = hi, self.rows + r

    def finish(self, obs: pd.DataFrame, var: pd.DataFrame, obsm: dict, uns: dict) -> None:
        from anndata.io import write_elem

        if self.rows != self.n_obs:
            raise RuntimeError(f"wrote {self.rows} rows of {self.n_obs}")
        f = self.f
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        write_elem(f, "obsm", obsm)
        write_elem(f, "uns", uns)
        for key in ("varm", "obsp", "varp", "layers"):
            write_elem(f, key, {})
        f.close()

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:  # noqa: BLE001 - already closed or broken; the temp file is removed anyway
            pass


def _verify_record(path: Path) -> dict | None:
    """``uns['gsrcl_verify']`` of a verified.h5ad, without reading the matrix; None for any other file."""
    import h5py

    from .verify import UNS_KEY as VERIFY_KEY

    try:
        if path.is_dir() or not h5py.is_hdf5(path):
            return None
        from anndata.io import read_elem

        with h5py.File(path, "r") as f:
            key = f"uns/{VERIFY_KEY}"
            return dict(read_elem(f[key])) if key in f else None
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _query_obs(path: Path, source) -> pd.DataFrame:
    """The query's obs table (h5ad: its metadata columns, read on their own); else the barcodes only."""
    base = pd.DataFrame(index=pd.Index(source.obs_names.astype(str)))
    if getattr(source, "format", "") != "h5ad":
        return base
    try:
        import h5py
        from anndata.io import read_elem

        with h5py.File(path, "r") as f:
            obs = read_elem(f["obs"])
        if len(obs) == len(base) and (obs.index.astype(str) == base.index).all():
            obs.index = base.index
            return obs
    except Exception:  # noqa: BLE001 - metadata we cannot read is simply not carried over
        log.debug("obs metadata not carried over", exc_info=True)
    return base


def _csv(path: Path, pred: Prediction) -> None:
    df = pd.DataFrame(pred.proba, index=pd.Index(pred.obs_names, name="barcode"), columns=pred.cell_types)
    df["Identified as"] = pred.labels
    df.to_csv(path, float_format="%.9g", chunksize=100_000)


def output_paths(out_dir: str | os.PathLike) -> dict[str, Path]:
    return {name: Path(out_dir) / name for name in OUTPUTS}


def check_outputs(out_dir: str | os.PathLike, overwrite: bool) -> None:
    existing = [p for p in output_paths(out_dir).values() if p.exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise OutputError(f"{out_dir} already holds {names}: pass --overwrite to replace them, or choose another -o")


def predict_files(
    input_path: str | os.PathLike | None,
    reference,
    out_dir: str | os.PathLike = ".",
    *,
    p: float = 0.5,
    raw_cutoff: bool = False,
    novelty_cutoff: float | None = None,
    neighbours: int = N_NEIGHBORS,
    log_mode: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    overwrite: bool = False,
    plot: bool = True,
    tsne_cells: int = TSNE_MAX_CELLS,
    seed: int = 0,
    quiet: bool = False,
    reader_kwargs: dict | None = None,
) -> dict[str, Any]:
    """``gsrcl predict``: annotate the query file ``input_path`` (raw, any readable format, or a verified.h5ad;
    ``None`` = ``out_dir/verified.h5ad``) and write the four outputs into ``out_dir``. Returns a summary."""
    from .io import open_query
    from .verify import VERIFIED

    out_dir = Path(out_dir)
    p = check_p(p)
    check_outputs(out_dir, overwrite)
    if input_path is None:
        input_path = out_dir / VERIFIED
        if not input_path.exists():
            raise MissingPathError(
                f"no -i given and {input_path} does not exist: run 'gsrcl verify -i QUERY -o {out_dir}' first, "
                "or pass the query with -i"
            )
    input_path = Path(input_path)
    if not input_path.exists():
        raise MissingPathError(f"{input_path} does not exist: check the path given with -i")
    targets = {q.resolve() for q in output_paths(out_dir).values()}
    if input_path.resolve() in targets:
        raise OutputError(f"the input {input_path} is one of the outputs: write them elsewhere with -o")

    t0 = time.perf_counter()
    ref = _load_reference(reference)
    check_novelty_cutoff(novelty_cutoff, ref)
    check_neighbours(neighbours)
    source = open_query(input_path, **(reader_kwargs or {}))
    verify_record = _verify_record(input_path)
    if verify_record is not None:
        from .verify import describe

        log.info("verified file for reference %r: %s", verify_record.get("reference", "?"), describe(verify_record))
    # the checks that need no prediction run before any file is created
    prepared = prepare(source, ref, log_mode=log_mode, verify_record=verify_record)

    staging = _Staging(out_dir)
    staging.open()
    writer = None
    try:
        writer = _H5adXWriter(staging[ANNOTATED], int(source.n_obs), len(source.var))
        pred = predict_source(source, ref, p=p, raw_cutoff=raw_cutoff, novelty_cutoff=novelty_cutoff,
                              neighbours=neighbours, log_mode=log_mode, block_size=block_size,
                              tsne_cells=tsne_cells if plot else 0, seed=seed, quiet=quiet,
                              verify_record=verify_record, on_block=writer.add, prepared=prepared)
        t_pred = time.perf_counter() - t0
        t1 = time.perf_counter()
        coords, tsne = run_tsne(pred, seed=seed) if plot else (None, {"drawn": False, "note": "not requested (--no-plot)"})
        t_tsne = time.perf_counter() - t1
        params = {"p": p, "raw_cutoff": bool(raw_cutoff), "novelty_cutoff": novelty_cutoff,
                  "neighbours": int(neighbours), "log": str(log_mode),
                  "block_size": int(block_size),
                  "tsne_cells": int(tsne_cells), "seed": int(seed), "plot": bool(plot)}
        src = {"path": str(input_path), "format": str(getattr(source, "format", "")),
               "verified_input": verify_record is not None}
        if verify_record is not None:
            src["verify"] = verify_record
        obs, obsm, uns = annotations(pred, ref, params=params, tsne=tsne, source=src)
        query_obs = _merge_obs(_query_obs(input_path, source), obs)
        var = source.var.copy()
        var.index = var.index.astype(str)
        writer.finish(query_obs, var, obsm, uns)
        writer = None

        written = {ANNOTATED, PROBABILITIES, LEGEND}
        _csv(staging[PROBABILITIES], pred)
        colours = palette(pred.cell_types)
        staging[LEGEND].write_text(legend_text(pred.cell_types, colours, pred.labels))
        if plot:
            plot_tsne(coords, pred.labels[pred.sample], colours, staging[TSNE], note=tsne.get("note"),
                      title=_title(pred))
            written.add(TSNE)
        paths = staging.commit(written)
    except BaseException:
        if writer is not None:
            writer.close()
        staging.discard()
        raise
    counts = pd.Series(pred.labels).value_counts()
    return {
        "paths": paths,
        "n_cells": len(pred.labels),
        "counts": {c: int(counts.get(c, 0)) for c in pred.cell_types + [UNASSIGNED]},
        "method": ref.method,
        "reference": ref.name,
        "seconds_predict": t_pred,
        "seconds_tsne": t_tsne,
        "prediction": pred,
    }
