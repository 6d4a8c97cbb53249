"""pandas HDFStore files, read with h5py alone: nothing stored pickled is ever read.

pandas reads an HDFStore through PyTables, which unpickles attributes and object arrays, so a hostile file could
run code. The 'fixed' format of a DataFrame needs none of them (see `read_hdfstore`); anything else is refused.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

from ..errors import LayoutError, ValuesError
from .hdf5 import Context, attr_text


# --- pandas HDFStore, read with h5py only ---------------------------------------------------------------------
# pandas reads an HDFStore through PyTables, which unpickles attributes (pandas stores some pickled, e.g. an
# index's name, and all of the 'table' format's column names) and object arrays: a hostile file could run code.
# The 'fixed' format of a DataFrame needs none of them: each block of same-typed columns is a plain dataset
# ``block{i}_values`` (rows x columns, attribute ``transposed``), and the column names, the row names and each
# block's column names (``axis0``, ``axis1``, ``block{i}_items``) are datasets of fixed-length byte strings (or
# numbers). That is what is read here; anything stored pickled is refused, never read.
_PICKLED = "stored as pickled Python objects, which gsrcl never reads (unpickling a file can run code)"
_RESAVE = ("save the table again with string row and column names and numbers only (e.g. "
           "anndata.AnnData(frame).write_h5ad), or pass key paths with -mat/-obs/-var")


def _pickled(node) -> bool:
    """Whether a PyTables node holds pickled objects (a VLArray of ObjectAtom) or other variable-length data."""
    return (attr_text(node, "CLASS") == "VLARRAY" or attr_text(node, "PSEUDOATOM") is not None
            or node.dtype.kind == "O" or h5py.check_vlen_dtype(node.dtype) is not None)


def _store_names(ctx: Context, g: h5py.Group, key: str, what: str, encoding: str) -> np.ndarray:
    """The names an HDFStore keeps in dataset ``key`` of group ``g``: str (object array), or the numbers as they
    are (`reader` refuses them with its NamesError)."""
    node = g.get(key)
    if not isinstance(node, h5py.Dataset) or node.ndim != 1:
        raise ctx.fail(LayoutError, f"the HDFStore lacks its {what} ('{g.name}/{key}'): {_RESAVE}")
    if _pickled(node):
        raise ctx.fail(LayoutError, f"the HDFStore's {what} are {_PICKLED}: {_RESAVE}")
    if node.dtype.kind == "S":
        return np.asarray([b.decode(encoding, errors="replace") for b in node[()]], dtype=object)
    if node.dtype.kind in "iuf":
        return node[()]
    raise ctx.fail(LayoutError, f"the HDFStore's {what} are of type {node.dtype}, not names: {_RESAVE}")


def read_hdfstore(ctx: Context) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row names, column names, values rows x columns) of a pandas HDFStore DataFrame in 'fixed' format (the
    file's one top-level group), read with h5py alone: nothing is unpickled.

    Raises
    ------
    LayoutError
        For the 'table' format, a Series or anything but a DataFrame, a MultiIndex, or names or columns stored
        pickled (text columns, mixed-type names): the message says how to save the table instead.
    ValuesError
        For columns of true/false values or dates instead of numbers.
    """
    (key,) = list(ctx.f.keys())
    g = ctx.f[key]
    kind = attr_text(g, "pandas_type")
    if kind == "frame_table":
        raise ctx.fail(LayoutError, "the pandas HDFStore is in 'table' format, whose column names pandas stores "
                                    f"pickled, which gsrcl never reads (unpickling a file can run code): save it in "
                                    f"'fixed' format (DataFrame.to_hdf(path, key='{key}', format='fixed')) or "
                                    "as h5ad or CSV, or pass key paths with -mat/-obs/-var")
    if kind != "frame":
        raise ctx.fail(LayoutError, f"the pandas HDFStore holds a {kind or 'pandas object'}, not a table of cells x "
                                    "genes (a DataFrame): save the table itself")
    if any(attr_text(g, f"axis{i}_variety") not in (None, "regular") for i in (0, 1)):
        raise ctx.fail(LayoutError, f"the HDFStore's rows or columns have several levels (a MultiIndex): {_RESAVE}")
    encoding = str(attr_text(g, "encoding") or "UTF-8")
    try:
        "".encode(encoding)
    except LookupError:
        encoding = "UTF-8"
    cols = _store_names(ctx, g, "axis0", "column names", encoding)
    rows = _store_names(ctx, g, "axis1", "row names", encoding)
    nblocks = g.attrs.get("nblocks")
    if not isinstance(nblocks, (int, np.integer)) or isinstance(nblocks, (bool, np.bool_)) or nblocks < 1:
        raise ctx.fail(LayoutError, f"the HDFStore's attribute 'nblocks' is {nblocks!r}, not a count of blocks: "
                                    f"{_RESAVE}")
    index = pd.Index(cols)
    values = np.empty((len(rows), len(cols)), dtype=np.float32)
    filled = np.zeros(len(cols), dtype=bool)
    for i in range(int(nblocks)):
        items = _store_names(ctx, g, f"block{i}_items", f"names of the columns of block {i}", encoding)
        node = g.get(f"block{i}_values")
        shown = ", ".join(map(repr, map(str, items[:3])))
        if not isinstance(node, h5py.Dataset):
            raise ctx.fail(LayoutError, f"the HDFStore lacks the values of column(s) {shown}: {_RESAVE}")
        if _pickled(node):
            raise ctx.fail(LayoutError, f"the HDFStore's column(s) {shown} hold text or other Python objects, "
                                        f"{_PICKLED}: keep only the numeric columns (the genes) and {_RESAVE}")
        if node.attrs.get("value_type") is not None or node.dtype.kind not in "iufb":
            what = attr_text(node, "value_type") or str(node.dtype)
            raise ValuesError(f"{ctx.path}: the HDFStore's column(s) {shown} hold {what} values, not numbers: "
                              "keep only the numeric columns (the genes)")
        if node.dtype.kind == "b":
            raise ValuesError(f"{ctx.path}: the HDFStore's column(s) {shown} hold true/false values, not numbers: "
                              "keep only the numeric columns (the genes)")
        shape = (len(rows), len(items)) if node.attrs.get("transposed", True) else (len(items), len(rows))
        if len(items) == len(cols) and (items == cols).all():
            pos = np.arange(len(cols))  # one block of all columns (repeated names are refused later, by name)
        elif index.is_unique:
            pos = index.get_indexer(items)
        else:
            raise ctx.fail(LayoutError, f"the HDFStore's column names repeat across its blocks: {_RESAVE}")
        if node.ndim != 2 or node.shape != shape or (pos < 0).any() or filled[pos].any() \
                or len(set(pos.tolist())) != len(pos):
            raise ctx.fail(LayoutError, f"the HDFStore's block {i} does not fit its {len(rows)} rows and "
                                        f"{len(cols)} columns: {_RESAVE}")
        block = node[()]
        values[:, pos] = block if node.attrs.get("transposed", True) else block.T
        filled[pos] = True
    if not filled.all():
        raise ctx.fail(LayoutError, f"the HDFStore holds no values for {int((~filled).sum())} of its columns: "
                                    f"{_RESAVE}")
    return rows, cols, values
