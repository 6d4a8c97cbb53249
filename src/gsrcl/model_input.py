"""The model input of a reference: how a cell's values become what the model and the novelty score see.

The steps, for the reference's cells at training and for each query cell at prediction (over the reference's
genes, genes the query lacks as zeros):

1. the values on the natural log1p scale (`gsrcl.values.to_model_input`: log1p of counts, log1p values as they
   are, other log bases converted), by the value kind detected in the data at hand;
2. with a ``library_size``, each cell scaled to that total on the count scale and logged again
   (`gsrcl.values.log1p_normalized`; log1p CP10k with `gsrcl.values.CP10K`), over the reference's genes only,
   so a query cell is scaled as a reference cell was.

The gene scale of the ``scale_genes`` setting is not part of it: each ensemble member fits its own, on its own
training and validation cells, and stores it with its weights (`gsrcl.methods.base.EstimatorBase`).

A `ModelInput` is recorded in the manifest's ``values`` section; references made before this class load from
the same keys.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import ValuesError
from .values import CP10K, ValueReport, detect_values, log1p_normalized, to_model_input

__all__ = ["ModelInput", "log1p_cp10k", "original_log", "zero_value"]

log = logging.getLogger("gsrcl.model_input")


@dataclass(frozen=True)
class ModelInput:
    """How values become model input, as fitted on a reference's training data.

    Attributes
    ----------
    expected : str
        The value kind detected in the reference's data ("counts", "log1p" or "normalized"): what a query is
        expected to hold.
    log_base : float or None
        The log base of the reference's log1p values (e, 2 or 10); None for other kinds.
    library_size : float or None
        Each cell scaled to this total before log1p (None: not scaled).
    message : str
        What the value detection said about the reference's data.
    offset : float or None
        The original tool's log: values on the count scale (counts, normalised values) become
        ``log((x + 1) + offset)`` in float32, as the original tool computes them, less that value at zero, so
        that zeros stay zeros (`original_log`). The model then carries the value of a zero: an imported
        reference's first layer and its SVMs on the genes hold it (`gsrcl.original.importer`). None: log1p.
    """

    expected: str
    log_base: float | None = None
    library_size: float | None = None
    message: str = ""
    offset: float | None = None

    # --- fitting and the manifest ------------------------------------------------------------------------
    @classmethod
    def fit(cls, X, library_size: float | None = None) -> "ModelInput":
        """Detect the value kind of the training data ``X`` (cells x genes) and log what was found.

        Parameters
        ----------
        X : sparse matrix or numpy.ndarray
            The reference's values, before any transform.
        library_size : float or None
            Each cell's total before log1p (None or 0: not scaled).

        Returns
        -------
        ModelInput

        Raises
        ------
        ValuesError
            For values that hold NaN, infinities or only zeros (scaled values are refused by `log1p`).
        """
        report = detect_values(X)
        if report.kind != "scaled":  # scaled values are refused by log1p, with their own message
            (log.warning if report.warn else log.info)("values: %s", report.message)
        model_input = cls(expected=report.kind, log_base=float(report.log_base) if report.log_base else None,
                          library_size=float(library_size) if library_size else None, message=report.message)
        return model_input

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``values`` section."""
        return {
            "expected": self.expected,
            "transform": "log1p" if self.expected in ("counts", "normalized") else "none",
            "log_base": self.log_base,
            # then each cell scaled to this total on the count scale and logged again (None: not scaled)
            "library_size": self.library_size,
            "message": self.message,
            **({"offset": self.offset, "transform": "original_log"} if self.offset else {}),
        }

    @classmethod
    def from_manifest(cls, values: dict[str, Any]) -> "ModelInput":
        """The model input recorded in a manifest's ``values`` section (any reference format version)."""
        size = values.get("library_size")
        base = values.get("log_base")
        offset = values.get("offset")
        return cls(expected=str(values.get("expected", "")), log_base=float(base) if base else None,
                   library_size=float(size) if size else None, message=str(values.get("message", "")),
                   offset=float(offset) if offset else None)

    # --- applying it -------------------------------------------------------------------------------------
    def log1p(self, X, kind: ValueReport | str | None = None, copy: bool = True) -> sp.csr_matrix:
        """Step 1: ``X`` on the natural log1p scale (CSR float32), by the value ``kind`` of the data at hand
        (a `ValueReport`, which also gives the log base, or a kind name; None: the reference's own kind and log
        base, for the reference's data). Zeros stay zeros. ``copy=False``: ``X`` itself is transformed when it
        is CSR float32 already (the original tool's log always copies).

        Raises
        ------
        ValuesError
            For scaled (negative) values.
        """
        if kind is None:
            kind = self.expected
            if self.offset is None:
                return to_model_input(X, kind, log_base=self.log_base, copy=copy)
        name = kind.kind if isinstance(kind, ValueReport) else kind
        if self.offset is not None and name in ("counts", "normalized"):
            return original_log(X, self.offset)
        return to_model_input(X, kind, copy=copy)

    def normalize(self, Xm: sp.csr_matrix, copy: bool = True) -> sp.csr_matrix:
        """Step 2: the natural-log1p values ``Xm`` (cells x the reference's genes) with each cell scaled to
        ``library_size``; ``Xm`` itself without one. ``copy=False``: ``Xm`` itself is scaled when it is CSR
        float32 already."""
        return log1p_normalized(Xm, self.library_size, copy=copy) if self.library_size else Xm

    def transform(self, X, kind: ValueReport | str | None = None) -> sp.csr_matrix:
        """The model input of cells ``X`` already aligned to the reference's genes (CSR float32): `log1p`,
        then `normalize`. ``kind``: the query's value kind (e.g. the `ValueReport` of its first block)."""
        return self.normalize(self.log1p(X, kind))

    @property
    def is_cp10k(self) -> bool:
        """Whether the model input is log1p CP10k, the novelty score's input, already."""
        return self.library_size == CP10K

    def novelty_input(self, Xm: sp.csr_matrix) -> sp.csr_matrix:
        """log1p CP10k of the model input ``Xm``: ``Xm`` itself (as CSR float32) when it is log1p CP10k
        already."""
        return sp.csr_matrix(Xm, dtype=np.float32) if self.is_cp10k else log1p_normalized(Xm, CP10K)


def zero_value(offset: float) -> np.float32:
    """The original tool's log of a zero, ``log((0 + 1) + offset)`` in float32 (9.5367386e-07 for 1e-6)."""
    return np.log(np.float32(1.0) + np.float32(offset))


def original_log(X, offset: float) -> sp.csr_matrix:
    """Values on the count scale as the original tool logs them, ``log((x + 1) + offset)`` computed in float32,
    less `zero_value` (in float64, then float32), so that zeros stay zeros (CSR float32, a copy).

    Raises
    ------
    ValuesError
        For negative values.
    """
    out = sp.csr_matrix(X, dtype=np.float32, copy=True)
    if out.data.size and out.data.min() < 0:
        raise ValuesError("the values are scaled or centred (negative values): the model needs raw counts or "
                          "log1p values; give the counts (e.g. .raw or a counts layer)")
    logged = np.log((out.data + np.float32(1.0)) + np.float32(offset))
    out.data = (logged.astype(np.float64) - float(zero_value(offset))).astype(np.float32)
    return out


def log1p_cp10k(X, kind: ValueReport | str) -> sp.csr_matrix:
    """log1p CP10k of cells ``X`` over whatever genes they have, by their value ``kind``: the space of the
    query's own neighbourhoods (`gsrcl.neighbours`), independent of any reference."""
    return log1p_normalized(to_model_input(X, kind), CP10K, copy=False)
