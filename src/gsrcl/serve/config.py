"""The server's settings, checked once when ``gsrcl serve`` starts (or a test builds an app), trusted after."""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import GsrclError, InvalidReferenceError, OutputError

log = logging.getLogger("gsrcl.serve")

DEFAULT_MAX_UPLOAD_MB = 2048


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/gsrcl/serve``, or ``~/.local/share/gsrcl/serve`` where that variable is unset."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gsrcl" / "serve"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """What a server serves and how much it accepts.

    Attributes
    ----------
    refdir : Path
        The folder of references (``-mp``); references are taken from it by name only.
    data : Path
        Where job state (``jobs.sqlite``) and job folders (``jobs/<id>/``) live.
    workers : int
        Worker processes running jobs at once.
    max_upload_bytes : int
        The largest upload accepted (refused while it streams, once past this size).
    token : str or None
        A shared secret every API request must carry (required off loopback).
    keep_days : float or None
        Finished jobs older than this are removed (None: kept).
    host, port : str, int
        Where the server listens.
    """

    refdir: Path
    data: Path
    workers: int = 1
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB << 20
    token: str | None = None
    keep_days: float | None = None
    host: str = "127.0.0.1"
    port: int = 8000

    @classmethod
    def checked(cls, refdir, *, data=None, workers: int = 1, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                token: str | None = None, keep_days: float | None = None, host: str = "127.0.0.1",
                port: int = 8000) -> "ServeConfig":
        """Settings from a caller's values, each checked.

        Raises
        ------
        InvalidReferenceError
            When ``refdir`` is not a folder.
        OutputError
            When ``data`` cannot be created or written.
        GsrclError
            For a host other than loopback without a token, or a number out of range.
        """
        refdir = Path(refdir)
        if not refdir.is_dir():
            raise InvalidReferenceError(f"reference folder {refdir} does not exist: pass the folder of "
                                        "references with -mp")
        if int(workers) < 1:
            raise GsrclError(f"--workers must be at least 1, not {workers}")
        if not float(max_upload_mb) > 0:
            raise GsrclError(f"--max-upload-mb must be above 0, not {max_upload_mb}")
        if keep_days is not None and not float(keep_days) > 0:
            raise GsrclError(f"--keep-days must be above 0, not {keep_days}")
        if not 0 <= int(port) < 65536:
            raise GsrclError(f"--port must be in 0..65535, not {port}")
        if token is not None and len(token) < 8:
            raise GsrclError("--token must be at least 8 characters long: use a long random secret")
        if not is_loopback(host):
            if not token:
                raise GsrclError(f"--host {host} is reachable from other machines, and anyone who reaches the port "
                                 "could run jobs: pass --token SECRET (a shared secret the page asks for), or bind "
                                 "to 127.0.0.1")
            log.warning("warning: serving on %s, reachable from other machines: requests must carry the token",
                        host)
        data = Path(data) if data is not None else default_data_dir()
        try:
            (data / "jobs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the data folder {data}: {exc.strerror or exc}; choose another --data")
        if not os.access(data, os.W_OK):
            raise OutputError(f"cannot write to the data folder {data}: choose another --data")
        return cls(refdir=refdir.resolve(), data=data.resolve(), workers=int(workers),
                   max_upload_bytes=int(float(max_upload_mb) * (1 << 20)), token=token or None,
                   keep_days=None if keep_days is None else float(keep_days), host=host, port=int(port))

    @property
    def db_path(self) -> Path:
        return self.data / "jobs.sqlite"

    @property
    def jobs_dir(self) -> Path:
        return self.data / "jobs"
