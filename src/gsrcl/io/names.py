"""Cell and gene names: how they look, the checks every reader applies, and the var table."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..errors import DuplicateGenesError, NamesError, ValuesError

ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
# ACGT barcode of >= 12 bases, optionally with a sample prefix and a -1 style suffix.
BARCODE = re.compile(r"^([A-Za-z0-9]+[_:.-])?[ACGTN]{12,}(-\d+)?$")
# Typical gene symbols: TP53, Cd3e, HLA-DRA, RP11-34P13.3, MT-CO1 (short, letters first, no underscore).
SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,9}([-.][A-Za-z0-9]{1,8}){0,2}$")
NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")

ID_COLUMNS = ("gene_ids", "gene_id", "feature_id", "ensembl_id", "ensembl_ids", "ensembl", "Accession", "id")
SYMBOL_COLUMNS = ("gene_symbols", "feature_name", "gene_symbol", "gene_name", "gene_names", "symbol", "symbols",
                  "Gene", "name")
KEPT_COLUMNS = (*ID_COLUMNS, *SYMBOL_COLUMNS, "feature_types", "feature_type")
_SAMPLE = 2000


def _sample(names) -> list[str]:
    names = list(names) if not isinstance(names, (list, np.ndarray, pd.Index)) else names
    n = len(names)
    if n <= _SAMPLE:
        return [str(x) for x in names]
    idx = np.linspace(0, n - 1, _SAMPLE).astype(int)
    return [str(names[i]) for i in idx]


def fraction(pattern: re.Pattern, names) -> float:
    sample = _sample(names)
    return sum(bool(pattern.match(x)) for x in sample) / len(sample) if sample else 0.0


def symbol_fraction(names) -> float:
    sample = _sample(names)
    hits = sum(bool(SYMBOL.match(x)) and not BARCODE.match(x) for x in sample)
    return hits / len(sample) if sample else 0.0


def all_numeric(names) -> bool:
    return len(names) > 0 and all(NUMBER.match(str(x)) for x in names)


def looks_transposed(rows, cols) -> str | None:
    """Why rows look like genes and columns like cells, or None. Conservative: only plain cases fire."""
    r_ens, c_ens = fraction(ENSEMBL, rows), fraction(ENSEMBL, cols)
    if r_ens >= 0.8 and c_ens < 0.2:
        return "the row names are Ensembl gene ids"
    r_bc, c_bc = fraction(BARCODE, rows), fraction(BARCODE, cols)
    r_sym = symbol_fraction(rows)
    if c_bc >= 0.8 and r_bc < 0.2 and r_sym >= 0.8:
        return "the row names look like gene symbols and the column names like cell barcodes"
    if len(rows) >= 5 * len(cols) and r_sym >= 0.9 and symbol_fraction(cols) < 0.5 and c_ens < 0.2 and r_bc < 0.2:
        return f"there are {len(rows)} rows with gene-like names and only {len(cols)} columns"
    return None


def _examples(values, k: int = 5) -> str:
    return ", ".join(repr(str(v)) for v in list(values)[:k])


def check_unique_barcodes(path, obs: pd.Index) -> None:
    """Refuse repeated cell barcodes (every reader, and ``QuerySource.from_anndata``), with a `NamesError`."""
    dup = obs[obs.duplicated()].unique()
    if len(dup):
        many = f"{len(dup)} cell barcodes occur" if len(dup) > 1 else "1 cell barcode occurs"
        raise NamesError(f"{path}: {many} more than once (e.g. {_examples(dup, 3)}): barcodes must be unique"
                         " (anndata obs_names_make_unique, or drop the repeated cells)")


def check_names(path, obs: pd.Index, var: pd.Index, *, transposed: bool, duplicate_hint: str) -> None:
    """Checks every reader applies once the matrix and its names agree in size."""
    if len(obs) == 0 or len(var) == 0:
        raise ValuesError(f"{path} holds an empty matrix ({len(obs)} cells x {len(var)} genes): nothing to annotate")
    for what, names in (("cell barcodes", obs), ("gene names", var)):
        empty = np.flatnonzero(np.asarray([str(x).strip() == "" for x in names]))
        if len(empty):
            raise NamesError(f"{path}: {len(empty)} of the {what} are empty (the first at position {empty[0]}):"
                             " every cell and gene needs a name")
    if all_numeric(var):
        raise NamesError(
            f"{path}: the gene names are all numbers ({_examples(var, 3)}): the genes must be named by symbols or ids"
            " (is the header row missing, or are the axes swapped? then pass -t)"
        )
    reason = looks_transposed(obs, var)
    if reason:
        if transposed:
            raise NamesError(f"{path}: after transposing (-t), {reason}: the file already holds cells as rows; drop -t")
        raise NamesError(f"{path}: {reason}: the file seems to hold genes x cells; pass -t (transpose=True)")
    check_unique_barcodes(path, obs)
    dup = var[var.duplicated()].unique()
    if len(dup):
        many = f"{len(dup)} gene names occur" if len(dup) > 1 else "1 gene name occurs"
        raise DuplicateGenesError(f"{path}: {many} more than once (e.g. {_examples(dup)}): {duplicate_hint}")


def tidy_var(names, columns: dict | None = None, *, ids=None, symbols=None) -> pd.DataFrame:
    """The var table: index = gene names; the known id/symbol columns kept, plus ``gene_ids`` (where the file
    holds ids besides the names) and ``gene_symbols`` (where the names are ids and symbols exist)."""
    index = pd.Index(np.asarray(names, dtype=object), dtype=object)
    var = pd.DataFrame(index=index)
    columns = columns or {}
    for key in KEPT_COLUMNS:
        if key in columns and len(columns[key]) == len(index):
            values = np.asarray(columns[key], dtype=object)
            if not np.array_equal(values, np.asarray(index, dtype=object)):  # a copy of the names adds nothing
                var[key] = values

    def differs(values) -> bool:
        return values is not None and len(values) == len(index) and not np.array_equal(
            np.asarray(values, dtype=object), np.asarray(index, dtype=object))

    if "gene_ids" not in var:
        for values in (ids, *(var[k] for k in ID_COLUMNS if k in var)):
            if differs(values):
                var["gene_ids"] = np.asarray(values, dtype=object)
                break
    same_as_ids = ids is not None and np.array_equal(np.asarray(ids, dtype=object), np.asarray(index, dtype=object))
    index_is_ids = same_as_ids or fraction(ENSEMBL, index) >= 0.5
    if "gene_symbols" not in var and index_is_ids:
        for values in (symbols, *(var[k] for k in SYMBOL_COLUMNS if k in var)):
            if differs(values):
                var["gene_symbols"] = np.asarray(values, dtype=object)
                break
    return var
