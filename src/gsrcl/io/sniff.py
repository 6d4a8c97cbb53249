"""What kind of input a path is, judged by its content (signature bytes), not by libmagic or the extension."""

from __future__ import annotations

import gzip
import os
import re
import zlib
from contextlib import contextmanager
from pathlib import Path

import h5py

from ..errors import CorruptFileError, MissingPathError, NotReadableError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
# HDF5 allows a user block of 512 * 2**k bytes before the superblock.
_SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384)
_HDF5_SUFFIXES = {".h5", ".h5ad", ".hdf5", ".hdf", ".loom", ".he5"}
_TEXT_HINT = "use h5ad, 10x HDF5 or matrix folder, loom, another HDF5 file, or a CSV/TSV table (optionally .gz)"


def is_hdf5(path: Path) -> bool:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        for offset in _SIGNATURE_OFFSETS:
            if offset + len(HDF5_SIGNATURE) > size:
                break
            fh.seek(offset)
            if fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
    return False


def _looks_like_text(sample: bytes) -> bool:
    if not sample or b"\x00" in sample:
        return False
    text = sample.decode("utf-8", errors="replace")
    return text.count("\ufffd") <= max(2, len(text) // 100)


def check_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"{path} does not exist: check the input path")
    return path


def sniff(path: str | os.PathLike) -> str:
    """``"dir"``, ``"hdf5"`` or ``"text"`` (plain or gzip); anything else raises NotReadableError."""
    path = check_path(path)
    if path.is_dir():
        return "dir"
    if not os.access(path, os.R_OK):
        raise NotReadableError(f"{path} cannot be read (permission denied): check its permissions")
    if path.stat().st_size == 0:
        raise NotReadableError(f"{path} is empty (0 bytes): {_TEXT_HINT}")
    if is_hdf5(path):
        return "hdf5"
    if path.suffix.lower() in _HDF5_SUFFIXES:
        raise NotReadableError(
            f"{path} has an HDF5 extension but no HDF5 signature: it is not an HDF5 file (or is damaged); export it again"
        )
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(1 << 16)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFileError(f"{path} is a damaged gzip file ({exc}): compress it again") from None
    if not _looks_like_text(head):
        raise NotReadableError(f"{path} is neither an HDF5 file nor a text table: {_TEXT_HINT}")
    return "text"


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    found = re.search(r"\(([^()]*)\)\s*$", text)
    return found.group(1) if found else text


@contextmanager
def open_h5(path: str | os.PathLike):
    """Open an HDF5 file read-only; damage found while opening or reading becomes CorruptFileError."""
    path = check_path(path)
    if path.is_dir() or not is_hdf5(path):
        raise NotReadableError(f"{path} is not an HDF5 file (no HDF5 signature)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CorruptFileError(
            f"{path} cannot be opened as HDF5 ({_reason(exc)}): the file is truncated or corrupt; copy or export it again"
        ) from None
    try:
        yield f
    except OSError as exc:
        raise CorruptFileError(
            f"{path}: reading failed ({_reason(exc)}): the file is truncated or corrupt; copy or export it again"
        ) from None
    finally:
        f.close()
