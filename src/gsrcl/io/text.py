"""Text inputs: CSV/TSV tables (optionally gzip) read in chunks into CSR, and 10x matrix folders."""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from ..errors import (BarcodeKeyError, CorruptFileError, GeneKeyError, MatrixKeyError, NamesError, NotReadableError,
                      ShapeMismatchError, ValuesError)
from .names import all_numeric
from .sniff import GZIP_MAGIC

CHUNK_VALUES = 4_000_000  # values per CSV chunk (a dense chunk of about 16-32 MiB)
_MTX = ("matrix.mtx.gz", "matrix.mtx")
_FEATURES = ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
_BARCODES = ("barcodes.tsv.gz", "barcodes.tsv")


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _open_text(path: Path):
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def frame_to_csr(frame: pd.DataFrame, path, columns, first_line: int | None = None) -> sp.csr_matrix:
    """A frame of values (index = row names) as CSR float32; non-numeric cells and NaN/inf raise ValuesError."""

    def where(i: int, j: int) -> str:
        line = f" (line {first_line + i})" if first_line is not None else ""
        return f"row {str(frame.index[i])!r}{line}, column {str(columns[j])!r}"

    for j, dtype in enumerate(frame.dtypes):
        if is_numeric_dtype(dtype) and not is_bool_dtype(dtype):
            continue
        col = frame.iloc[:, j]
        bad = np.ones(len(col), dtype=bool) if is_bool_dtype(dtype) else \
            (pd.to_numeric(col, errors="coerce").isna() & col.notna()).to_numpy()
        i = int(np.argmax(bad))
        raise ValuesError(f"{path}: {str(col.iloc[i])!r} at {where(i, j)} is not a number: the table must hold"
                          " numbers only, with names in the first column and the header row")
    values = frame.to_numpy(dtype=np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ValuesError(f"{path}: missing, NaN or infinite value at {where(i, j)}: fill or drop it before annotating")
    return sp.csr_matrix(values)


def read_table(path: Path, *, names_are: str):
    """(row names, column names, CSR rows x columns, separator) of a CSV/TSV with a header row and a name column.

    The table is read in chunks, so only one chunk is ever dense. ``names_are`` says what the first column
    should hold ("cell ids" or "gene names"), for the messages.
    """
    try:
        with _open_text(path) as fh:
            first, second = fh.readline(), fh.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFileError(f"{path} cannot be read ({exc}): the file is truncated or corrupt") from None
    if not first.strip():
        raise ValuesError(f"{path} holds no table (its first line is empty): nothing to annotate")
    lower = path.name.lower().removesuffix(".gz")
    sep = "\t" if lower.endswith((".tsv", ".tab")) or first.count("\t") > first.count(",") else ","
    header = next(csv.reader([first.rstrip("\r\n")], delimiter=sep))
    header[0] = header[0].lstrip("\ufeff")
    if not second.strip():
        raise ValuesError(f"{path} holds a header but no data rows: the matrix is empty")
    n_fields = len(next(csv.reader([second.rstrip("\r\n")], delimiter=sep)))
    if n_fields < 2:
        raise ShapeMismatchError(f"{path}: the rows hold a single field (separator {sep!r}): a table needs a name"
                                 " column and value columns, separated by commas or tabs")
    if len(header) == n_fields:
        col_names = header[1:]
    elif len(header) == n_fields - 1:  # R's write.table: no corner field
        col_names = header
    else:
        raise ShapeMismatchError(f"{path}: the header has {len(header)} fields but the first data row has {n_fields}:"
                                 " give one name per value column")
    if all_numeric(col_names):
        header_holds = "cell ids" if names_are == "gene names" else "gene names"
        examples = ", ".join(repr(x) for x in col_names[:3])
        raise NamesError(f"{path}: the header row holds numbers ({examples}), not {header_holds}: the first row must"
                         f" name the columns (is the header row missing?)")
    chunks, row_names, line = [], [], 2
    # converters (not dtype) keep the names as written: a dtype dict makes pandas parse twice as slowly
    reader = pd.read_csv(path, sep=sep, header=None, skiprows=1, index_col=0, converters={0: str},
                         chunksize=max(1, CHUNK_VALUES // max(1, len(col_names))), compression="infer",
                         encoding="utf-8", encoding_errors="replace")
    try:
        for chunk in reader:
            if chunk.shape[1] != len(col_names):
                raise ShapeMismatchError(f"{path}: rows near line {line} hold {chunk.shape[1]} values but the header"
                                         f" names {len(col_names)} columns: give one name per value column")
            missing = chunk.index.isna()
            if missing.any():
                raise NamesError(f"{path}: the row at line {line + int(np.argmax(missing))} has no name in the first"
                                 f" column: every row must start with its {names_are.removesuffix('s')}")
            chunks.append(frame_to_csr(chunk, path, col_names, first_line=line))
            row_names.extend(chunk.index)
            line += len(chunk)
    except pd.errors.ParserError as exc:
        raise ShapeMismatchError(f"{path}: {str(exc).strip().splitlines()[-1]}: every row needs one name and one value"
                                 " per header column") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFileError(f"{path} cannot be read ({exc}): the file is truncated or corrupt") from None
    finally:
        reader.close()
    if all_numeric(row_names):
        examples = ", ".join(repr(x) for x in row_names[:3])
        raise NamesError(f"{path}: the first column holds numbers ({examples}), not {names_are}: the table seems to"
                         f" lack a name column; make the first column hold the {names_are}")
    X = sp.vstack(chunks, format="csr", dtype=np.float32) if chunks else sp.csr_matrix((0, len(col_names)), dtype=np.float32)
    return np.asarray(row_names, dtype=object), np.asarray(col_names, dtype=object), X, sep


def _find(folder: Path, names) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _tsv_column(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, compression="infer", keep_default_na=False,
                           quoting=csv.QUOTE_NONE)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFileError(f"{path} cannot be read ({exc}): the file is truncated or corrupt") from None
    except pd.errors.EmptyDataError:
        raise ValuesError(f"{path} holds no {what}: the matrix is empty") from None


def mtx_parts(path: Path, mat, obs, var) -> dict:
    """Names and matrix header of a 10x matrix folder (``path`` is the folder or its matrix.mtx[.gz])."""
    folder = path if path.is_dir() else path.parent
    if mat is not None:
        raise MatrixKeyError(f"{path}: -mat applies to HDF5 files; a 10x folder's matrix is its matrix.mtx[.gz]")
    if obs is not None:
        raise BarcodeKeyError(f"{path}: -obs applies to HDF5 files; a 10x folder's barcodes are barcodes.tsv[.gz]")
    mtx = path if path.is_file() else _find(folder, _MTX)
    features, barcodes = _find(folder, _FEATURES), _find(folder, _BARCODES)
    missing = [label for label, p in (("matrix.mtx[.gz]", mtx), ("features.tsv[.gz] or genes.tsv[.gz]", features),
                                      ("barcodes.tsv[.gz]", barcodes)) if p is None]
    if missing:
        raise NotReadableError(f"{folder} is not a 10x matrix folder: {' and '.join(missing)} missing")
    feats = _tsv_column(features, "genes")
    ids = feats.iloc[:, 0].to_numpy(dtype=object)
    names = feats.iloc[:, 1].to_numpy(dtype=object) if feats.shape[1] > 1 else ids
    ftype = feats.iloc[:, 2].to_numpy(dtype=object) if feats.shape[1] > 2 else None
    cells = _tsv_column(barcodes, "barcodes").iloc[:, 0].to_numpy(dtype=object)
    choice = None if var is None else (list(var) if not isinstance(var, str) else [var])[-1]
    if choice in (None, "name", "names", "gene_names", "symbol", "gene_symbols"):
        genes, var_from = names, f"{features.name} column 2"
    elif choice in ("id", "ids", "gene_ids"):
        genes, var_from = ids, f"{features.name} column 1"
    else:
        raise GeneKeyError(f"{path}: for a 10x folder, -var takes 'id' or 'name' (the features.tsv column), not {choice!r}")
    try:
        with _mm_source(mtx) as fh:
            n_rows, n_cols, nnz, fmt, field, _ = scipy.io.mminfo(fh)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise CorruptFileError(f"{mtx} is not a readable Matrix Market file ({exc})") from None
    if field in ("complex", "pattern"):
        raise ValuesError(f"{mtx} holds {field} values, not counts")
    if (n_rows, n_cols) != (len(genes), len(cells)):
        raise ShapeMismatchError(f"{mtx} is {n_rows} x {n_cols} but {features.name} names {len(genes)} genes and"
                                 f" {barcodes.name} names {len(cells)} barcodes: the folder's files do not belong together")
    return {"mtx": mtx, "genes": genes, "cells": cells, "ids": ids, "names": names, "ftype": ftype,
            "origin": {"matrix": mtx.name, "obs": barcodes.name, "var": var_from},
            "hint": "use the gene ids instead: -var id"}


@contextmanager
def _mm_source(path: Path):
    """What scipy's Matrix Market reader takes: a gzip stream, or the path of a plain file (a plain file
    object makes scipy 1.17's reader abort the process)."""
    if is_gzip(path):
        with gzip.open(path, "rb") as fh:
            yield fh
    else:
        yield str(path)


def read_mtx(mtx: Path) -> sp.csr_matrix:
    """The matrix as stored (genes x cells), CSR float32."""
    try:
        with _mm_source(mtx) as fh:
            M = scipy.io.mmread(fh)
    except (OSError, EOFError, zlib.error, ValueError, IndexError) as exc:
        raise CorruptFileError(f"{mtx} cannot be read as Matrix Market ({exc}): the file is truncated or corrupt") from None
    return sp.csr_matrix(M, dtype=np.float32)

