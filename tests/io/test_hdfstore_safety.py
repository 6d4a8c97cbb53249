"""A pandas HDFStore query is read with h5py alone, never with ``pandas.read_hdf``: PyTables, under pandas,
unpickles attributes and object arrays, so a hostile ``.h5`` could run code. The 'fixed' format's numeric blocks
and byte-string names are read; anything stored pickled (text columns, mixed-type names, the 'table' format's
column names) is refused in one line.

``tests/data/hdfstore/tiny_pandas_fixed.h5`` was written by pandas 3.1.1 with PyTables 3.11.1::

    frame = pd.DataFrame({"CD3E": [1, 0, 2, 5], "MS4A1": [0, 3, 0, 1], "Gène-α": [2, 2, 0, 0]},
                         index=["cell1", "cell2", "cell3", "cell4"], dtype=np.float32)
    frame["LYZ"] = np.array([7, 0, 1, 0], dtype=np.int64)  # a second block, of integers
    frame.to_hdf("tiny_pandas_fixed.h5", key="counts", format="fixed")

The other files are written here with h5py in the layout PyTables gives them (checked against files it wrote).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from gsrcl import errors as E
from gsrcl.io import read_query

STORE = Path(__file__).parent.parent / "data" / "hdfstore" / "tiny_pandas_fixed.h5"
NONE_PICKLED = np.bytes_(b"N.")  # how PyTables stores an attribute of None (an index without a name): pickled


class _Touch:
    """Unpickling this creates ``path``: a stand-in for code a hostile file would run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _attrs(node, **attrs) -> None:
    """Attributes as PyTables writes them: a str as a fixed-length UTF-8 string, anything else as it is (a
    pickle, `NONE_PICKLED`, as bytes)."""
    for key, value in attrs.items():
        if isinstance(value, str):
            node.attrs.create(key, np.bytes_(value.encode()), dtype=h5py.string_dtype("utf-8", len(value.encode())))
        else:
            node.attrs[key] = value


def _array(g: h5py.Group, key: str, data, **attrs) -> h5py.Dataset:
    ds = g.create_dataset(key, data=data)
    _attrs(ds, CLASS="ARRAY", FLAVOR="numpy", VERSION="2.4", transposed=np.uint8(1), **attrs)
    return ds


def _names(g: h5py.Group, key: str, names: list[str]) -> None:
    _array(g, key, np.asarray([n.encode() for n in names]), kind="string", name=NONE_PICKLED)


def _pickled(g: h5py.Group, key: str, obj, **attrs) -> None:
    """A PyTables VLArray of ObjectAtom: each row a pickle, as pandas stores object arrays in 'fixed' format."""
    ds = g.create_dataset(key, (1,), dtype=h5py.vlen_dtype(np.uint8))
    ds[0] = np.frombuffer(pickle.dumps(obj, protocol=2), dtype=np.uint8)
    _attrs(ds, CLASS="VLARRAY", PSEUDOATOM="object", VERSION="1.4", transposed=np.uint8(1), **attrs)


def _frame_group(f: h5py.File, key: str, nblocks: int) -> h5py.Group:
    g = f.create_group(key)
    _attrs(g, CLASS="GROUP", VERSION="1.0", pandas_type="frame", encoding="UTF-8", errors="strict",
           ndim=np.int64(2), nblocks=np.int64(nblocks), axis0_variety="regular", axis1_variety="regular",
           **{f"block{i}_items_variety": "regular" for i in range(nblocks)})
    return g


def test_hdfstore_fixed_format_is_read_without_pandas_reader(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pandas.read_hdf was called on a user's file")

    monkeypatch.setattr(pd, "read_hdf", refuse)
    monkeypatch.setattr(pd, "HDFStore", refuse)
    adata = read_query(STORE)
    assert list(adata.obs_names) == ["cell1", "cell2", "cell3", "cell4"]
    assert list(adata.var_names) == ["CD3E", "MS4A1", "Gène-α", "LYZ"]
    expected = np.array([[1, 0, 2, 7], [0, 3, 2, 0], [2, 0, 0, 1], [5, 1, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(adata.X.toarray(), expected)
    t = read_query(STORE, transpose=True)  # genes x cells read as such with -t
    assert list(t.obs_names) == ["CD3E", "MS4A1", "Gène-α", "LYZ"]
    np.testing.assert_array_equal(t.X.toarray(), expected.T)


def test_hdfstore_blocks_are_placed_by_column_name(tmp_path):
    path = tmp_path / "blocks.h5"
    with h5py.File(path, "w") as f:
        g = _frame_group(f, "df", 2)
        _names(g, "axis0", ["A", "B", "C"])
        _names(g, "axis1", ["c1", "c2"])
        _names(g, "block0_items", ["C", "A"])  # a block's columns need not be in the frame's order
        _array(g, "block0_values", np.array([[3, 1], [30, 10]], dtype=np.float64))
        _names(g, "block1_items", ["B"])
        _array(g, "block1_values", np.array([[2], [20]], dtype=np.int64))
    adata = read_query(path)
    assert list(adata.var_names) == ["A", "B", "C"]
    np.testing.assert_array_equal(adata.X.toarray(), [[1, 2, 3], [10, 20, 30]])


def test_hdfstore_text_column_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "object.h5"
    with h5py.File(path, "w") as f:
        g = _frame_group(f, "df", 2)
        _names(g, "axis0", ["GeneA", "note"])
        _names(g, "axis1", ["c1", "c2"])
        _names(g, "block0_items", ["GeneA"])
        _array(g, "block0_values", np.ones((2, 1), dtype=np.float32))
        _names(g, "block1_items", ["note"])
        _pickled(g, "block1_values", _Touch(marker), value_type="str")
    with pytest.raises(E.LayoutError) as e:
        read_query(path)
    msg = e.value.message
    assert "'note'" in msg and "pickled" in msg and "\n" not in msg
    assert not marker.exists()


def test_hdfstore_pickled_names_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "names.h5"
    with h5py.File(path, "w") as f:
        g = _frame_group(f, "df", 1)
        _names(g, "axis0", ["GeneA", "GeneB"])
        _pickled(g, "axis1", _Touch(marker), kind="object")  # mixed-type row names
        _names(g, "block0_items", ["GeneA", "GeneB"])
        _array(g, "block0_values", np.ones((1, 2), dtype=np.float32))
    with pytest.raises(E.LayoutError) as e:
        read_query(path)
    assert "row names" in e.value.message and "pickled" in e.value.message
    assert not marker.exists()


def test_hdfstore_table_format_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "table.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("df")
        _attrs(g, pandas_type="frame_table")
        g.attrs["non_index_axes"] = np.bytes_(pickle.dumps(_Touch(marker), protocol=0))  # pickled, as PyTables does
        g.create_dataset("table", data=np.zeros(2, dtype=[("index", "S2"), ("values_block_0", "<f4", (3,))]))
    with pytest.raises(E.LayoutError) as e:
        read_query(path)
    assert "'table' format" in e.value.message and "format='fixed'" in e.value.message
    assert "\n" not in e.value.message and not marker.exists()


def test_hdfstore_series_and_dates_are_refused(tmp_path):
    series = tmp_path / "series.h5"
    with h5py.File(series, "w") as f:
        g = f.create_group("s")
        _attrs(g, pandas_type="series")
        _names(g, "index", ["c1", "c2"])
        _array(g, "values", np.ones(2))
    assert "holds a series" in pytest.raises(E.LayoutError, read_query, series).value.message
    dates = tmp_path / "dates.h5"
    with h5py.File(dates, "w") as f:
        g = _frame_group(f, "df", 1)
        _names(g, "axis0", ["when"])
        _names(g, "axis1", ["c1", "c2"])
        _names(g, "block0_items", ["when"])
        _array(g, "block0_values", np.ones((2, 1), dtype=np.int64), value_type="datetime64")
    assert "datetime64" in pytest.raises(E.ValuesError, read_query, dates).value.message
