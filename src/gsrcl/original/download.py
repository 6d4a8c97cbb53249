"""A published reference fetched by name and imported (``gsrcl references download``).

Where from: ``BASE/<archive>`` when a base address is given (``--url``, else the environment variable
``GSRCL_REFERENCES_URL``: a lab's mirror, or a test's loopback server), else the published record's address
(`gsrcl.original.published`). Only ``http://`` and ``https://`` addresses are used.

How: the archive is written into a cache folder outside REFDIR (`cache_dir`: ``$GSRCL_CACHE``, else
``~/.cache/gsrcl/downloads``), as ``<archive>.part`` while it arrives. A transfer that breaks off is resumed
with an HTTP ``Range`` request, within the run (a few times while bytes keep coming) and by the next run of the
same command. The whole archive is then checked: its size and sha256 where the table knows them, and every zip
member's CRC. A corrupt or unexpected archive is removed at once. It is imported by
`gsrcl.original.importer.import_original`, which writes REFDIR/NAME atomically, and removed after the import.
Nothing is written under REFDIR but by that import, so a failed download leaves REFDIR as it was.

Every failure to fetch is one `DownloadError` line naming the address and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..atomic import is_disk_full
from ..manifest import file_sha256
from ..errors import DiskFullError, DownloadError, GsrclError, OutputError
from ..reference import check_target
from .published import METHODS, PublishedReference, find

log = logging.getLogger("gsrcl.original.download")

ENV_URL = "GSRCL_REFERENCES_URL"
"""The environment variable naming a mirror's base address (``--url`` wins over it)."""
ENV_CACHE = "GSRCL_CACHE"
"""The environment variable naming the folder that holds downloads while they arrive."""

TIMEOUT = 30.0
"""Seconds allowed to connect, and between two reads of a transfer."""
CHUNK = 1 << 20
STALLS = 3
"""Connections in a row that bring no new byte, after which a run gives up (the next run resumes)."""
BACKOFF = 1.0
"""Seconds waited before reconnecting, times the number of connections in a row without a new byte."""

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


# --- where from, where to ----------------------------------------------------------------------------------
def base_url(url: str | None = None) -> str | None:
    """The base address archives are fetched from: ``url`` (``--url``), else ``$GSRCL_REFERENCES_URL``, else None
    (each reference's published address).

    Raises
    ------
    GsrclError
        For an address that is not ``http://`` or ``https://`` with a host, or that holds a query or fragment.
    """
    what = "--url"
    if url is None:
        url, what = os.environ.get(ENV_URL) or None, ENV_URL
    if url is None:
        return None
    text = url.strip()
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise GsrclError(
            f"{what} {url!r} is not an http:// or https:// address of a mirror; for an archive on disk run "
            "'gsrcl import -i ARCHIVE -r NAME -mp REFDIR'"
        )
    if parts.query or parts.fragment:
        raise GsrclError(f"{what} {url!r} holds a query or fragment: give the folder address, the archive names "
                         "are added to it")
    return text.rstrip("/")


def archive_url(ref: PublishedReference, base: str | None) -> str:
    """Where ``ref``'s archive is fetched from: ``base/<archive>``, else its published address.

    Raises
    ------
    DownloadError
        Without ``base`` for a reference whose published address is not known (AF-RCL's).
    """
    if base is not None:
        return f"{base}/{urllib.parse.quote(ref.archive)}"
    if ref.record_url is None:
        raise DownloadError(
            f"the addresses of the files in the {ref.method} record ({ref.record}) are not known to gsrcl: "
            f"download {ref.name}'s archive from there by hand and run 'gsrcl import -i ARCHIVE -r {ref.name} "
            f"-mp REFDIR --method {ref.method}', or pass --url (or set {ENV_URL}) to a mirror that serves "
            f"BASE/{ref.archive}"
        )
    return ref.record_url


def cache_dir(refdir: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """The folder downloads are written to while they arrive, created if needed: ``cache``, else
    ``$GSRCL_CACHE``, else ``$XDG_CACHE_HOME/gsrcl/downloads`` (``~/.cache/gsrcl/downloads``).

    Raises
    ------
    GsrclError
        For a folder inside ``refdir`` (a download must leave nothing there).
    OutputError, DiskFullError
        For a folder that cannot be created.
    """
    if cache is None:
        cache = os.environ.get(ENV_CACHE) or None
    if cache is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gsrcl" / "downloads"
    folder = Path(cache).expanduser().absolute()
    if folder.resolve().is_relative_to(Path(refdir).expanduser().resolve()):
        raise GsrclError(f"the download folder {folder} is inside the reference folder {refdir}: set {ENV_CACHE} "
                         "to a folder elsewhere")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(exc, folder) from None
    return folder


def _slot(folder: Path, ref: PublishedReference, url: str) -> Path:
    """The folder of one download: one per reference and address, so that bytes of two servers never mix."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return folder / f"{ref.method}-{ref.name}-{digest}"


def _write_error(exc: OSError, folder: Path) -> GsrclError:
    if is_disk_full(exc):
        return DiskFullError(f"the disk holding {folder} is full (or over its quota): free some space, or set "
                             f"{ENV_CACHE} to a folder on another disk")
    return OutputError(f"cannot write the download to {folder}: {exc.strerror or exc}; set {ENV_CACHE} to a "
                       "writable folder")


# --- fetching ----------------------------------------------------------------------------------------------
def _advice() -> str:
    return ("try again later, use --url for a mirror, or download the archive by hand and run "
            "'gsrcl import -i ARCHIVE -r NAME -mp REFDIR'")


def _unreachable(url: str, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, socket.gaierror):
        why = "the host name could not be resolved (offline?)"
    elif isinstance(reason, ConnectionRefusedError):
        why = "the connection was refused"
    elif isinstance(reason, (TimeoutError, socket.timeout)):
        why = "the server did not answer in time"
    else:
        why = str(getattr(reason, "strerror", None) or reason) or type(reason).__name__
    return DownloadError(f"cannot reach {url}: {why}; {_advice()}")


def _http_error(url: str, exc: urllib.error.HTTPError) -> DownloadError:
    status = f"HTTP {exc.code} {exc.reason}".strip()
    if exc.code in (404, 410):
        return DownloadError(f"{url} answered {status}: the server does not hold this archive; check --url (a "
                             "mirror serves BASE/<archive>), or download the archive by hand and run "
                             "'gsrcl import -i ARCHIVE -r NAME -mp REFDIR'")
    return DownloadError(f"{url} answered {status}; {_advice()}")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of a ``Content-Range`` header; None for what it does not give."""
    m = _CONTENT_RANGE.match(value or "")
    if m is None:
        return None, None
    first = int(m[1]) if m[1] is not None else None
    total = int(m[3]) if m[3] != "*" else None
    return first, total


def _opener() -> urllib.request.OpenerDirector:
    """urllib with its HTTP(S) handlers only (proxies from the environment, redirects): a redirect to another
    scheme (``ftp:``, ``file:``) fails instead of being followed."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


class _Restart(Exception):
    """The partial file does not continue the server's file: fetch it from the start."""


def _transfer(url: str, fh, have: int, bar, size: int | None, timeout: float) -> tuple[int, bool]:
    """One connection: append what the server sends after byte ``have`` to ``fh``.

    Returns the bytes held afterwards and whether the file is complete. A connection that breaks off returns
    early; a failure to connect or an HTTP error raises `DownloadError`.
    """
    headers = {"User-Agent": f"gsrcl/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            if exc.code == 416 and have:  # nothing after byte `have`: complete, or not this file
                _, total = _content_range(exc.headers.get("Content-Range"))
                if total == have:
                    return have, True
                raise _Restart from None
            raise _http_error(url, exc) from None
        finally:
            with contextlib.suppress(Exception):
                exc.close()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _unreachable(url, exc) from None
    with response:
        if response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                raise _Restart
        elif response.status == 200:
            if have:  # the server ignored the range: it sends the whole file
                fh.truncate(0)
                bar.reset()
                have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{url} answered HTTP {response.status} {response.reason} instead of the archive; "
                                f"{_advice()}")
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url} serves {total} bytes where the published archive has {size}: it is not the "
                                f"expected archive; {_advice()}")
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        try:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                _append(fh, chunk)
                have += len(chunk)
                bar.update(len(chunk))
                if total is not None and have > total:
                    raise DownloadError(f"{url} sent more bytes than it announced ({total}); {_advice()}")
        except (OSError, http.client.HTTPException) as exc:  # broken off (a timeout included): resumed
            log.debug("transfer from %s broke off after %d bytes: %s", url, have, exc)
            return have, False
    return have, total is None or have == total


def _append(fh, chunk: bytes) -> None:
    try:
        fh.write(chunk)
    except OSError as exc:
        raise _write_error(exc, Path(fh.name).parent) from None


def _size(fh) -> int:
    """The bytes of the open file ``fh`` on disk (what a rerun resumes from)."""
    with contextlib.suppress(OSError):
        fh.flush()
    return os.fstat(fh.fileno()).st_size


def _lock(fh, path: Path) -> None:
    """Hold ``path`` for this process: two runs fetching the same archive would interleave their bytes."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        err = DownloadError(f"another gsrcl is downloading {path.name} into {path.parent}: wait for it to end, or "
                            f"set {ENV_CACHE} to another folder")
        err.busy = True  # the file is the other run's: left alone
        raise err from None


def fetch(url: str, part: Path, *, size: int | None = None, quiet: bool = False, desc: str = "",
          timeout: float = TIMEOUT) -> int:
    """Bring ``part`` to the whole file at ``url``, continuing from the bytes it holds, with a progress bar.

    Parameters
    ----------
    url : str
        An ``http://`` or ``https://`` address.
    part : pathlib.Path
        The file being downloaded; created when missing, kept (for the next run) when the transfer fails.
    size : int, optional
        The file's size in bytes when it is known: a server announcing another size is refused.
    quiet : bool
        No progress bar.
    desc : str
        The progress bar's label.
    timeout : float
        Seconds allowed to connect, and between two reads.

    Returns
    -------
    int
        The file's size.

    Raises
    ------
    DownloadError
        The server cannot be reached, answers an HTTP error or another size, or keeps breaking the transfer off.
    DiskFullError, OutputError
        ``part`` cannot be written.
    """
    from tqdm.auto import tqdm

    try:
        fh = open(part, "ab")
    except OSError as exc:
        raise _write_error(exc, part.parent) from None
    with fh:
        _lock(fh, part)
        have = _size(fh)
        if size is not None and have > size:
            fh.truncate(0)
            have = 0
        if size is not None and have == size:
            return have
        bar = tqdm(total=size, initial=have, unit="B", unit_scale=True, desc=desc or part.name, disable=quiet,
                   leave=False, dynamic_ncols=True)
        stalls = 0
        try:
            while True:
                before = have
                try:
                    have, complete = _transfer(url, fh, have, bar, size, timeout)
                except DownloadError as exc:
                    kept = _size(fh)
                    if kept:
                        exc.detail = _join(exc.detail, f"The {kept} bytes received are kept in {part.parent}: the "
                                                       "same command resumes the transfer.")
                    raise
                except _Restart:
                    log.debug("%s does not continue %s: fetching it from the start", part.name, url)
                    fh.truncate(0)
                    bar.reset()
                    have, complete = 0, False
                if complete:
                    return have
                stalls = 0 if have > before else stalls + 1
                if stalls >= STALLS:
                    raise DownloadError(
                        f"the transfer from {url} kept breaking off ({have} bytes so far, kept in {part.parent}): "
                        f"run the same command again to resume it, or {_advice()}"
                    )
                log.debug("transfer from %s broke off at %d bytes; resuming", url, have)
                time.sleep(BACKOFF * stalls)
        finally:
            bar.close()


# --- checking ----------------------------------------------------------------------------------------------
def verify(path: Path, ref: PublishedReference, url: str) -> str:
    """Check a downloaded archive, and remove it when it fails: its size and sha256 where ``ref`` knows them, and
    that it is a zip whose every member reads back with the right CRC.

    Returns
    -------
    str
        The archive's sha256.

    Raises
    ------
    DownloadError
        For an archive that fails a check (it has been removed).
    """
    def refuse(why: str) -> DownloadError:
        path.unlink(missing_ok=True)
        return DownloadError(f"the archive from {url} {why}: it was removed and nothing was imported; try again, "
                             "use --url for a mirror, or download it by hand and run "
                             "'gsrcl import -i ARCHIVE -r NAME -mp REFDIR'")

    size = path.stat().st_size
    if ref.size is not None and size != ref.size:
        raise refuse(f"has {size} bytes where the published archive has {ref.size}")
    digest = file_sha256(path)
    if ref.sha256 is not None and digest != ref.sha256.lower():
        raise refuse(f"is not the published one (sha256 {digest[:12]}..., expected {ref.sha256[:12]}...)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, NotImplementedError, RuntimeError,
            ValueError) as exc:
        raise refuse(f"is not a readable zip ({exc}); it may be truncated or corrupt") from None
    if bad is not None:
        raise refuse(f"is corrupt: its member {bad!r} fails its CRC check")
    return digest


# --- the whole step ----------------------------------------------------------------------------------------
def _import_original(source, refdir, name, **kwargs) -> Path:
    """`gsrcl.original.importer.import_original`, imported when first needed."""
    from .importer import import_original

    return import_original(source, refdir, name, **kwargs)


def _remove_slot(slot: Path) -> None:
    shutil.rmtree(slot, ignore_errors=True)


def download_one(ref: PublishedReference, url: str, refdir: str | os.PathLike, folder: Path, *,
                 overwrite: bool = False, quiet: bool = False, timeout: float = TIMEOUT) -> Path:
    """Fetch ``ref``'s archive from ``url`` into ``folder``, check it, import it as REFDIR/``ref.name`` and remove
    it. Arguments are trusted (`download` checks them).

    A verified archive left by an earlier run whose import failed (a full disk) is imported without fetching it
    again.
    """
    check_target(refdir, ref.name, overwrite=overwrite)  # again: another run may have taken the name
    slot = _slot(folder, ref, url)
    try:
        slot.mkdir(exist_ok=True)
    except OSError as exc:
        raise _write_error(exc, folder) from None
    archive = slot / ref.archive
    digest = None
    if archive.is_file():
        try:
            digest = verify(archive, ref, url)
            log.info("Using %s, downloaded earlier into %s", ref.archive, slot)
        except DownloadError:
            digest = None
    if digest is None:
        part = slot / f"{ref.archive}.part"
        log.info("Downloading %s (%s reference, %s) from %s", ref.name, ref.method, ref.where, url)
        try:
            fetch(url, part, size=ref.size, quiet=quiet, desc=ref.name, timeout=timeout)
            digest = verify(part, ref, url)
        except GsrclError as exc:
            if not getattr(exc, "busy", False) and (not part.exists() or part.stat().st_size == 0):
                _remove_slot(slot)  # nothing worth resuming
            raise
        os.replace(part, archive)
    origin = {"source": url, "url": url, "archive": ref.archive, "archive_sha256": digest, "record": ref.record,
              "published_name": ref.record_name}
    try:
        path = _import_original(archive, refdir, ref.name, method=ref.method, overwrite=overwrite, quiet=quiet,
                                origin=origin)
    except (DiskFullError, OutputError, KeyboardInterrupt) as exc:  # not the archive's fault: kept for a rerun
        if isinstance(exc, GsrclError):
            exc.detail = _join(exc.detail, f"The downloaded archive is kept in {slot}: the same command imports "
                                            "it without downloading it again.")
        raise
    except BaseException:
        _remove_slot(slot)
        raise
    _remove_slot(slot)
    log.info("Imported %s (%s) into %s", ref.name, ref.method, path)
    return Path(path)


def _join(*lines: str | None) -> str | None:
    kept = [line for line in lines if line]
    return "\n".join(kept) if kept else None


def download(names: Sequence[str], refdir: str | os.PathLike, *, method: str = "gsrcl", url: str | None = None,
             overwrite: bool = False, quiet: bool = False, cache: str | os.PathLike | None = None,
             timeout: float = TIMEOUT) -> list[Path]:
    """Download the published references ``names`` of ``method`` and import each into ``refdir``, in turn.

    Everything is checked before the first byte is fetched: the names (`gsrcl.original.published.find`), the
    address (`base_url`, `archive_url`), that each REFDIR/NAME is free (`gsrcl.reference.check_target`) and
    the cache folder. A failure stops at that reference; the ones before it stay imported, and the error's
    detail names them.

    Parameters
    ----------
    names : sequence of str
        Published reference names (``gsrcl references available``); each becomes REFDIR/NAME.
    refdir : path
        The reference folder (created by the first import when missing).
    method : {"gsrcl", "afrcl"}
        Whose published references.
    url : str, optional
        A mirror's base address, serving ``url/<archive>``; default ``$GSRCL_REFERENCES_URL``, else the
        published record.
    overwrite : bool
        Replace a reference of the same name.
    quiet : bool
        No progress bars.
    cache : path, optional
        Where downloads are kept while they arrive (default `cache_dir`'s).
    timeout : float
        Seconds allowed to connect, and between two reads.

    Returns
    -------
    list of pathlib.Path
        The imported references' folders.

    Raises
    ------
    InvalidReferenceError
        A name that is not published (the message lists those that are), or not allowed as a reference name.
    GsrclError
        An unknown method, a base address that is not http(s), a cache folder inside ``refdir``.
    OutputError
        A reference that exists without ``overwrite``, a folder that cannot be written.
    DownloadError
        A failed transfer or a refused archive (nothing of it is left under ``refdir``).
    """
    if method not in METHODS:
        raise GsrclError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    refs = list(dict.fromkeys(find(name, method) for name in names))
    base = base_url(url)
    plan = [(ref, archive_url(ref, base)) for ref in refs]
    for ref, _ in plan:
        check_target(refdir, ref.name, overwrite=overwrite)
    folder = cache_dir(refdir, cache)
    done: list[Path] = []
    for i, (ref, address) in enumerate(plan):
        try:
            done.append(download_one(ref, address, refdir, folder, overwrite=overwrite, quiet=quiet,
                                     timeout=timeout))
        except GsrclError as exc:
            if len(plan) > 1:
                ok = ", ".join(r.name for r, _ in plan[:i]) or "none"
                rest = ", ".join(r.name for r, _ in plan[i + 1:]) or "none"
                exc.detail = _join(exc.detail, f"Imported before this failure: {ok}; failed: {ref.name}; "
                                               f"not tried: {rest}.")
            raise
    return done
