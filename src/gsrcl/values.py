"""Telling raw counts, log1p values, other normalised values and scaled values apart, and the transforms of
the values into model input (`gsrcl.model_input.ModelInput` applies them in order).

Both methods were trained on natural ``log1p`` of counts (docs/methods.md §1.4). The original tool chose
between "raw" and "logged" from the dtype (int ⇒ raw, float ⇒ logged), so counts written as ``1.0`` were taken
as logged (docs/methods.md §5 item 10). `detect_values` looks at the values of a row sample instead:

- any negative value: ``scaled`` (z-scored / centred; unusable, `to_model_input` refuses it);
- every stored value integral (within 1e-6, whatever the dtype): ``counts``;
- otherwise the per-cell pattern decides. Counts times a per-cell factor (library-size normalisation)
  become integers again when each row is divided by its smallest non-zero value (in practice a count of 1);
  we test that on the values as they are, on ``expm1(x)``, ``2**x - 1`` and ``10**x - 1``:
  - as they are: ``normalized`` (CP10k / CPM not logged; the model input is their log1p, with a warning);
  - ``expm1``: ``log1p`` (natural), used as they are; the message says whether ``expm1`` gives the raw
    counts themselves or per-cell normalised values, and whether its row sums are constant (≈10,000 is
    log1p CP10k);
  - base 2 or 10: ``log1p`` with ``log_base`` 2 / 10. ``log_b(1 + y) * ln(b) == ln(1 + y)``, so these are
    converted exactly to natural log1p by `to_model_input` (pass it the report, or ``log_base=``);
  - no pattern: max <= 30 is taken as natural log1p (with a warning), above that as ``normalized``.

Genes absent from the query are zero columns (after alignment), and zeros stay zeros in every transform.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .errors import ValuesError

__all__ = ["ValueReport", "detect_values", "to_model_input", "log1p_normalized", "library_size_normalize", "KINDS",
           "CP10K"]

log = logging.getLogger("gsrcl.values")

KINDS = ("counts", "log1p", "normalized", "scaled")
CP10K = 10_000  # counts per 10,000: the library size of log1p CP10k, the default presets' and the novelty score's
INTEGER_TOL = 1e-6
LOG_MAX = 30.0  # without a recognised pattern, a larger max is taken as not logged
_PATTERN_TOL = 0.01  # |ratio - round(ratio)| for a value to count as an integer multiple
_PATTERN_MIN = 0.9  # median per-row share of integer multiples needed to recognise a transform
_BASE_NAMES = {math.e: "natural log1p", 2.0: "log2(1+x)", 10.0: "log10(1+x)"}


@dataclass(frozen=True)
class ValueReport:
    """What `detect_values` found. ``min``/``max`` are over the sampled rows (implicit zeros included),
    ``integer_fraction`` over their non-zero values. ``log_base`` is e, 2 or 10 for ``log1p`` values (None
    otherwise); ``warn`` is True when the message should be shown as a warning."""

    kind: str
    message: str
    min: float
    max: float
    integer_fraction: float
    rows_checked: int
    log_base: float | None = None
    warn: bool = False


def _sample(X, sample_rows: int, seed: int) -> sp.csr_matrix:
    """Up to ``sample_rows`` rows among those with a stored value, as CSR float64 without explicit zeros."""
    if sp.issparse(X):
        X = X.tocsr() if X.format != "csr" else X
        rows = np.flatnonzero(np.diff(X.indptr) > 0)
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValuesError(f"the expression matrix has {X.ndim} dimensions, expected 2 (cells x genes)")
        rows = np.arange(X.shape[0])
        sample_rows = min(sample_rows, 500)  # dense input is unusual; converting it is the slow part
    if rows.size > sample_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample_rows, replace=False))
    S = sp.csr_matrix(X[rows], dtype=np.float64)
    S.eliminate_zeros()
    return S[np.diff(S.indptr) > 0]


def _row_ids(S: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(S.shape[0]), np.diff(S.indptr))


def _multiple_share(y: np.ndarray, S: sp.csr_matrix) -> float:
    """Median over rows of the share of values that are integer multiples of the row's smallest value
    (ratios 1.5..50 only: 1 is trivially integral, large ratios are imprecise); 0 when no row qualifies."""
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        return 0.0
    nonempty = np.diff(S.indptr) > 0
    starts = S.indptr[:-1][nonempty]
    mins = np.minimum.reduceat(y, starts)
    rid = np.repeat(np.arange(starts.size), np.diff(S.indptr)[nonempty])
    r = y / mins[rid]
    usable = (r > 1.5) & (r <= 50)
    hit = usable & (np.abs(r - np.rint(r)) < _PATTERN_TOL)
    n_usable = np.bincount(rid, weights=usable, minlength=starts.size)
    n_hit = np.bincount(rid, weights=hit, minlength=starts.size)
    good = n_usable >= 3
    if not good.any():
        return 0.0
    return float(np.median(n_hit[good] / n_usable[good]))


def _row_sum_note(y: np.ndarray, S: sp.csr_matrix, what: str) -> str:
    sums = np.bincount(_row_ids(S), weights=y, minlength=S.shape[0])
    sums = sums[np.diff(S.indptr) > 0]
    mean = float(sums.mean())
    if sums.size >= 2 and float(sums.std()) <= 1e-3 * mean:
        tag = next((t for v, t in ((CP10K, " (CP10k)"), (1e6, " (CPM)")) if abs(mean - v) <= 0.01 * v), "")
        return f"{what} row sums constant at ≈{mean:,.0f}{tag}"
    return f"{what} row sums vary from {sums.min():,.0f} to {sums.max():,.0f} (a gene subset or another normalisation)"


def detect_values(X, sample_rows: int = 2000, seed: int = 0) -> ValueReport:
    """Classify the values of ``X`` from a sample of its non-empty rows (the rules: the module docstring).

    Parameters
    ----------
    X : sparse matrix or numpy.ndarray
        Cells x genes.
    sample_rows : int
        The most rows looked at (500 for dense input).
    seed : int
        The seed of the row sample.

    Returns
    -------
    ValueReport

    Raises
    ------
    ValuesError
        For a matrix that is not 2-D, holds only zeros, or holds NaN or infinite values.
    """
    S = _sample(X, sample_rows, seed)
    rows_checked = S.shape[0]
    x = S.data
    if x.size == 0:
        raise ValuesError("the expression matrix holds only zeros: check the file, layer (--layer) or matrix key (-mat)")
    if not np.all(np.isfinite(x)):
        raise ValuesError("the expression matrix holds NaN or infinite values: give raw counts or log1p values")
    has_zeros = S.nnz < S.shape[0] * S.shape[1]
    vmin = min(float(x.min()), 0.0) if has_zeros else float(x.min())
    vmax = max(float(x.max()), 0.0) if has_zeros else float(x.max())
    int_frac = float(np.mean(np.abs(x - np.rint(x)) <= INTEGER_TOL))

    def report(kind, message, *, base=None, warn=False):
        return ValueReport(kind, message, vmin, vmax, int_frac, rows_checked, base, warn)

    if vmin < 0:
        return report("scaled", f"values include negatives (min {vmin:.3g}): the matrix looks scaled or centred "
                      "(z-scores), which the model cannot use; give raw counts or log1p values instead "
                      "(e.g. .raw or a counts layer)", warn=True)
    if int_frac == 1.0:
        return report("counts", f"values are raw counts (all integral, max {vmax:.0f}): the model takes their log1p")

    # The per-cell pattern is clear from a few hundred rows.
    P = S[:: max(1, S.shape[0] // 500)]
    p = P.data
    shares = {None: _multiple_share(p, P)}
    if vmax <= 100:  # 10**100 still fits a float64; larger values are not logs of counts
        with np.errstate(over="ignore"):
            for base in (math.e, 2.0, 10.0):
                shares[base] = _multiple_share(np.expm1(p * math.log(base)), P)
    best = max(shares, key=lambda b: shares[b])
    if shares[best] < _PATTERN_MIN:
        if vmax <= LOG_MAX:
            return report("log1p", f"values look log-transformed (non-integer, max {vmax:.3g}) but no log base "
                          "gives back counts times a per-cell factor; taken as natural log1p and used as they are",
                          base=math.e, warn=True)
        return report("normalized", f"values are non-integer and not logged (max {vmax:.4g}; CPM/TPM-like?): "
                      "the model takes their log1p; give raw counts if you have them", warn=True)
    if best is None:
        return report("normalized", f"values are per-cell normalised counts, not logged, max {vmax:.4g}; "
                      f"{_row_sum_note(p, P, 'their')}: the model takes their log1p; give raw counts if you "
                      "have them", warn=True)

    y = np.expm1(p * math.log(best))
    integral = float(np.mean(np.abs(y - np.rint(y)) <= 1e-3 * np.maximum(1.0, y))) >= 0.999
    inverse = "expm1" if best == math.e else f"{best:g}**x - 1"
    if integral:
        found = f"{_BASE_NAMES[best]} of raw counts ({inverse} gives integers), max {vmax:.3g}"
    else:
        found = f"{_BASE_NAMES[best]} of per-cell normalised counts, max {vmax:.3g}; {_row_sum_note(y, P, inverse)}"
    if best == math.e:
        return report("log1p", f"values are {found}: used as they are", base=best)
    return report("log1p", f"values are {found}: they are converted to natural log1p (x * ln {best:g})",
                  base=best, warn=True)


def to_model_input(X, kind: str | ValueReport, *, log_base: float | None = None,
                   copy: bool = True) -> sp.csr_matrix:
    """``X`` on the natural log1p scale (CSR float32): log1p of counts and normalised values, log1p values as
    they are (other log bases converted exactly). Zeros stay zeros; no dense copy.

    Parameters
    ----------
    X : sparse matrix or numpy.ndarray
        Cells x genes.
    kind : str or ValueReport
        One of `KINDS`, or the `ValueReport` of ``X``, which also gives ``log_base``.
    log_base : float, optional
        The log base of ``log1p`` values (None: natural).
    copy : bool
        False: ``X`` itself is transformed when it is CSR float32 already (a copy is made otherwise).

    Raises
    ------
    ValueError
        For an unknown kind.
    ValuesError
        For ``scaled`` values, which the model cannot use.
    """
    if isinstance(kind, ValueReport):
        log_base = kind.log_base if log_base is None else log_base
        kind = kind.kind
    if kind not in KINDS:
        raise ValueError(f"unknown value kind {kind!r}; expected one of {KINDS}")
    if kind == "scaled":
        raise ValuesError("the values are scaled or centred (negative values): the model needs raw counts or "
                          "log1p values; give the counts (e.g. .raw or a counts layer)")
    out = sp.csr_matrix(X, dtype=np.float32, copy=copy)
    if kind in ("counts", "normalized"):
        np.log1p(out.data, out=out.data)
    elif log_base is not None and log_base != math.e:
        out.data *= np.float32(math.log(log_base))
    return out


LOG_INPUT_MAX = 50.0  # model input clipped here before expm1 (e**50 is far above any count, below float32's max)


def log1p_normalized(Xm, target: float = CP10K, copy: bool = True) -> sp.csr_matrix:
    """log1p of each cell's values scaled to sum to ``target`` (log1p CP10k by default), from values on the
    natural log1p scale (CSR float32). Idempotent up to float rounding: values normalised already come back
    nearly unchanged. Values above `LOG_INPUT_MAX` are clipped first (counts declared as logged would overflow).
    ``copy=False``: ``Xm`` itself is transformed when it is CSR float32 already."""
    X = sp.csr_matrix(Xm, dtype=np.float32, copy=copy)
    np.minimum(X.data, LOG_INPUT_MAX, out=X.data)  # counts declared as logged would overflow float32
    np.expm1(X.data, out=X.data)
    X = library_size_normalize(X, target, copy=False)
    np.log1p(X.data, out=X.data)
    return X


SCALE_ROWS = 4096  # rows scaled at a time: the per-value factors of a block, not of the whole matrix


def library_size_normalize(X, target: float = CP10K, copy: bool = True) -> sp.csr_matrix:
    """Each row of ``X`` scaled to sum to ``target`` (CSR float32; all-zero rows stay zero). ``copy=False``:
    ``X`` itself is scaled when it is CSR float32 already."""
    out = sp.csr_matrix(X, dtype=np.float32, copy=copy)
    sums = np.asarray(out.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(target, sums, out=np.zeros_like(sums), where=sums > 0)
    indptr = out.indptr
    for start in range(0, out.shape[0], SCALE_ROWS):
        stop = min(start + SCALE_ROWS, out.shape[0])
        factors = np.repeat(scale[start:stop], np.diff(indptr[start:stop + 1])).astype(np.float32)
        out.data[indptr[start]:indptr[stop]] *= factors
    return out
