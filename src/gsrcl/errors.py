"""Errors that reach the user as one line and a documented exit code.

The codes 128-140 keep the meaning they had in the original GsRCL tool (docs/methods.md §1-2), so wrappers
written for it keep working; 141 and above are new. The README's "Exit codes" table lists them all;
``tests/test_cli.py`` checks that it matches ``ALL_ERRORS``.
"""

from __future__ import annotations


class GsrclError(Exception):
    """A problem the user can fix. `message` is one line; `detail` (optional) is printed after it."""

    exit_code = 1
    what = "error"

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail


def _error(name: str, code: int, what: str) -> type[GsrclError]:
    cls = type(name, (GsrclError,), {"exit_code": code, "what": what})
    cls.__module__ = __name__
    return cls


NotReadableError = _error("NotReadableError", 128, "the file is neither HDF5 nor a text table we can read")
EmptyFileError = _error("EmptyFileError", 129, "the HDF5 file holds no keys")
LayoutError = _error("LayoutError", 130, "the HDF5 layout is not recognised and no key paths were given")
ShapeMismatchError = _error("ShapeMismatchError", 131, "the number of names does not match the matrix")
GeneNamesError = _error("GeneNamesError", 132, "gene names not found at the default places")
GeneKeyError = _error("GeneKeyError", 133, "the gene-name key path (-var) does not resolve")
BarcodesError = _error("BarcodesError", 134, "cell barcodes not found at the default places")
BarcodeKeyError = _error("BarcodeKeyError", 135, "the barcode key path (-obs) does not resolve")
MatrixError = _error("MatrixError", 136, "the expression matrix was not found at the default places")
MatrixKeyError = _error("MatrixKeyError", 137, "the matrix key path (-mat) does not resolve")
DuplicateGenesError = _error("DuplicateGenesError", 138, "gene names are not unique")
GeneOverlapError = _error("GeneOverlapError", 139, "50% or fewer of the query genes are in the reference")
PredictionError = _error("PredictionError", 140, "prediction failed")
MissingPathError = _error("MissingPathError", 141, "the input path does not exist")
CorruptFileError = _error("CorruptFileError", 142, "the file is truncated or corrupt")
ValuesError = _error("ValuesError", 143, "the matrix values are unusable (empty, NaN/inf, negative counts, not numeric)")
NamesError = _error("NamesError", 144, "cell barcodes are duplicated or names are not strings")
ReferenceError_ = _error("ReferenceError", 145, "the reference is missing, invalid, tampered with or too new")
OutputError = _error("OutputError", 146, "the output exists already (use --overwrite) or cannot be written")
LabelsError = _error("LabelsError", 147, "training labels are missing or unusable")

# An alias that does not shadow Python's built-in ReferenceError.
InvalidReferenceError = ReferenceError_

ALL_ERRORS: list[type[GsrclError]] = sorted(
    (v for v in list(globals().values()) if isinstance(v, type) and issubclass(v, GsrclError) and v is not GsrclError),
    key=lambda c: c.exit_code,
)
ALL_ERRORS = list(dict.fromkeys(ALL_ERRORS))
