"""An upload streamed to disk under a size limit, and the zip archive of a 10x matrix folder unpacked safely.

The client's file name is kept for display only: the file is written as ``input/query`` plus a suffix from a
fixed list (`SUFFIXES`), chosen by the name's ending, so nothing the client sends becomes a path. The multipart
body is parsed as it arrives (python-multipart's streaming parser), and an upload is refused as soon as it passes
the limit, before it can fill the disk.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path, PurePosixPath

from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import NotReadableError, UnsafeFileError

# Name endings kept (the readers judge a file by its content; a suffix only keeps `.mtx`-style names working).
SUFFIXES = (".h5ad", ".h5", ".hdf5", ".loom", ".csv.gz", ".tsv.gz", ".txt.gz", ".csv", ".tsv", ".txt", ".zip",
            ".mtx.gz", ".mtx", ".gz")
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 16
TENX_NAMES = ("matrix.mtx.gz", "matrix.mtx", "features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv",
              "barcodes.tsv.gz", "barcodes.tsv")
MAX_UNZIPPED_RATIO = 200  # a member may unpack to at most this many times the archive's size (zip bombs)


class UploadRefused(Exception):
    """An upload the server does not take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def display_name(name: str) -> str:
    """The client's file name, for display: its last path part, printable characters, at most 200 of them."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    return "".join(ch for ch in base if ch.isprintable())[:200] or "upload"


def stored_name(name: str) -> str:
    """``query`` plus the suffix of `SUFFIXES` that ``name`` ends with (none otherwise)."""
    lower = str(name).lower()
    return "query" + next((s for s in SUFFIXES if lower.endswith(s)), "")


class MultipartUpload:
    """Parses one multipart/form-data body as it streams: text fields into `fields`, the one file part (field
    ``file``) into ``folder/stored_name(filename)``; refuses a body past ``limit`` bytes of file."""

    def __init__(self, content_type: str, folder: Path, limit: int):
        ctype, options = parse_options_header(content_type or "")
        boundary = options.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            raise UploadRefused("send the query as multipart/form-data with a 'file' part", 415)
        self.folder, self.limit = folder, limit
        self.fields: dict[str, str] = {}
        self.file_name: str | None = None
        self.file_path: Path | None = None
        self.size = 0
        self._headers: dict[bytes, bytes] = {}
        self._field, self._value = b"", b""
        self._part: dict | None = None
        self._out = None
        self._error: UploadRefused | None = None
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": self._hfield, "on_header_value": self._hvalue, "on_header_end": self._hend,
            "on_headers_finished": self._headers_done,
        })

    # --- parser callbacks ------------------------------------------------------------------------------------
    def _begin(self) -> None:
        self._headers, self._part = {}, None
        self._field, self._value = b"", b""

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None and name == "file":
            if self.file_path is not None:
                return self._refuse(UploadRefused("send one file per job"))
            self.file_name = display_name(filename.decode("utf-8", "replace"))
            self.file_path = self.folder / stored_name(self.file_name)
            self._out = open(self.file_path, "xb")
            self._part = {"file": True}
        else:
            if len(self.fields) >= MAX_FIELDS:
                return self._refuse(UploadRefused("too many form fields"))
            self._part = {"file": False, "name": name, "data": bytearray()}

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._error is not None or self._part is None:
            return
        if self._part["file"]:
            self.size += end - start
            if self.size > self.limit:
                return self._refuse(UploadRefused(
                    f"the upload is larger than this server's limit of {self.limit / (1 << 20):g} MB "
                    "(gsrcl serve --max-upload-mb)", 413))
            self._out.write(data[start:end])
        else:
            self._part["data"] += data[start:end]
            if len(self._part["data"]) > MAX_FIELD_BYTES:
                self._refuse(UploadRefused(f"form field {self._part['name']!r} is too long"))

    def _end(self) -> None:
        if self._part is not None and not self._part["file"] and self._error is None:
            self.fields[self._part["name"]] = self._part["data"].decode("utf-8", "replace")
        self._part = None

    def _refuse(self, error: UploadRefused) -> None:
        if self._error is None:
            self._error = error

    # --- driving it ------------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """Parse the next piece of the body; raises `UploadRefused` as soon as the body is refused."""
        try:
            self.parser.write(chunk)
        except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
            if self._error is None:
                self._error = UploadRefused(f"the upload is not valid multipart/form-data ({exc})")
        if self._error is not None:
            self.close()
            raise self._error

    def finish(self) -> None:
        try:
            self.parser.finalize()
        finally:
            self.close()
        if self.file_path is None:
            raise UploadRefused("no file: send the query in a form field named 'file'")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def unpack_10x_zip(archive: Path, folder: Path, shown_as: str) -> Path:
    """Unpack the 10x matrix folder in a zip archive into ``folder`` (created), under the 10x names only.

    Only members named as a 10x folder's files (`TENX_NAMES`) are written, under their own names, into one
    folder: the archive's paths are never used. A member whose path is absolute or holds '..', or a link, makes
    the whole archive refused, as does more than one matrix folder or a member that unpacks too large.

    Raises
    ------
    UnsafeFileError
        For a member that would escape the folder, a link, or a member too large to be a plausible 10x file.
    NotReadableError
        For an archive that is not a zip, or holds no matrix folder or more than one.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotReadableError(f"{shown_as} is not a readable zip archive ({exc}): zip the 10x matrix folder again") from None
    limit = max(archive.stat().st_size, 1 << 20) * MAX_UNZIPPED_RATIO
    with zf:
        picked: dict[str, zipfile.ZipInfo] = {}
        parents = set()
        for info in zf.infolist():
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and parts[0].endswith(":")):
                raise UnsafeFileError(f"{shown_as}: the member {name!r} would be written outside the folder: "
                                      "zip the matrix folder itself")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeFileError(f"{shown_as}: the member {name!r} is a link: zip the files themselves")
            base = PurePosixPath(name).name
            if info.is_dir() or base not in TENX_NAMES or "__MACOSX" in parts:
                continue
            if info.file_size > limit:
                raise UnsafeFileError(f"{shown_as}: the member {name!r} unpacks to {info.file_size} bytes: too large")
            parents.add(str(PurePosixPath(name).parent))
            picked[base] = info
        if not any(n.startswith("matrix.mtx") for n in picked):
            raise NotReadableError(f"{shown_as} holds no 10x matrix folder (matrix.mtx[.gz], features.tsv[.gz] or "
                                  "genes.tsv[.gz], barcodes.tsv[.gz]): a zip must hold one such folder")
        if len(parents) > 1:
            raise NotReadableError(f"{shown_as} holds more than one matrix folder: upload one at a time")
        folder.mkdir(parents=True, exist_ok=False)
        for base, info in picked.items():
            written = 0
            with zf.open(info) as src, open(folder / base, "xb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > limit:  # the header's size is not to be trusted
                        raise UnsafeFileError(f"{shown_as}: the member {info.filename!r} unpacks too large")
                    dst.write(chunk)
    os.chmod(folder, 0o700)
    return folder
