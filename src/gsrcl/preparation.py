"""What is decided once, before a query is predicted: its genes matched to the reference's (the overlap rule) and
the kind of its values, from its first rows (docs/methods.md §2). The cluster path (`gsrcl.distributed`) makes
these decisions on the client and sends the small `Prepared` to the workers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from .cutoff import check_cell_types
from .errors import InvalidReferenceError
from .genes import GeneMatch, check_overlap, gene_record, match_genes
from .values import ValueReport, detect_values, to_model_input

log = logging.getLogger("gsrcl.predict")

VALUE_SAMPLE_CELLS = 5000  # rows read up front to tell counts from log1p values

__all__ = ["Prepared", "choose_kind", "prepare", "refuse_negative"]


@dataclass
class Prepared:
    """What `prepare` found: the gene match and its record, the value kind and its record."""

    match: GeneMatch
    genes: dict[str, Any]
    kind: ValueReport  # the query's value kind, given to ModelInput.transform
    values: dict[str, Any]


def _reference_kind(ref) -> str | None:
    """The value kind the reference was trained on, if its manifest says."""
    values = ref.values or {}
    for key in ("kind", "detected", "expected", "input"):
        v = values.get(key)
        if isinstance(v, str) and v in ("counts", "log1p", "normalized", "scaled"):
            return v
    return None


def choose_kind(first_block: sp.csr_matrix, log_mode: str, ref) -> tuple[ValueReport, dict[str, Any]]:
    """How to turn the query into model input, from its first rows.

    Parameters
    ----------
    first_block : scipy.sparse.csr_matrix
        The query's first rows, as read.
    log_mode : str
        ``"auto"`` trusts the detection; ``"1"``: raw counts (log1p is applied); ``"0"``: natural log(1+x) already.
    ref : Reference
        Its training value kind is compared with the query's (a warning when they differ).

    Returns
    -------
    kind : ValueReport
        For `ModelInput.transform`.
    record : dict
        How it was chosen, for ``uns['gsrcl']['values']``.

    Raises
    ------
    ValuesError
        When the values are scaled (negative: whatever ``log_mode`` says), or unusable.
    """
    report = detect_values(first_block)
    detected = report.kind
    if detected == "scaled":
        refuse_negative(first_block)  # the one rule verify applies too: before any --log override
    if log_mode == "auto":
        spec = report
    else:
        kind = "counts" if log_mode == "1" else "log1p"
        spec = replace(report, kind=kind, log_base=math.e if kind == "log1p" else None)
        same = kind == detected or (kind == "counts" and detected == "normalized") or (
            kind == "log1p" and detected == "log1p" and report.log_base in (None, math.e))
        if not same:
            log.warning("warning: --log %s treats the values as %s, but they look otherwise: %s",
                        log_mode, "raw counts (log1p applied)" if kind == "counts" else "natural log(1+x) (used as is)",
                        report.message)
    (log.warning if report.warn else log.info)("values: %s", report.message)  # after the refusal: one line
    expected = _reference_kind(ref)
    if expected and detected != expected and {detected, expected} != {"counts", "normalized"}:
        log.warning(
            "warning: reference %r was trained on %s values but this query looks like %s: predictions may be "
            "off-distribution (check the query's values, or force --log 0/1)", ref.name, expected, detected,
        )
    record = {"log": log_mode, "detected": detected, "used": spec.kind,
              "log_base": float(spec.log_base) if spec.log_base else 0.0, "message": report.message,
              "reference_trained_on": expected or "unknown"}
    return spec, record


def refuse_negative(X) -> None:
    """Refuse values with any negative entry (scaled or centred, e.g. z-scores), as ``to_model_input`` refuses
    ``scaled`` values: the one value rule of ``gsrcl verify`` and prediction (the same error, the same exit code).

    Parameters
    ----------
    X : sparse matrix or ndarray
        Cells x genes, as read.

    Raises
    ------
    ValuesError
        When an entry is negative.
    """
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size and data.min() < 0:
        to_model_input(sp.csr_matrix((0, X.shape[1]), dtype=np.float32), "scaled")  # raises, with its advice


def _match(source, ref, verify_record: dict | None) -> tuple[GeneMatch, dict[str, Any]]:
    """The gene match and its record; a verified file (``verify_record``) must be for this reference."""
    if verify_record is None:
        match = check_overlap(source.var, ref.genes, ref.name)
        return match, gene_record(match)
    if list(map(str, source.var.index)) != list(ref.genes):
        raise InvalidReferenceError(
            f"the verified file was made for reference {verify_record.get('reference', '?')!r}, whose genes "
            f"differ from {ref.name!r}: run 'gsrcl verify' again with this reference, or pass the raw query"
        )
    match = match_genes(source.var, ref.genes)
    record = gene_record(match)
    return match, {k: verify_record[k] for k in record if k in verify_record} or record


def prepare(source, ref, log_mode: str = "auto", verify_record: dict | None = None) -> Prepared:
    """The checks that need no prediction: gene matching with the overlap rule, and the value kind.

    Parameters
    ----------
    source : QuerySource
        The query; its first ``VALUE_SAMPLE_CELLS`` rows are read.
    ref : Reference
    log_mode : str
        As in `Settings`.
    verify_record : dict, optional
        ``uns['gsrcl_verify']`` when the query is a verified file (its genes are the reference's already).

    Returns
    -------
    Prepared

    Raises
    ------
    GeneOverlapError
        When half or fewer of the query genes are reference genes and half or fewer of the reference genes are
        in the query.
    InvalidReferenceError
        When a verified file was made for another reference, or the reference's cell types cannot be labels (one
        named ``Unassigned``, or one listed twice: `gsrcl.cutoff.check_cell_types`).
    ValuesError
        When the values are unusable.
    """
    check_cell_types(ref.cell_types, ref.name)  # before the query is read: prediction never fails late on a label
    match, genes = _match(source, ref, verify_record)
    first = next((b for _, b in source.iter_blocks(max(1, min(VALUE_SAMPLE_CELLS, source.n_obs)))),
                 sp.csr_matrix((0, source.n_vars), dtype=np.float32))
    kind, values = choose_kind(first, log_mode, ref)
    return Prepared(match, genes, kind, values)
