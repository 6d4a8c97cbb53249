"""The cells table of a finished job, read from its ``annotated.h5ad`` (four columns only), sorted and paged."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("predicted_labels", "conf_score", "unseen_score")
SORTABLE = ("barcode", *COLUMNS)
MAX_PAGE = 500
_CACHE_JOBS = 4

_cache: OrderedDict[tuple[str, float], pd.DataFrame] = OrderedDict()
_lock = threading.Lock()


def _read(path: Path) -> pd.DataFrame:
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        obs = f["obs"]
        index = read_elem(obs[obs.attrs["_index"]])
        data = {"barcode": np.asarray(index, dtype=object).astype(str)}
        for col in COLUMNS:
            if col in obs:
                data[col] = np.asarray(read_elem(obs[col]))
    df = pd.DataFrame(data)
    if "predicted_labels" in df:
        df["predicted_labels"] = df["predicted_labels"].astype(str)
    return df


def table(path: Path) -> pd.DataFrame:
    """The barcodes and `COLUMNS` of ``path``; the last few jobs' tables are kept in memory."""
    key = (str(path), path.stat().st_mtime)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    df = _read(path)
    with _lock:
        _cache[key] = df
        while len(_cache) > _CACHE_JOBS:
            _cache.popitem(last=False)
    return df


def page(df: pd.DataFrame, *, offset: int = 0, limit: int = 50, sort: str = "barcode", descending: bool = False,
         label: str | None = None) -> dict:
    """Rows ``offset`` .. ``offset + limit`` of ``df`` sorted by ``sort`` (one of `SORTABLE`, checked by the
    caller), only cells labelled ``label`` when given; NaN scores last."""
    if label is not None:
        df = df[df["predicted_labels"] == label]
    if sort in df:
        df = df.sort_values(sort, ascending=not descending, kind="stable", na_position="last")
    rows = df.iloc[offset: offset + limit]
    records = []
    for rec in rows.to_dict("records"):
        records.append({k: (None if isinstance(v, float) and not np.isfinite(v) else
                            (float(v) if isinstance(v, (float, np.floating)) else str(v)))
                        for k, v in rec.items()})
    return {"total": int(len(df)), "offset": offset, "limit": limit, "sort": sort, "descending": descending,
            "columns": [c for c in SORTABLE if c in df], "rows": records}
