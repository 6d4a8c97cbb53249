"""HDF5 layouts: AnnData h5ad, 10x Cell Ranger v2/v3, loom, scziDesk, pandas HDFStore, and any tree via key paths.

Each parser returns a `Parsed`: the stored matrix, the names along its two axes, and which axis holds the
cells in that layout (10x and loom store genes x cells). `reader.finish` then applies ``transpose`` and the
checks shared by all formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from ..errors import (BarcodeKeyError, BarcodesError, CorruptFileError, EmptyFileError, GeneKeyError, GeneNamesError, LayoutError,
                      MatrixError, MatrixKeyError, NamesError, ShapeMismatchError, ValuesError)
from .names import ENSEMBL, KEPT_COLUMNS, fraction
from .tree import tree_of

MATRIX_DEFAULTS = (("exprs",), ("matrix",), ("X",))
OBS_DEFAULTS = (("obs_names",), ("barcodes",), ("obs", "barcode"), ("obs",))
VAR_DEFAULTS = (("var_names",), ("features",), ("var",))
FLAGS = {"mat": "-mat", "obs": "-obs", "var": "-var"}


@dataclass
class Matrix:
    """A stored matrix: ``kind`` is dense, csr, csc or compressed (orientation not recorded in the file)."""

    key: str
    kind: str
    shape: tuple[int, int] | None
    indptr: np.ndarray | None = None


@dataclass
class Parsed:
    fmt: str
    matrix: Matrix
    row_names: np.ndarray  # names along stored axis 0
    col_names: np.ndarray  # names along stored axis 1
    cell_axis: int  # the stored axis holding cells in this layout
    origin: dict
    dup_hint: str
    gene_columns: dict = field(default_factory=dict)  # extra per-gene columns, aligned with the gene axis
    gene_ids: np.ndarray | None = None
    gene_symbols: np.ndarray | None = None
    gene_keep: np.ndarray | None = None  # gene positions to keep (10x: Gene Expression only)
    cell_columns: Callable[[h5py.File], pd.DataFrame] | None = None  # the file's per-cell table, if any


class Context:
    """The open file and what error messages need: its path and (lazily) its tree."""

    def __init__(self, f: h5py.File, path: Path):
        self.f, self.path = f, path
        self._tree = None

    @property
    def tree(self) -> str:
        if self._tree is None:
            self._tree = tree_of(self.f, f"{self.path} (HDF5)")
        return self._tree

    def fail(self, cls, message: str):
        return cls(f"{self.path}: {message}", detail=self.tree)


def attr_text(obj, name: str):
    """An HDF5 attribute, bytes decoded to text (None when absent)."""
    value = obj.attrs.get(name)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value


def key_text(keys) -> str:
    return " ".join(keys)


def normalise_keys(ctx: Context, keys, which: str):
    """A key path as a list of 1-3 keys (a 'a/b' string is split)."""
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        keys = [k for k in str(keys).split("/") if k]
    keys = [str(k) for k in keys]
    if not 1 <= len(keys) <= 3:
        cls = {"mat": MatrixKeyError, "obs": BarcodeKeyError, "var": GeneKeyError}[which]
        raise ctx.fail(cls, f"{FLAGS[which]} takes 1 to 3 keys, got {len(keys)} ({key_text(keys) or 'none'})")
    return keys


def walk(f: h5py.Group, keys) -> h5py.HLObject | None:
    node = f
    for key in keys:
        try:
            if not isinstance(node, h5py.Group) or key not in node:
                return None
            node = node[key]
        except (KeyError, OSError):  # broken link
            return None
    return node


def _missing_part(f: h5py.Group, keys) -> str:
    node, seen = f, []
    for key in keys:
        if not isinstance(node, h5py.Group) or key not in node:
            where = "/".join(seen) or "the file root"
            return f"no '{key}' under {where}"
        node = node[key]
        seen.append(key)
    return "not found"


def read_names(ctx: Context, node, where: str) -> np.ndarray | None:
    """Strings stored at ``node`` (a string dataset, a categorical, or a dataframe group's index), or None
    when the node holds no names. Numbers instead of names raise NamesError."""
    if isinstance(node, h5py.Group):
        enc = attr_text(node, "encoding-type")
        if enc in ("categorical", "string-array", "nullable-string-array"):
            values = ad.io.read_elem(node)
            return np.asarray(np.asarray(values).astype(str), dtype=object)
        index = attr_text(node, "_index")
        if index is not None and index in node:
            return read_names(ctx, node[index], f"{where}/{index}")
        return None
    if not isinstance(node, h5py.Dataset) or node.ndim not in (1, 2):
        return None
    if node.ndim == 2 and 1 not in node.shape:
        return None
    if h5py.check_string_dtype(node.dtype) is not None:
        values = node.asstr(errors="replace")[()]
        return np.asarray(values, dtype=object).ravel()
    if node.dtype.kind in "iufb":
        raise ctx.fail(NamesError, f"'{where}' holds numbers ({node.dtype}), not names: point the key at string names")
    return None


def describe_matrix(ctx: Context, node, key: str) -> Matrix | None:
    if isinstance(node, h5py.Dataset):
        if node.ndim == 2 and node.dtype.kind in "iufb":
            return Matrix(key, "dense", tuple(int(n) for n in node.shape))
        return None
    if not isinstance(node, h5py.Group) or not all(k in node for k in ("data", "indices", "indptr")):
        return None
    enc = str(attr_text(node, "encoding-type") or attr_text(node, "h5sparse_format") or "")
    kind = {"csr_matrix": "csr", "csr": "csr", "csc_matrix": "csc", "csc": "csc"}.get(enc, "compressed")
    shape = node.attrs.get("shape", node.attrs.get("h5sparse_shape"))
    if shape is None and isinstance(node.get("shape"), h5py.Dataset):
        shape = node["shape"][()]
    if shape is not None:
        shape = tuple(int(n) for n in np.asarray(shape).ravel())
        if len(shape) != 2:
            raise ctx.fail(CorruptFileError, f"the shape of '{key}' is {shape}, not two numbers: the file is corrupt")
    indptr = np.asarray(node["indptr"][()], dtype=np.int64).ravel()
    n_values = node["data"].shape[0] if node["data"].ndim == 1 else -1
    if (len(indptr) == 0 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] > n_values
            or node["indices"].shape != node["data"].shape):
        raise ctx.fail(CorruptFileError, f"'{key}' is not a consistent compressed matrix (data/indices/indptr): the file is corrupt")
    if node["data"].dtype.kind not in "iufb":
        raise ctx.fail(MatrixKeyError, f"'{key}/data' holds {node['data'].dtype}, not numbers")
    return Matrix(key, kind, shape, indptr)


def orient(ctx: Context, m: Matrix, n_rows: int, n_cols: int) -> Matrix:
    """Give a compressed matrix its kind (csr/csc) and full shape; the shape is read, never inferred from the
    indices (a 10x matrix whose last genes are all zero keeps them)."""
    if m.kind == "dense":
        return m
    n = len(m.indptr) - 1
    kind = m.kind
    if kind == "compressed":
        if n == n_rows:
            kind = "csr"
        elif n == n_cols:
            kind = "csc"
        else:
            raise ctx.fail(ShapeMismatchError,
                           f"the compressed matrix '{m.key}' has {n} rows or columns (len(indptr) - 1) but there are"
                           f" {n_rows} row names and {n_cols} column names: point -obs/-var at names of matching length")
    if m.shape is not None:
        shape = m.shape
        if kind != m.kind:  # the file's shape names no orientation: the axis that is not len(indptr)-1 is the other
            if n not in shape:
                raise ctx.fail(CorruptFileError, f"'{m.key}' has shape {shape} but len(indptr) - 1 = {n}: the file is corrupt")
            other = shape[1] if shape[0] == n else shape[0]
            shape = (n, other) if kind == "csr" else (other, n)
    else:
        shape = (n, n_cols) if kind == "csr" else (n_rows, n)
    if (kind == "csr" and shape[0] != n) or (kind == "csc" and shape[1] != n):
        raise ctx.fail(CorruptFileError, f"'{m.key}' has shape {shape} but len(indptr) - 1 = {n}: the file is corrupt")
    return Matrix(m.key, kind, shape, m.indptr)


def check_shape(ctx: Context, m: Matrix, rows, cols, rows_from: str, cols_from: str, hint: str | None = None) -> None:
    r, c = m.shape
    if r == len(rows) and c == len(cols):
        return
    if hint is None:
        hint = "swap -obs and -var" if (r == len(cols) and c == len(rows)) else "point -obs/-var at names that match"
        hint += "; pass -t if the rows are genes"
    raise ctx.fail(ShapeMismatchError,
                   f"the matrix '{m.key}' is {r} x {c} but there are {len(rows)} row names ({rows_from}) and"
                   f" {len(cols)} column names ({cols_from}): {hint}")


def resolve_names(ctx: Context, keys, defaults, which: str, *, required: bool = True):
    """(names, 'a/b') from the user's key path, or the first default that holds names."""
    user_cls, default_cls = {"obs": (BarcodeKeyError, BarcodesError), "var": (GeneKeyError, GeneNamesError)}[which]
    what = "cell barcodes" if which == "obs" else "gene names"
    if keys is not None:
        node = walk(ctx.f, keys)
        if node is None:
            raise ctx.fail(user_cls, f"{FLAGS[which]} {key_text(keys)} does not resolve ({_missing_part(ctx.f, keys)})")
        names = read_names(ctx, node, "/".join(keys))
        if names is None:
            raise ctx.fail(user_cls, f"{FLAGS[which]} {key_text(keys)} is not a list of names"
                                     " (a 1-D string dataset, a categorical or a dataframe group)")
        return names, "/".join(keys)
    for cand in defaults:
        node = walk(ctx.f, cand)
        if node is not None:
            names = read_names(ctx, node, "/".join(cand))
            if names is not None:
                return names, "/".join(cand)
    if not required:
        return None, None
    tried = ", ".join("/".join(c) for c in defaults)
    raise ctx.fail(default_cls, f"no {what} at the default keys ({tried}): pass {FLAGS[which]} KEY [KEY ...]")


def _columns(ctx: Context, group, skip: str | None) -> dict:
    out = {}
    if not isinstance(group, h5py.Group):
        return out
    for key in KEPT_COLUMNS:
        if key in group and key != skip:
            try:
                values = read_names(ctx, group[key], f"{group.name}/{key}")
            except NamesError:
                continue
            if values is not None:
                out[key] = values
    return out


def _override_columns(columns: dict, old_index: np.ndarray, new_index: np.ndarray) -> None:
    """When -var replaces the default gene names, keep the default ones as the id or symbol column."""
    if np.array_equal(old_index, new_index):
        return
    key = "gene_ids" if fraction(ENSEMBL, old_index) >= 0.5 else "gene_symbols"
    columns.setdefault(key, old_index)


def _vectors(group, n: int, skip: str | None) -> pd.DataFrame:
    """1-D datasets of length ``n`` in ``group`` as a table (strings decoded)."""
    columns = {}
    for key, node in group.items():
        if key == skip or not isinstance(node, h5py.Dataset) or node.shape != (n,):
            continue
        if h5py.check_string_dtype(node.dtype) is not None:
            columns[key] = np.asarray(node.asstr(errors="replace")[()], dtype=object)
        elif node.dtype.kind in "iufb":
            columns[key] = node[()]
    return pd.DataFrame(columns)


def _h5ad_obs(f: h5py.File) -> pd.DataFrame:
    return ad.io.read_elem(f["obs"])


# --- layouts -------------------------------------------------------------------------------------------------

def is_h5ad(f: h5py.File) -> bool:
    return attr_text(f, "encoding-type") == "anndata" or (
        all(isinstance(f.get(k), h5py.Group) for k in ("obs", "var")) and "X" in f)


def parse_h5ad(ctx: Context, obs, var, layer, use_raw) -> Parsed:
    f = ctx.f
    if use_raw and layer:
        raise ctx.fail(MatrixKeyError, "--layer and --use-raw cannot be combined (.raw holds no layers)")
    var_group = f.get("var")
    if use_raw:
        if not isinstance(f.get("raw"), h5py.Group) or "X" not in f["raw"]:
            raise ctx.fail(MatrixKeyError, "the file has no .raw/X: drop --use-raw")
        xkey, var_group = "raw/X", f["raw"].get("var")
    elif layer:
        layers = list(f["layers"].keys()) if isinstance(f.get("layers"), h5py.Group) else []
        if layer not in layers:
            raise ctx.fail(MatrixKeyError, f"the file has no layer {layer!r} (layers: {', '.join(layers) or 'none'})")
        xkey = f"layers/{layer}"
    else:
        if "X" not in f:
            layers = list(f["layers"].keys()) if isinstance(f.get("layers"), h5py.Group) else []
            raise ctx.fail(MatrixError, f"the file has no X: pick a layer with --layer NAME (layers: {', '.join(layers) or 'none'})")
        xkey = "X"
    m = describe_matrix(ctx, f[xkey], xkey)
    if m is None:
        raise ctx.fail(MatrixError, f"'{xkey}' is neither a dense matrix nor a CSR/CSC group")
    obs_names, obs_from = resolve_names(ctx, obs, (("obs",),), "obs")
    var_base = "raw/var" if use_raw else "var"
    default_var, _ = resolve_names(ctx, None, ((var_base,),), "var")
    index_key = attr_text(var_group, "_index") if var_group is not None else None
    columns = _columns(ctx, var_group, index_key)
    if var is not None:
        var_names, var_from = resolve_names(ctx, var, (), "var")
        _override_columns(columns, default_var, var_names)
    else:
        var_names, var_from = default_var, f"{var_base}/{index_key}"
    m = orient(ctx, m, len(obs_names), len(var_names))
    check_shape(ctx, m, obs_names, var_names, obs_from, var_from)
    ids_note = "; or use the ids: -var var gene_ids" if "gene_ids" in columns and var is None else ""
    return Parsed("h5ad", m, obs_names, var_names, 0, {"matrix": xkey, "obs": obs_from, "var": var_from},
                  f"make them unique (anndata var_names_make_unique){ids_note}", gene_columns=columns,
                  cell_columns=_h5ad_obs if obs is None else None)


def tenx_group(node) -> str | None:
    """'v3' or 'v2' when ``node`` is a 10x Cell Ranger matrix group."""
    if not isinstance(node, h5py.Group) or not all(k in node for k in ("data", "indices", "indptr", "shape", "barcodes")):
        return None
    if isinstance(node.get("features"), h5py.Group) and "id" in node["features"]:
        return "v3"
    if "genes" in node:
        return "v2"
    return None


def find_10x(f: h5py.File) -> tuple[str, str] | None:
    if tenx_group(f.get("matrix")) == "v3":
        return "matrix", "v3"
    v2 = [k for k in f.keys() if tenx_group(f.get(k)) == "v2"]
    if len(v2) > 1:
        return ",".join(v2), "v2-many"
    return (v2[0], "v2") if v2 else None


def parse_10x(ctx: Context, gkey: str, version: str, obs, var) -> Parsed:
    g = ctx.f[gkey]
    shape = tuple(int(n) for n in np.asarray(g["shape"][()]).ravel())
    if len(shape) != 2:
        raise ctx.fail(CorruptFileError, f"'{gkey}/shape' is {shape}, not two numbers: the file is corrupt")
    n_genes, n_cells = shape
    m = describe_matrix(ctx, g, gkey)
    m = Matrix(gkey, "csc", shape, m.indptr)  # 10x: CSC genes x cells, i.e. CSR cells x genes
    if len(m.indptr) - 1 != n_cells:
        raise ctx.fail(CorruptFileError, f"'{gkey}/indptr' has {len(m.indptr)} entries for {n_cells} cells: the file is corrupt")
    barcodes, obs_from = resolve_names(ctx, obs, ((gkey, "barcodes"),), "obs")
    if version == "v3":
        id_key, name_key, hint_key = (gkey, "features", "id"), (gkey, "features", "name"), f"{gkey} features id"
    else:
        id_key, name_key, hint_key = (gkey, "genes"), (gkey, "gene_names"), f"{gkey} genes"
    ids = read_names(ctx, walk(ctx.f, id_key), "/".join(id_key))
    names = read_names(ctx, walk(ctx.f, name_key), "/".join(name_key)) if walk(ctx.f, name_key) is not None else None
    if var is not None:
        genes, var_from = resolve_names(ctx, var, (), "var")
    elif names is not None:
        genes, var_from = names, "/".join(name_key)
    else:
        genes, var_from = ids, "/".join(id_key)
    check_shape(ctx, m, genes, barcodes, var_from, obs_from,
                hint="the 10x file stores genes x cells: its shape must match its features and barcodes"
                     " (with -obs/-var, point them at names of matching length)")
    keep, columns = None, {}
    ftype_node = walk(ctx.f, (gkey, "features", "feature_type"))
    if version == "v3" and ftype_node is not None:
        ftype = read_names(ctx, ftype_node, f"{gkey}/features/feature_type")
        if ftype is not None and len(ftype) == n_genes:
            columns["feature_types"] = ftype
            gex = ftype == "Gene Expression"
            if not gex.any():
                raise ctx.fail(ValuesError, f"no 'Gene Expression' features (types: {', '.join(sorted(set(ftype)))[:200]})")
            if not gex.all():
                keep = np.flatnonzero(gex)
    same_len = lambda a: a if a is not None and len(a) == n_genes else None  # noqa: E731
    return Parsed(f"10x-h5-{version}", m, genes, barcodes, 1, {"matrix": gkey, "obs": obs_from, "var": var_from},
                  f"use the unique gene ids instead: -var {hint_key}", gene_columns=columns,
                  gene_ids=same_len(ids), gene_symbols=same_len(names), gene_keep=keep)


def is_loom(f: h5py.File) -> bool:
    return (isinstance(f.get("matrix"), h5py.Dataset) and isinstance(f.get("row_attrs"), h5py.Group)
            and isinstance(f.get("col_attrs"), h5py.Group))


def parse_loom(ctx: Context, obs, var, layer) -> Parsed:
    f = ctx.f
    if layer:
        layers = list(f["layers"].keys()) if isinstance(f.get("layers"), h5py.Group) else []
        if layer not in layers:
            raise ctx.fail(MatrixKeyError, f"the file has no layer {layer!r} (layers: {', '.join(layers) or 'none'})")
        key = f"layers/{layer}"
    else:
        key = "matrix"
    m = describe_matrix(ctx, f[key], key)
    if m is None or m.kind != "dense":
        raise ctx.fail(MatrixError, f"'{key}' is not a 2-D numeric dataset")
    genes, var_from = resolve_names(ctx, var, (("row_attrs", "Gene"), ("row_attrs", "var_names"), ("row_attrs", "gene")), "var")
    cells, obs_from = resolve_names(ctx, obs, (("col_attrs", "CellID"), ("col_attrs", "obs_names"), ("col_attrs", "cell_names")), "obs")
    check_shape(ctx, m, genes, cells, var_from, obs_from)
    columns = _columns(ctx, f["row_attrs"], None)
    hint = "use the ids: -var row_attrs Accession" if "Accession" in columns else "make the gene names unique"
    skip = obs_from.split("/", 1)[1] if obs_from.startswith("col_attrs/") else None
    return Parsed("loom", m, genes, cells, 1, {"matrix": key, "obs": obs_from, "var": var_from}, hint,
                  gene_columns=columns, cell_columns=lambda f: _vectors(f["col_attrs"], len(cells), skip))


def is_sczidesk(f: h5py.File) -> bool:
    return "exprs" in f and "obs_names" in f and "var_names" in f


def parse_generic(ctx: Context, mat, obs, var, *, fmt: str = "hdf5", layout_error: bool = False) -> Parsed:
    """Rows = obs names, columns = var names; the matrix at ``mat`` or the first default key."""
    f = ctx.f
    if mat is not None:
        node = walk(f, mat)
        if node is None:
            raise ctx.fail(MatrixKeyError, f"-mat {key_text(mat)} does not resolve ({_missing_part(f, mat)})")
        m = describe_matrix(ctx, node, "/".join(mat))
        if m is None:
            raise ctx.fail(MatrixKeyError, f"-mat {key_text(mat)} is not a matrix (a 2-D numeric dataset or a group"
                                           " with data/indices/indptr)")
    else:
        m = None
        for cand in MATRIX_DEFAULTS:
            node = walk(f, cand)
            m = describe_matrix(ctx, node, "/".join(cand)) if node is not None else None
            if m is not None:
                break
    try:
        if m is None:
            raise ctx.fail(MatrixError, "no matrix at the default keys (exprs, matrix, X): pass -mat KEY [KEY ...]")
        obs_names, obs_from = resolve_names(ctx, obs, OBS_DEFAULTS, "obs")
        var_names, var_from = resolve_names(ctx, var, VAR_DEFAULTS, "var")
    except (MatrixError, BarcodesError, GeneNamesError) as exc:
        if layout_error:
            raise layout_failure(ctx) from None
        raise exc
    m = orient(ctx, m, len(obs_names), len(var_names))
    check_shape(ctx, m, obs_names, var_names, obs_from, var_from)
    columns, cell_columns = {}, None
    if fmt == "sczidesk-h5":
        columns = _columns(ctx, f.get("var"), None)
        if isinstance(f.get("obs"), h5py.Group):
            cell_columns = lambda f: _vectors(f["obs"], len(obs_names), None)  # noqa: E731
    return Parsed(fmt, m, obs_names, var_names, 0, {"matrix": m.key, "obs": obs_from, "var": var_from},
                  "point -var at unique gene names (ids, for example)", gene_columns=columns,
                  cell_columns=cell_columns)


def layout_failure(ctx: Context) -> LayoutError:
    """LayoutError naming the flags to pass, with candidates found in the tree."""
    matrices, names = [], []

    def visit(name, node):
        if isinstance(node, h5py.Group) and all(k in node for k in ("data", "indices", "indptr")):
            matrices.append((name, None))
        elif isinstance(node, h5py.Dataset):
            if node.ndim == 2 and node.dtype.kind in "iufb" and min(node.shape) > 1:
                matrices.append((name, node.shape))
            elif node.ndim == 1 and h5py.check_string_dtype(node.dtype) is not None:
                names.append((name, node.shape[0]))

    ctx.f.visititems(visit)
    hint = "pass key paths: -mat KEY [KEY ...] -obs KEY [KEY ...] -var KEY [KEY ...]"
    if len(matrices) == 1 and matrices[0][1] is not None:
        (mkey, (r, c)) = matrices[0]
        rows = [n for n, k in names if k == r]
        cols = [n for n, k in names if k == c]
        if rows and cols:
            keys = lambda k: " ".join(k.split("/"))  # noqa: E731
            hint = f"pass key paths, e.g. -mat {keys(mkey)} -obs {keys(rows[0])} -var {keys(cols[0])} (add -t if rows are genes)"
    return ctx.fail(LayoutError, f"HDF5 layout not recognised (not h5ad, 10x, loom or scziDesk): {hint}")


def _is_hdfstore(f: h5py.File) -> bool:
    """Whether the file is a pandas HDFStore of one object (read by `gsrcl.io.hdfstore`)."""
    keys = list(f.keys())
    return len(keys) == 1 and isinstance(f.get(keys[0]), h5py.Group) and "pandas_type" in f[keys[0]].attrs


def parse(ctx: Context, mat, obs, var, layer, use_raw) -> Parsed | str:
    """The layout of the open file; ``"hdfstore"`` for a pandas HDFStore (`gsrcl.io.hdfstore.read_hdfstore` reads it)."""
    f = ctx.f
    if len(f.keys()) == 0:
        raise ctx.fail(EmptyFileError, "the HDF5 file holds no keys (no groups or datasets): export the data again")
    mat = normalise_keys(ctx, mat, "mat")
    obs = normalise_keys(ctx, obs, "obs")
    var = normalise_keys(ctx, var, "var")
    h5ad, loom = is_h5ad(f), is_loom(f)
    if ((layer or use_raw) and not (h5ad or loom)) or (use_raw and loom):
        raise ctx.fail(MatrixKeyError, "--layer and --use-raw apply to h5ad files (--layer also to loom) only")
    if mat is not None:
        node = walk(f, mat)
        version = tenx_group(node)
        if version is not None:
            return parse_10x(ctx, "/".join(mat), version, obs, var)
        return parse_generic(ctx, mat, obs, var)
    if h5ad:
        return parse_h5ad(ctx, obs, var, layer, use_raw)
    found = find_10x(f)
    if found is not None:
        gkey, version = found
        if version == "v2-many":
            raise ctx.fail(LayoutError, f"the 10x file holds several genomes ({gkey.replace(',', ', ')}):"
                                        " pick one with -mat GENOME")
        return parse_10x(ctx, gkey, version, obs, var)
    if loom:
        return parse_loom(ctx, obs, var, layer)
    if is_sczidesk(f):
        return parse_generic(ctx, None, obs, var, fmt="sczidesk-h5")
    if obs is None and var is None and _is_hdfstore(f):
        return "hdfstore"
    return parse_generic(ctx, None, obs, var, layout_error=obs is None and var is None)
