"""A `Prediction` as AnnData annotations (obs, obsm, uns), and ``gsrcl.annotate`` for a query held in memory.

Every cell gets ``obs['predicted_labels']`` (`gsrcl.predict` holds the rule), ``obs['conf_score']`` and, where the
reference has a novelty model, ``obs['novelty_score']`` (`gsrcl.novelty`: how unlike every reference type it is, 1 =
a typical reference cell), which tells cells of types the reference lacks from known ones better than any
probability. ``obs['unseen_score_cell']`` is ``novelty_score / conf_score``: high for a cell that is far from every
reference type, or unsure between types, or both; ``obs['unseen_score']`` is its mean over the cell's ``neighbours``
nearest query cells (`gsrcl.neighbours`), since cells of a type the reference lacks come in groups. Labels do not
depend on it. With ``insert_prob``, ``obs['prob_<type>']`` holds each reference type's reported probability (a
``/`` in a type name becomes ``_``), to colour a plot by one type.

``obs['unassigned_reason']`` says why a cell is Unassigned (``""`` for an assigned cell; `gsrcl.cutoff.REASONS`):
``"no counts in the reference genes"``, ``"too few reference genes detected"`` (fewer than
`gsrcl.cutoff.min_detected_genes` non-zero), ``"probability at or below p"`` or ``"novelty above the cut-off"``;
``uns['gsrcl']['unassigned']`` counts them. Such a cell's probabilities are reported as the model gave them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .cutoff import REASONS, UNASSIGNED, novelty_threshold
from .neighbours import N_NEIGHBORS
from .plot import palette, plot_tsne, tsne_of, tsne_title
from .predict import DEFAULT_BLOCK_SIZE, TSNE_MAX_CELLS, Prediction, Settings, load_reference, predict, prepare
from .versions import versions

log = logging.getLogger("gsrcl.annotation")

UNS_KEY = "gsrcl"
PROB_PREFIX = "prob_"

__all__ = ["UNASSIGNED", "UNS_KEY", "annotate", "annotations", "prob_column", "probabilities"]


def prob_column(cell_type: str) -> str:
    """The obs column of ``insert_prob`` for ``cell_type``: ``prob_<type>``, a ``/`` (which HDF5 reads as a
    group separator) replaced by ``_``."""
    return PROB_PREFIX + str(cell_type).replace("/", "_")


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
                source: dict[str, Any] | None = None, insert_prob: bool = False):
    """The obs columns, obsm entries and uns records of a prediction.

    Parameters
    ----------
    pred : Prediction
    ref : Reference
        The reference it was made with (summarised in uns).
    params : dict
        The settings, recorded as ``uns['gsrcl']['params']``.
    tsne : dict, optional
        The t-SNE record (`gsrcl.plot.tsne_of`).
    source : dict, optional
        Where the query came from.
    insert_prob : bool
        Add ``obs['prob_<type>']`` per reference type (`prob_column`).

    Returns
    -------
    obs : pandas.DataFrame
        Indexed by ``pred.obs_names``.
    obsm : dict of str to ndarray
    uns : dict
        ``{"gsrcl": record, "predicted_labels_colors": colours}``.
    """
    types = pred.cell_types
    categories = types + [UNASSIGNED]
    obs = pd.DataFrame(index=pred.obs_names)
    obs["predicted_labels"] = pd.Categorical(pred.labels, categories=categories)
    if pred.reasons is not None:
        obs["unassigned_reason"] = pd.Categorical(pred.reasons, categories=list(REASONS))
    if pred.majority is not None:
        obs["majority_voting"] = pd.Categorical(pred.majority, categories=categories)
        obs["over_clustering"] = pd.Categorical(pred.clusters.astype(str),
                                                categories=[str(c) for c in range(int(pred.clusters.max(initial=0)) + 1)])
    obs["conf_score"] = pred.conf.astype(np.float32)
    if pred.scores is not None:
        obs["max_raw_score"] = pred.max_raw.astype(np.float32)
    if pred.novelty is not None:
        obs["novelty_score"] = pred.novelty.astype(np.float32)
        obs["unseen_score"] = pred.unseen.astype(np.float32)
        if pred.neighbours is not None:
            obs["unseen_score_cell"] = pred.unseen_cell.astype(np.float32)
    if insert_prob:
        for j, t in enumerate(types):
            obs[prob_column(t)] = pred.proba[:, j].astype(np.float32)
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
        "unassigned": pred.info.get("unassigned", {}),
        **({"majority_voting": pred.info["majority_voting"]} if "majority_voting" in pred.info else {}),
        "cell_types": types,
        # two lists, not a dict: cell-type names may hold '/', which HDF5 keys cannot
        "labels": categories,
        "label_counts": [int(counts.get(c, 0)) for c in categories],
        "columns": {
            "predicted_labels": "argmax cell type, or Unassigned when the cut-off probability is <= p",
            **({"majority_voting": "the most frequent predicted_labels of the cell's over-cluster of the query "
                                   "(over_clustering: Leiden on the query's neighbour graph)"}
               if pred.majority is not None else {}),
            **({"unassigned_reason": "why the cell is Unassigned ('' when it is not): no counts in the reference "
                                     "genes, too few reference genes detected (fewer than "
                                     f"{pred.info.get('unassigned', {}).get('min_reference_genes', '?')} non-zero), "
                                     "probability at or below p, or novelty above the cut-off"}
               if pred.reasons is not None else {}),
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
            **({f"{PROB_PREFIX}<type>": "the reported probability of each reference type (as obsm.probabilities; "
                                        "'/' in a type name replaced by '_')"} if insert_prob else {}),
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


def merge_obs(base: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``base`` with the columns of ``new`` (same rows) added; columns of the same name are replaced, with a
    warning."""
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
    majority_voting: bool = False,
    log: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    plot: bool | str | os.PathLike = False,
    tsne_cells: int = TSNE_MAX_CELLS,
    seed: int = 0,
    quiet: bool = False,
    insert_prob: bool = False,
    client=None,
):
    """Annotate a query held in memory with a reference; returns an annotated copy.

    Parameters
    ----------
    adata : anndata.AnnData
        The query, cells x genes (raw counts or log1p values in X; dense or sparse). It is not modified. A
        ``verified.h5ad`` from ``gsrcl verify`` is taken as it is. A backed AnnData
        (``anndata.read_h5ad(path, backed="r")``) is read from its file in blocks of rows; the copy returned is
        in memory (``adata.to_memory()``, made after the prediction), so it needs room for X: to annotate a query
        larger than memory, use ``gsrcl.predict_files`` (``gsrcl predict``), which writes annotated.h5ad block
        by block.
    reference : Reference or path-like
        A loaded ``gsrcl.Reference`` or the path of a reference directory.
    p : float
        The probability cut-off in [0, 1]: a cell whose cut-off probability is <= p is ``Unassigned``.
    raw_cutoff : bool
        GsRCL: apply ``p`` to the highest un-normalised per-type probability (``obs['max_raw_score']``).
    novelty_cutoff : float, optional
        A percentile (0-100] of the reference cells' novelty scores: cells scoring above it are Unassigned too.
    neighbours : int
        ``obs['unseen_score']`` is averaged over each cell's this many nearest query cells (0: per cell).
    majority_voting : bool
        Also ``obs['majority_voting']``: the majority label of each cell's over-cluster of the query
        (``obs['over_clustering']``; `gsrcl.majority`, CellTypist's option); needs ``neighbours``.
    log : {"auto", "1", "0"}
        ``"auto"`` detects counts vs log(1+x); ``"1"``: raw counts (log1p is applied); ``"0"``: log(1+x) already.
    block_size : int
        Cells predicted at a time.
    plot : bool or path-like
        True: add the t-SNE of the encoder embedding as ``obsm['X_tsne']`` (NaN for cells outside the seeded
        subset of at most ``tsne_cells``); a path also writes the SVG there.
    tsne_cells : int
    seed : int
        Seeds the t-SNE and the subsets.
    quiet : bool
        No progress bars.
    insert_prob : bool
        Also add ``obs['prob_<type>']``: each reference type's reported probability (a ``/`` in a type name
        becomes ``_``), to colour a plot by one type.
    client : dask.distributed.Client, optional
        Predict on this Dask cluster (`gsrcl.distributed`): the same result, the blocks (scattered to the workers
        from memory) computed by its workers. For a query file, ``gsrcl.outputs.predict_files(...,
        client=client)`` lets the workers read it themselves.

    Returns
    -------
    anndata.AnnData
        A copy of ``adata`` with ``obs['predicted_labels']`` (categorical: the reference types, then
        ``Unassigned``), ``obs['conf_score']`` (the highest reported probability), for GsRCL
        ``obs['max_raw_score']`` and ``obsm['raw_scores']``, ``obs['novelty_score']``, ``obs['unseen_score']``
        and (with neighbourhoods) ``obs['unseen_score_cell']``, ``obsm['probabilities']`` (n x K, columns =
        ``uns['gsrcl']['cell_types']``; `probabilities` gives a DataFrame), ``uns['predicted_labels_colors']``
        (scanpy's convention) and ``uns['gsrcl']`` (settings, versions, reference summary, gene-match numbers,
        value kind).

    Raises
    ------
    ValueError
        For a setting out of range.
    GeneOverlapError
        When half or fewer of the query genes are in the reference.
    ValuesError
        When the values are unusable (scaled, NaN, no X).
    NamesError
        When cell names repeat (as ``gsrcl predict`` refuses them).
    InvalidReferenceError
        When the reference cannot be loaded, ``novelty_cutoff`` is asked of one without a novelty model, or one
        of its cell types is named ``Unassigned``.
    SchedulerError
        With ``client``, when the Dask cluster fails (a scattered block lost with its worker included).
    """
    from .io.source import QuerySource
    from .verify import UNS_KEY as VERIFY_KEY

    settings = Settings.checked(p=p, raw_cutoff=raw_cutoff, novelty_cutoff=novelty_cutoff, neighbours=neighbours,
                                log=log, block_size=block_size, tsne_cells=tsne_cells, seed=seed, quiet=quiet,
                                majority_voting=majority_voting)
    ref = load_reference(reference)
    novelty_max = novelty_threshold(settings.novelty_cutoff, ref)
    verify_record = None
    if VERIFY_KEY in adata.uns and list(map(str, adata.var_names)) == list(ref.genes):
        verify_record = dict(adata.uns[VERIFY_KEY])
    want_plot = plot is not False and plot is not None
    source = QuerySource.from_anndata(adata)
    prepared = prepare(source, ref, settings.log, verify_record)
    if client is None:
        pred = predict(source, ref, prepared, settings, novelty_max=novelty_max, embed=want_plot)
    else:
        from .distributed import predict_on_cluster

        pred = predict_on_cluster(client, source, ref, prepared, settings, novelty_max=novelty_max, embed=want_plot)
    coords, tsne = tsne_of(pred.embedding, len(pred.proba), seed=settings.seed) if want_plot else (None, None)
    params = {**settings.record(), "insert_prob": bool(insert_prob)}
    obs, obsm, uns = annotations(pred, ref, params=params, tsne=tsne, source={"format": "anndata"},
                                 insert_prob=insert_prob)
    out = adata.to_memory() if adata.isbacked else adata.copy()
    out.obs = merge_obs(out.obs, obs.set_axis(out.obs_names))
    for k, v in obsm.items():
        out.obsm[k] = v
    out.uns.update(uns)
    if coords is not None:
        full = np.full((out.n_obs, 2), np.nan)
        full[pred.sample] = coords
        out.obsm["X_tsne"] = full
    if isinstance(plot, (str, os.PathLike)):
        plot_tsne(coords, pred.labels[pred.sample], palette(pred.cell_types), plot, note=(tsne or {}).get("note"),
                  title=tsne_title(ref.method, ref.name, settings.p, len(pred.proba), len(pred.sample)))
    return out


def probabilities(adata, key: str = "probabilities") -> pd.DataFrame:
    """The probabilities of an annotated query as a DataFrame.

    Parameters
    ----------
    adata : anndata.AnnData
        Annotated by `annotate` or read from ``annotated.h5ad``.
    key : str
        ``"probabilities"`` or, for GsRCL, ``"raw_scores"``.

    Returns
    -------
    pandas.DataFrame
        Cells (``obs_names``) x reference cell types (``uns['gsrcl']['cell_types']``).
    """
    return pd.DataFrame(np.asarray(adata.obsm[key]), index=adata.obs_names,
                        columns=list(map(str, adata.uns[UNS_KEY]["cell_types"])))
