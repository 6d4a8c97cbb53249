"""Harmonising query genes to a reference gene list, and aligning a matrix to the reference order.

`match_genes` pairs each reference gene with at most one query gene (and each query gene with at most one
reference gene), trying in turn:

1. ``exact``: the query name (the ``var`` index) equals the reference name;
2. ``ensembl_version``: both are Ensembl gene ids that differ only in the version suffix
   (``ENSG00000141510.16`` == ``ENSG00000141510``);
3. ``id_symbol``: through the other identifier the query file holds: a reference name equal to the
   ``gene_symbols`` column (query indexed by ids), or a reference id equal (version ignored) to the
   ``gene_ids`` column (query indexed by symbols, as 10x files read by gene name);
4. ``case_insensitive``: the case-folded names agree (mouse ``Cd19`` vs human ``CD19``), used only where the
   folded name belongs to exactly one reference gene and one query gene; reference genes left unmatched
   because their folded name was shared are counted as ``ambiguous_skipped``.

Duplicated query names: the first occurrence wins, later ones are never matched. The reference list must be
unique (docs/methods.md §5 item 6). Missing reference genes are zero-filled by `align`, so report both coverages
(§5 items 4-5): `GeneMatch.summary()`.

`check_overlap` applies the overlap rule on top of the match: a query is refused only when half or fewer of its
genes are reference genes **and** half or fewer of the reference genes are in the query. The first half is the
original tool's rule, made for references that hold whole transcriptomes; ours are often trained on a filtered
gene list, so a raw query (e.g. Cell Ranger's 32,738 genes) that holds every reference gene matches only a small
share of its own genes and is still fine: the model gets all of its input. Nothing the original accepts is
refused, and a wrong species, naming or orientation (few matches both ways) still is. ``gsrcl verify`` and
prediction both call it; both shares are logged and named in the refusal.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import GeneOverlapError, InvalidReferenceError, ShapeMismatchError

__all__ = ["GeneMatch", "match_genes", "check_overlap", "gene_record", "align", "looks_like_ensembl",
           "id_symbol_hint", "HOW_KEYS"]

log = logging.getLogger("gsrcl.genes")

HOW_KEYS = ("exact", "ensembl_version", "id_symbol", "case_insensitive", "ambiguous_skipped")
# Refused when at most this share of the query genes is matched AND at most MIN_REFERENCE_FRACTION of the reference
# genes are (the module docstring): the first is the original's rule, the second lets a raw query through when it
# holds the reference's (filtered) gene list.
MIN_QUERY_FRACTION = 0.5
MIN_REFERENCE_FRACTION = 0.5
# Below this share of the reference genes matched, the zero-filled inputs move the encoder's input far from what
# it was trained on: warn, and say how to train a reference on the query's genes (docs/decisions.md).
LOW_REFERENCE_FRACTION = 0.8

# ENSG (human), ENSMUSG (mouse), ENSDARG, ...; GENCODE's PAR copies (`_PAR_Y`) are distinct genes, so kept.
_ENSEMBL = re.compile(r"^(ENS[A-Z]*G\d{6,})(?:\.\d+)?(_PAR_Y)?$")


def _ensembl_key(name: str) -> str | None:
    m = _ENSEMBL.match(name)
    return None if m is None else m.group(1) + (m.group(2) or "")


def _id_key(name: str) -> str:
    key = _ensembl_key(name)
    return name if key is None else key


def _species_prefix(name: str) -> str | None:
    m = _ENSEMBL.match(name)
    return None if m is None else re.match(r"ENS[A-Z]*?G(?=\d)", name).group(0)


def looks_like_ensembl(names: Iterable) -> bool:
    """True when more than half of the (non-empty) names are Ensembl gene ids, version suffix or not."""
    values = [str(n) for n in names if n is not None and str(n) not in ("", "nan")]
    if not values:
        return False
    return sum(_ENSEMBL.match(v) is not None for v in values) > len(values) / 2


def _column(query_var: pd.DataFrame, name: str) -> list[str | None] | None:
    """A var column as strings, None for missing entries; None when the column is absent."""
    if name not in query_var.columns:
        return None
    out: list[str | None] = []
    for v in query_var[name].tolist():
        s = None if pd.isna(v) else str(v).strip()
        out.append(s or None)
    return out


@dataclass(frozen=True, eq=False)
class GeneMatch:
    """How the query genes map onto the reference genes (see the module docstring)."""

    ref_to_query: np.ndarray = field(repr=False)  # int, len n_ref, -1 = absent from the query
    query_matched: np.ndarray = field(repr=False)  # bool, len n_query
    n_query: int
    n_query_matched: int
    n_ref: int
    n_ref_matched: int
    how: dict
    reference_genes: tuple = field(repr=False, default=())
    query_genes: tuple = field(repr=False, default=())
    # For `align`, precomputed once (see `_column_map`).
    query_to_ref: np.ndarray | None = field(repr=False, default=None)
    monotone: bool = field(repr=False, default=False)

    def __post_init__(self):
        if self.query_to_ref is None:  # built by hand (e.g. from a saved ref_to_query): derive the map
            q2r, mono = _column_map(np.asarray(self.ref_to_query), self.n_query)
            object.__setattr__(self, "query_to_ref", q2r)
            object.__setattr__(self, "monotone", mono)

    @property
    def query_fraction(self) -> float:
        return self.n_query_matched / self.n_query if self.n_query else 0.0

    @property
    def ref_fraction(self) -> float:
        return self.n_ref_matched / self.n_ref if self.n_ref else 0.0

    def summary(self) -> str:
        by = ", ".join(f"{k} {self.how[k]}" for k in HOW_KEYS[:4] if self.how.get(k))
        if self.how.get("ambiguous_skipped"):
            by += f"{'; ' if by else ''}{self.how['ambiguous_skipped']} ambiguous (case-insensitive) skipped"
        return (
            f"{self.n_query_matched} of {self.n_query} query genes ({100 * self.query_fraction:.1f}%) and "
            f"{self.n_ref_matched} of {self.n_ref} reference genes ({100 * self.ref_fraction:.1f}%) matched; "
            f"{self.n_query - self.n_query_matched} query genes dropped, "
            f"{self.n_ref - self.n_ref_matched} reference genes zero-filled; by: {by or 'none'}"
        )

    def missing_reference_genes(self, k: int | None = None) -> list[str]:
        """Reference genes absent from the query (zero-filled), in reference order; the first ``k`` if given."""
        idx = np.flatnonzero(self.ref_to_query < 0)[:k]
        return [self.reference_genes[i] for i in idx]

    def dropped_query_genes(self, k: int | None = None) -> list[str]:
        """Query genes not used (not in the reference, or duplicates), in query order; the first ``k`` if given."""
        idx = np.flatnonzero(~self.query_matched)[:k]
        return [self.query_genes[i] for i in idx]


def _column_map(ref_to_query: np.ndarray, n_query: int) -> tuple[np.ndarray, bool]:
    """query column -> reference column (-1 = dropped), and whether it increases over the kept columns
    (then aligned rows stay sorted without a re-sort)."""
    n_ref = ref_to_query.size
    query_to_ref = np.full(n_query, -1, dtype=np.int32 if n_ref < 2**31 else np.int64)
    matched = ref_to_query >= 0
    query_to_ref[ref_to_query[matched]] = np.flatnonzero(matched)
    mapped = query_to_ref[query_to_ref >= 0]
    query_to_ref.setflags(write=False)
    return query_to_ref, bool(np.all(np.diff(mapped) > 0))


def _check_reference(reference_genes: Sequence[str]) -> list[str]:
    ref = [str(g) for g in reference_genes]
    counts = Counter(ref)
    dups = [g for g, c in counts.items() if c > 1]
    if dups:
        shown = ", ".join(repr(g) for g in dups[:5]) + (", ..." if len(dups) > 5 else "")
        raise InvalidReferenceError(
            f"the reference gene list holds {len(dups)} duplicated name(s) ({shown}): "
            "rebuild the reference with unique gene names"
        )
    return ref


def match_genes(query_var: pd.DataFrame, reference_genes: Sequence[str]) -> GeneMatch:
    """Pair reference genes with query genes (rules in the module docstring)."""
    ref = _check_reference(reference_genes)
    qnames = [str(g) for g in query_var.index]
    n_ref, n_query = len(ref), len(qnames)
    ref_to_query = np.full(n_ref, -1, dtype=np.int64)
    used = np.zeros(n_query, dtype=bool)
    available = ~pd.Index(qnames).duplicated(keep="first")  # later duplicates never match
    how = dict.fromkeys(HOW_KEYS, 0)

    def match_by_key(ref_keys: list[str | None], candidates: dict[str, list[int]], step: str) -> None:
        for j, key in enumerate(ref_keys):
            if key is None or ref_to_query[j] >= 0:
                continue
            for q in candidates.get(key, ()):
                if not used[q]:
                    ref_to_query[j] = q
                    used[q] = True
                    how[step] += 1
                    break

    def candidates_of(values: list[str | None], keyfunc=lambda s: s) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for q, v in enumerate(values):
            if v is not None and available[q]:
                key = keyfunc(v)
                if key is not None:
                    out[key].append(q)
        return out

    # 1. exact
    match_by_key(ref, candidates_of(qnames), "exact")

    # 2. Ensembl ids on both sides, version ignored
    ref_ens = [_ensembl_key(g) for g in ref]
    if any(k is not None for k in ref_ens):
        match_by_key(ref_ens, candidates_of(qnames, _ensembl_key), "ensembl_version")

    # 3. through the query's other identifier column
    symbols = _column(query_var, "gene_symbols")
    if symbols is not None:
        match_by_key(ref, candidates_of(symbols), "id_symbol")
    ids = _column(query_var, "gene_ids")
    if ids is not None:
        match_by_key([_id_key(g) for g in ref], candidates_of(ids, _id_key), "id_symbol")

    # 4. case-insensitive, only where the folded name is unique on both sides
    ref_fold = [g.casefold() for g in ref]
    ref_fold_count = Counter(ref_fold)
    query_by_fold: dict[str, set[int]] = defaultdict(set)
    for values in (qnames, symbols):
        if values is None:
            continue
        for q, v in enumerate(values):
            if v is not None and available[q]:
                query_by_fold[v.casefold()].add(q)
    for j, key in enumerate(ref_fold):
        if ref_to_query[j] >= 0:
            continue
        qs = query_by_fold.get(key)
        if not qs or all(used[q] for q in qs):
            continue
        if ref_fold_count[key] > 1 or len(qs) > 1:
            how["ambiguous_skipped"] += 1
            continue
        (q,) = qs
        ref_to_query[j] = q
        used[q] = True
        how["case_insensitive"] += 1

    query_to_ref, monotone = _column_map(ref_to_query, n_query)
    matched = ref_to_query >= 0
    for a in (ref_to_query, used):
        a.setflags(write=False)
    return GeneMatch(
        ref_to_query=ref_to_query,
        query_matched=used,
        n_query=n_query,
        n_query_matched=int(used.sum()),
        n_ref=n_ref,
        n_ref_matched=int(matched.sum()),
        how=how,
        reference_genes=tuple(ref),
        query_genes=tuple(qnames),
        query_to_ref=query_to_ref,
        monotone=monotone,
    )


def id_symbol_hint(query_var: pd.DataFrame, reference_genes: Sequence[str]) -> str | None:
    """A one-line hint when query and reference name genes differently (ids vs symbols, or another
    species' Ensembl ids) and the query holds no column that bridges them; None otherwise. Meant for the
    message shown when few genes match."""
    ref = [str(g) for g in reference_genes]
    q_ids = looks_like_ensembl(query_var.index)
    r_ids = looks_like_ensembl(ref)
    if q_ids and not r_ids and "gene_symbols" not in query_var.columns:
        return ("the query holds Ensembl ids and the reference gene symbols: pass a file with symbols "
                "or a 10x file (which holds both)")
    if r_ids and not q_ids and "gene_ids" not in query_var.columns:
        return ("the query holds gene symbols and the reference Ensembl ids: pass a file with Ensembl ids "
                "or a 10x file (which holds both)")
    if q_ids and r_ids:
        qp = Counter(p for p in map(_species_prefix, map(str, query_var.index)) if p).most_common(1)
        rp = Counter(p for p in map(_species_prefix, ref) if p).most_common(1)
        if qp and rp and qp[0][0] != rp[0][0]:
            return (f"the query holds {qp[0][0]} Ensembl ids and the reference {rp[0][0]} ids (another "
                    "species): use a reference of the query's species")
    return None


def check_overlap(query_var: pd.DataFrame, reference_genes: Sequence[str], reference_name: str = "") -> GeneMatch:
    """Match the query genes to the reference genes and apply the overlap rule; log the numbers.

    Parameters
    ----------
    query_var : pandas.DataFrame
        The query's genes: the index holds their names, optional ``gene_ids``/``gene_symbols`` columns.
    reference_genes : sequence of str
        The reference's genes, in its order (unique).
    reference_name : str
        Named in the error message.

    Returns
    -------
    GeneMatch
        As `match_genes`. A warning is logged when fewer than ``LOW_REFERENCE_FRACTION`` of the reference genes
        are matched (the rest are zero-filled).

    Raises
    ------
    GeneOverlapError
        When ``MIN_QUERY_FRACTION`` (half) or fewer of the query genes are reference genes and
        ``MIN_REFERENCE_FRACTION`` (half) or fewer of the reference genes are in the query (an empty gene list
        on either side always).
    InvalidReferenceError
        When the reference gene list holds duplicates.
    """
    match = match_genes(query_var, reference_genes)
    log.info(match.summary())
    if match.n_query == 0 or match.n_ref == 0 or (match.query_fraction <= MIN_QUERY_FRACTION
                                                  and match.ref_fraction <= MIN_REFERENCE_FRACTION):
        hint = id_symbol_hint(query_var, reference_genes)
        raise GeneOverlapError(
            f"only {match.n_query_matched} of {match.n_query} query genes ({100 * match.query_fraction:.1f}%) are "
            f"in reference {reference_name!r} and only {match.n_ref_matched} of its {match.n_ref} genes "
            f"({100 * match.ref_fraction:.1f}%) are in the query; more than 50% of either must be: "
            + (hint + "; " if hint else "")
            + "check the file is cells x genes (else pass -t) or choose another reference"
        )
    if match.n_ref_matched / match.n_ref < LOW_REFERENCE_FRACTION:
        log.warning(
            "warning: only %d of %d reference genes (%.1f%%) are in the query; the rest are zero-filled, "
            "so predictions may be unreliable: for better ones, train a reference on the genes this query has "
            "(gsrcl train ... --genes-from QUERY)",
            match.n_ref_matched,
            match.n_ref,
            100.0 * match.n_ref_matched / match.n_ref,
        )
    return match


def gene_record(match: GeneMatch) -> dict:
    """The gene-match numbers that verify and prediction record in ``uns``.

    Parameters
    ----------
    match : GeneMatch

    Returns
    -------
    dict
        ``n_query_genes``, ``n_query_genes_matched``, ``n_reference_genes``, ``n_reference_genes_matched``,
        ``n_query_genes_dropped``, ``n_reference_genes_zero_filled`` (int) and ``matched_by`` (counts per rule).
    """
    return {
        "n_query_genes": int(match.n_query),
        "n_query_genes_matched": int(match.n_query_matched),
        "n_reference_genes": int(match.n_ref),
        "n_reference_genes_matched": int(match.n_ref_matched),
        "n_query_genes_dropped": int(match.n_query - match.n_query_matched),
        "n_reference_genes_zero_filled": int(match.n_ref - match.n_ref_matched),
        "matched_by": {k: int(v) for k, v in match.how.items()},
    }


def align(X, match: GeneMatch) -> sp.csr_matrix:
    """X (cells x query genes, sparse) as CSR float32 cells x reference genes, indices sorted: column j is
    query column ``match.ref_to_query[j]``, all-zero where that is -1; unmatched query columns are dropped.
    No dense copy; a few linear passes over the stored entries."""
    if not sp.issparse(X):
        raise TypeError("align expects a scipy.sparse matrix")
    X = X.tocsr() if X.format != "csr" else X
    n, m = X.shape
    if m != match.n_query:
        raise ShapeMismatchError(
            f"the matrix has {m} gene columns but the gene list has {match.n_query} names: "
            "check the file's orientation (-t) and its gene-name key (-var)"
        )
    if match.monotone:
        # Matched columns keep their relative order: renumber the column indices, drop the unmatched ones.
        nnz = X.indptr[-1]
        new_cols = match.query_to_ref[X.indices[:nnz]]
        keep = new_cols >= 0
        idx_dtype = np.int32 if max(nnz, match.n_ref) < 2**31 else np.int64
        kept_before = np.zeros(nnz + 1, dtype=idx_dtype)
        np.cumsum(keep, out=kept_before[1:])
        out = sp.csr_matrix(
            (X.data[:nnz][keep].astype(np.float32, copy=False), new_cols[keep].astype(idx_dtype, copy=False),
             kept_before[X.indptr]),
            shape=(n, match.n_ref),
        )
        if X.has_sorted_indices:
            out.has_sorted_indices = True
        else:
            out.sort_indices()
        return out
    # Columns are permuted: select them on the CSC form (whole-column slices), then convert back; the
    # CSC -> CSR transposition emits sorted indices, which is cheaper than sorting every row.
    ok = match.ref_to_query >= 0
    sel = X.tocsc()[:, match.ref_to_query[ok]]
    starts = np.zeros(match.n_ref + 1, dtype=np.int64)
    np.cumsum(ok, out=starts[1:])
    out = sp.csc_matrix((sel.data, sel.indices, sel.indptr[starts]), shape=(n, match.n_ref)).tocsr()
    out.sort_indices()  # a no-op check: the transposition already sorted them
    return out.astype(np.float32, copy=False)
