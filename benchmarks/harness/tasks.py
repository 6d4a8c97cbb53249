"""The task config (``benchmarks/tasks.json``) and the (reference, query) pairs of each task.

A task is a reference and a query (``cross``) or one dataset split into stratified folds (``cv``); each side is a
data file and the cells kept from it. The truth of every loaded cell is in ``obs[LABEL]``, its labels renamed
through the task's label map.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gsrcl.errors import CorruptFileError, GsrclError, LabelsError, MissingPathError

#: The task config beside this package: ``benchmarks/tasks.json``.
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "tasks.json"
KINDS = ("cross", "cv")
GENE_SETS = ("shared", "reference")
DEFAULT_SEED = 1111
#: obs column holding the (mapped) truth in the loaded copies.
LABEL = "benchmark_label"
#: ``--quick``: cells per side at most (sampled per type).
QUICK_MAX_CELLS = 300


@dataclass(frozen=True)
class Side:
    """One data file and the cells kept from it.

    Attributes
    ----------
    file : str
        File name, relative to the config's data folder.
    filter : dict of str to tuple of str
        obs column -> the values (compared as text) of the cells kept; empty keeps every cell.
    """

    file: str
    filter: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """One task of the config.

    Attributes
    ----------
    name : str
        Letters, digits, ``_`` and ``-``.
    kind : {"cross", "cv"}
        Reference -> query, or stratified cross-validation on the reference.
    reference, query : Side
        The two sides; ``query`` is None for ``cv``.
    label_key : str
        obs column of the cell types in both files.
    label_map_name : str or None
        Name of the label map in the config's ``label_maps``.
    label_map : dict of str to str
        That table (old name -> new name); names not in it are kept.
    unseen : tuple of str
        The query types the reference lacks; `task_splits` checks it against the data.
    folds : int
        Folds of a ``cv`` task.
    seed : int
        Seed of the folds and of the ``--quick`` sampling.
    description : str
        One line for the report.
    genes : {"shared", "reference"}
        Cross tasks: train on the reference genes the query has, or on all the reference's genes.
    """

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
    genes: str = "reference"

    def summary(self) -> dict[str, Any]:
        """The task as plain values for the results file (without the label table)."""
        d = asdict(self)
        d.pop("label_map")
        return d


@dataclass(frozen=True)
class Config:
    """A read task config.

    Attributes
    ----------
    path : Path
        The config file.
    data_dir : Path
        Folder of the data files.
    tasks : dict of str to Task
        The tasks, in the file's order.
    label_maps : dict of str to dict
        The named label tables.
    """

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


def load_config(path: str | os.PathLike = DEFAULT_CONFIG, data_dir: str | os.PathLike | None = None) -> Config:
    """Read and check a task config.

    Parameters
    ----------
    path : path-like
        The JSON config (see ``benchmarks/tasks.json``).
    data_dir : path-like, optional
        Folder of the data files; by default the config's ``data_dir``, relative to the config file.

    Returns
    -------
    Config

    Raises
    ------
    MissingPathError
        The file does not exist.
    CorruptFileError
        The file is not JSON.
    GsrclError
        A task is malformed (name, kind, label map, genes, folds, filter).
    """
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
    """Labels as text, renamed through ``table``.

    Parameters
    ----------
    values : array-like
        Labels (any type; compared as text).
    table : dict of str to str
        Old name -> new name; names not in it are kept.

    Returns
    -------
    numpy.ndarray of object
    """
    return np.asarray([table.get(v, v) for v in map(str, values)], dtype=object)


def load_side(side: Side, task: Task, data_dir: str | os.PathLike):
    """The cells of one side of a task, in memory; the file itself is only read.

    Parameters
    ----------
    side : Side
        The file and its filter.
    task : Task
        The task (its label column and label map; its name for messages).
    data_dir : path-like
        Folder of the data files.

    Returns
    -------
    anndata.AnnData
        The kept cells (obs names made unique), with the mapped truth in ``obs[LABEL]``.

    Raises
    ------
    MissingPathError
        The file does not exist.
    GsrclError
        A filter column is absent, or the filter keeps no cell.
    LabelsError
        The label column is absent.
    """
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


def cap_cells(adata, max_cells: int | None, seed: int):
    """At most ``max_cells`` cells, sampled per type in proportion; every type keeps at least one.

    Parameters
    ----------
    adata : anndata.AnnData
        Cells with their truth in ``obs[LABEL]``.
    max_cells : int or None
        The cap; None keeps every cell.
    seed : int
        Seed of the sampling.

    Returns
    -------
    anndata.AnnData
        ``adata`` itself when it has no more cells than the cap, else a copy of the sample in file order.
    """
    if max_cells is None or adata.n_obs <= max_cells:
        return adata
    rng = np.random.default_rng(seed)
    labels = adata.obs[LABEL].astype(str).to_numpy()
    frac = max_cells / adata.n_obs
    idx = [rng.permutation(np.flatnonzero(labels == c))[: max(1, round(frac * np.sum(labels == c)))]
           for c in sorted(set(labels))]
    return adata[np.sort(np.concatenate(idx))].copy()


def task_splits(task: Task, data_dir: str | os.PathLike, max_cells: int | None = None) -> list[tuple[Any, Any]]:
    """The (reference, query) pairs of a task.

    Parameters
    ----------
    task : Task
    data_dir : path-like
        Folder of the data files.
    max_cells : int, optional
        Cells per side at most (see `cap_cells`; for cross-validation, of the whole dataset).

    Returns
    -------
    list of (anndata.AnnData, anndata.AnnData)
        One pair for ``cross`` (the reference on the shared genes when ``task.genes == "shared"``), one per fold
        for ``cv``.

    Raises
    ------
    GsrclError
        The query types the reference lacks are not the task's ``unseen`` list; and what `load_side` raises.
    """
    ref = cap_cells(load_side(task.reference, task, data_dir), max_cells, task.seed)
    if task.kind == "cv":
        from sklearn.model_selection import StratifiedKFold

        labels = ref.obs[LABEL].astype(str).to_numpy()
        folds = StratifiedKFold(n_splits=task.folds, shuffle=True, random_state=task.seed)
        return [(ref[tr].copy(), ref[te].copy()) for tr, te in folds.split(np.zeros(len(labels)), labels)]
    query = cap_cells(load_side(task.query, task, data_dir), max_cells, task.seed)
    if task.genes == "shared":
        ref = shared_genes(ref, query)
    unseen = sorted(set(query.obs[LABEL].astype(str)) - set(ref.obs[LABEL].astype(str)))
    if set(unseen) != set(task.unseen):
        raise GsrclError(f"task {task.name}: the query types the reference lacks are {unseen or 'none'}, but the "
                         f"config lists unseen {list(task.unseen) or 'none'}: fix 'unseen' or the label map")
    return [(ref, query)]


def shared_genes(ref, query):
    """The reference restricted to the genes the query has.

    Parameters
    ----------
    ref, query : anndata.AnnData

    Returns
    -------
    anndata.AnnData
        ``ref`` itself when the query has all its genes, else a copy on those it has, in the reference's order;
        genes are matched as prediction matches them (``gsrcl.genes.match_genes``).
    """
    from gsrcl.genes import match_genes

    keep = match_genes(query.var, list(map(str, ref.var_names))).ref_to_query >= 0
    return ref if keep.all() else ref[:, keep].copy()
