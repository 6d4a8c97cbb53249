"""ASCII tree of an HDF5 file, printed after layout and key errors so the user can pick key paths."""

from __future__ import annotations

import os

import h5py
import numpy as np

from .sniff import open_h5

# Attributes worth showing: they decide how a group is read.
SHOWN_ATTRS = ("encoding-type", "shape", "h5sparse_format", "h5sparse_shape", "_index", "pandas_type")
MAX_CHILDREN = 30


def _attr_text(obj) -> str:
    parts = []
    for name in SHOWN_ATTRS:
        if name in obj.attrs:
            value = obj.attrs[name]
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            elif isinstance(value, np.ndarray):
                value = tuple(value.tolist())
            parts.append(f"{name}={value}")
    return f"  {{{', '.join(parts)}}}" if parts else ""


def _dtype_text(ds: h5py.Dataset) -> str:
    info = h5py.check_string_dtype(ds.dtype)
    if info is not None:
        return "str" if info.length is None else f"str{info.length}"
    return str(ds.dtype)


def _lines(group: h5py.Group, prefix: str) -> list[str]:
    names = list(group.keys())
    shown = names[:MAX_CHILDREN]
    out = []
    for i, name in enumerate(shown):
        last = i == len(shown) - 1 and len(names) <= MAX_CHILDREN
        branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
        try:
            child = group[name]
        except (KeyError, OSError):  # a dangling soft or external link
            out.append(f"{prefix}{branch}{name}  (broken link)")
            continue
        if isinstance(child, h5py.Group):
            out.append(f"{prefix}{branch}{name}/{_attr_text(child)}")
            out.extend(_lines(child, prefix + indent))
        elif isinstance(child, h5py.Dataset):
            out.append(f"{prefix}{branch}{name}  {child.shape} {_dtype_text(child)}{_attr_text(child)}")
        else:
            out.append(f"{prefix}{branch}{name}  ({type(child).__name__})")
    if len(names) > MAX_CHILDREN:
        out.append(f"{prefix}└── ... {len(names) - MAX_CHILDREN} more")
    return out


def tree_of(f: h5py.File, label: str) -> str:
    """The tree of an open file, first line ``label``."""
    return "\n".join([f"{label}{_attr_text(f)}", *_lines(f, "")])


def format_tree(path: str | os.PathLike) -> str:
    """ASCII tree of the HDF5 file at ``path``: groups nested with ├──/└──/│, datasets with shape and dtype,
    and the attributes that decide how a group is read (encoding-type, shape, _index)."""
    with open_h5(path) as f:
        return tree_of(f, f"{os.fspath(path)} (HDF5)")
