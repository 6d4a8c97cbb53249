"""Errors that reach the user as one line and a documented exit code.

Every documented code is below 126, so that a shell, Slurm, Nextflow or Snakemake never reads one as "killed by
signal N" (128 + N) or as "not executable"/"not found" (126, 127). The codes 64-83 are the earlier ones
(128-147, which followed the original GsRCL tool, docs/methods.md §1-2) minus 64, in the same order; 84 and up
are new. ``GsrclError`` itself, raised for a bad setting, has its own code. The README's "Exit codes" table lists
every code with its old number; ``tests/test_cli.py`` checks it against ``ALL_ERRORS`` and the constants below.
"""

from __future__ import annotations

EXIT_INTERNAL = 1
"""An unexpected internal error (Python prints a traceback): a bug to report."""
EXIT_USAGE = 2
"""Wrong command-line usage (argparse's code)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT): 128 + 2, the shells' code for a run stopped by that signal, which it is."""


class GsrclError(Exception):
    """A problem the user can fix. `message` is one line; `detail` (optional) is printed after it.

    Raised as it is for a bad setting (an unknown method, preset or parameter, a value out of range, ``--config``
    that is not JSON, a device or optional package that is missing); its subclasses name the other problems, each
    with its own exit code.
    """

    exit_code = 85
    what = "unusable setting"
    old_code: int | None = 1

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail


def _error(name: str, code: int, what: str, old: int | None = None) -> type[GsrclError]:
    cls = type(name, (GsrclError,), {"exit_code": code, "what": what, "old_code": old})
    cls.__module__ = __name__
    return cls


NotReadableError = _error("NotReadableError", 64, "not HDF5 nor a readable text table", 128)
EmptyFileError = _error("EmptyFileError", 65, "the HDF5 file holds no keys", 129)
LayoutError = _error("LayoutError", 66, "HDF5 layout not recognised, no key paths given", 130)
ShapeMismatchError = _error("ShapeMismatchError", 67, "names do not match the matrix's size", 131)
GeneNamesError = _error("GeneNamesError", 68, "gene names not found", 132)
GeneKeyError = _error("GeneKeyError", 69, "-var key path does not resolve", 133)
BarcodesError = _error("BarcodesError", 70, "cell barcodes not found", 134)
BarcodeKeyError = _error("BarcodeKeyError", 71, "-obs key path does not resolve", 135)
MatrixError = _error("MatrixError", 72, "expression matrix not found", 136)
MatrixKeyError = _error("MatrixKeyError", 73, "-mat key path does not resolve", 137)
DuplicateGenesError = _error("DuplicateGenesError", 74, "gene names are not unique", 138)
GeneOverlapError = _error("GeneOverlapError", 75,
                          "at most 50% of query genes in the reference and of reference genes in the query", 139)
PredictionError = _error("PredictionError", 76, "prediction failed", 140)
MissingPathError = _error("MissingPathError", 77, "the input path does not exist", 141)
CorruptFileError = _error("CorruptFileError", 78, "the file is truncated or corrupt", 142)
ValuesError = _error("ValuesError", 79, "unusable values (empty, NaN/inf, negative, not numeric)",
                     143)
NamesError = _error("NamesError", 80, "duplicated barcodes or non-string names", 144)
ReferenceError_ = _error("ReferenceError", 81, "reference missing, invalid, tampered with or too new", 145)
OutputError = _error("OutputError", 82, "output exists (use --overwrite) or cannot be written", 146)
LabelsError = _error("LabelsError", 83, "training labels missing or unusable", 147)
DiskFullError = _error("DiskFullError", 84, "disk full or over quota")
OutOfMemoryError = _error("OutOfMemoryError", 86, "out of memory", 1)
DownloadError = _error("DownloadError", 87,
                       "a download failed (offline, HTTP error, or not the expected archive)")
UnsafeFileError = _error("UnsafeFileError", 88,
                         "a file would run code or escape its folder if read (refused, nothing read)")
SchedulerError = _error("SchedulerError", 89,
                        "the Dask scheduler cannot be reached, or the cluster failed (nothing written)")

# An alias that does not shadow Python's built-in ReferenceError.
InvalidReferenceError = ReferenceError_

ALL_ERRORS: list[type[GsrclError]] = sorted(
    dict.fromkeys(v for v in list(globals().values()) if isinstance(v, type) and issubclass(v, GsrclError)),
    key=lambda c: c.exit_code,
)
"""Every error class, ``GsrclError`` included, by exit code."""
