"""Atomic writes, a full disk, and what a killed run leaves behind.

Every temporary gsrcl makes beside a result is named ``.NAME.TAG-PID.HOST-RANDOM``: ``TAG`` is ``tmp`` (being
written), ``old`` (a replaced reference on its way out) or ``stage`` (a run's staged outputs), ``PID`` the process
that made it and ``HOST`` a tag of the machine's name. A run that is killed (``kill -9``, a node failure) cannot
remove its temporaries; the next run that writes into the same folder removes those of processes that no longer
exist on this machine (`remove_stale`), and finishes or undoes a commit the dead run had begun
(`StagedFiles`, ``gsrcl.reference``'s swap). Temporaries of another machine (a shared file system; a container
with its own host name counts as another machine) are never touched: their process cannot be checked from here.

A full disk (``ENOSPC``) or quota (``EDQUOT``) while writing becomes `gsrcl.errors.DiskFullError`
(`disk_full_as_error`), after the temporaries are removed.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import io
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import DiskFullError, OutputError

log = logging.getLogger("gsrcl.atomic")

HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
"""This machine's tag in temporary names."""

TAGS = ("tmp", "old", "stage")
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old|stage)-(?P<pid>\d+)\.(?P<host>[0-9a-f]{8})-[^/]+$")

DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
_DISK_FULL_TEXT = re.compile(
    r"No space left on device|Disk quota exceeded|errno = (?:%s)\b" % "|".join(map(str, sorted(DISK_FULL_ERRNOS)))
)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _prefix(name: str, tag: str) -> str:
    return f".{name}.{tag}-{os.getpid()}.{HOST}-"


def temp_file(folder: str | os.PathLike, name: str) -> Path:
    """An empty temporary file in ``folder`` for ``name`` (``.NAME.tmp-PID.HOST-*``), with the permissions a plain
    new file gets."""
    fd, path = tempfile.mkstemp(prefix=_prefix(name, "tmp"), dir=folder)
    os.close(fd)
    os.chmod(path, 0o666 & ~_umask())
    return Path(path)


def temp_dir(folder: str | os.PathLike, name: str, tag: str = "tmp") -> Path:
    """An empty temporary folder in ``folder`` for ``name`` (``.NAME.TAG-PID.HOST-*``, ``tag`` one of `TAGS`),
    with the permissions a plain new folder gets (``mkdtemp`` alone makes it private to its owner)."""
    if tag not in TAGS:
        raise ValueError(f"tag {tag!r} is not one of {TAGS}")
    path = tempfile.mkdtemp(prefix=_prefix(name, tag), dir=folder)
    os.chmod(path, 0o777 & ~_umask())
    return Path(path)


def private_temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A `tempfile.TemporaryDirectory` in the system's temporary folder named ``PREFIX-PID.HOST-*``, after removing
    the folders of that ``prefix`` that dead processes of this machine left there."""
    remove_stale_prefixed(tempfile.gettempdir(), prefix)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}-{os.getpid()}.{HOST}-")


# --- what a dead run left --------------------------------------------------------------------------------------
def owner_alive(pid: int, host: str = HOST) -> bool:
    """Whether the process ``pid`` of machine ``host`` may still run: True for another machine, this process, or
    a process of another user; False only when this machine has no such process."""
    if host != HOST or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, run by someone else
        return True
    return True


def parse_temp_name(name: str) -> dict | None:
    """``{'name', 'tag', 'pid', 'host'}`` of a temporary's file name made by `temp_file`/`temp_dir`, else None."""
    m = _TEMP_NAME.match(name)
    if m is None:
        return None
    return {"name": m["name"], "tag": m["tag"], "pid": int(m["pid"]), "host": m["host"]}


def stale(folder: str | os.PathLike, tags: Iterable[str] = TAGS) -> list[tuple[Path, dict]]:
    """The temporaries in ``folder`` with a tag in ``tags`` whose process is gone, as (path, parsed name)."""
    tags = set(tags)
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        info = parse_temp_name(entry.name)
        if info is not None and info["tag"] in tags and not owner_alive(info["pid"], info["host"]):
            found.append((Path(entry.path), info))
    return sorted(found, key=lambda item: item[0].name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``tmp`` temporaries of dead processes in ``folder`` (a file being written when its run was
    killed); returns those removed. Errors (a folder not writable by this user) are logged and ignored."""
    removed = []
    for path, _ in stale(folder, ("tmp",)):
        try:
            _remove(path)
            removed.append(path)
        except OSError as exc:
            log.debug("could not remove %s: %s", path, exc)
    if removed:
        log.info("removed %d temporary file(s) of killed runs in %s", len(removed), folder)
    return removed


def remove_stale_prefixed(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove ``folder/PREFIX-PID.HOST-*`` of dead processes (the form `private_temp_dir` makes)."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)\.([0-9a-f]{{8}})-")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        m = pattern.match(entry.name)
        if m and not owner_alive(int(m[1]), m[2]):
            try:
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
            except OSError as exc:
                log.debug("could not remove %s: %s", entry.path, exc)
    return removed


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (nothing is created in it) while the block runs.

    Where the folder cannot be locked (no ``fcntl``, a file system without ``flock`` on folders such as some NFS
    mounts) the block runs unlocked: the checks it makes narrow the race to a few system calls."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        log.debug("cannot open %s to lock it: %s", folder, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.debug("cannot lock %s: %s", folder, exc)
        yield
    finally:
        os.close(fd)


# --- a full disk -------------------------------------------------------------------------------------------------
def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk or quota: an ``OSError`` with errno
    ``ENOSPC``/``EDQUOT``, or an error of a library (h5py) whose message carries that errno or its text."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(e, (OSError, RuntimeError, IOError)) and _DISK_FULL_TEXT.search(str(e)):
            return True
    return False


def _through_hdf5(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside h5py: HDF5's state after a failed write is unreliable (the library may
    crash when the interpreter exits and it flushes the file again)."""
    for e in _chain(exc):
        tb = e.__traceback__
        while tb is not None:
            if f"{os.sep}h5py{os.sep}" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
    return False


def disk_full_message(where: str | os.PathLike) -> str:
    return (f"the disk holding {where} is full (or over its quota): free some space or write elsewhere; "
            "nothing was written and no temporary file was left")


def write_error(exc: OSError, folder: str | os.PathLike) -> DiskFullError | OutputError:
    """The one-line error for ``exc``, raised while writing into ``folder``: `DiskFullError` for a full disk or
    quota, `OutputError` otherwise."""
    if is_disk_full(exc):
        return DiskFullError(disk_full_message(folder))
    return OutputError(f"cannot write to {folder}: {exc.strerror or exc}")


@contextlib.contextmanager
def held_stderr() -> Iterator[None]:
    """Hold what is written to ``sys.stderr`` while the block runs, and print it after, unless the block failed on
    a full disk: h5py then prints a traceback for each object it fails to flush as it frees it, which would bury
    the one line of `DiskFullError`. Wrap HDF5 writes only (a progress bar made inside would be held too)."""
    real, held = sys.stderr, io.StringIO()
    sys.stderr = held
    full = False
    try:
        yield
    except BaseException as exc:
        full = isinstance(exc, Exception) and is_disk_full(exc)
        raise
    finally:
        sys.stderr = real
        if not full and held.getvalue():
            real.write(held.getvalue())


@contextlib.contextmanager
def disk_full_as_error(where: str | os.PathLike, cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """Run a write; a full disk raised in it becomes `DiskFullError` naming ``where``, after ``cleanup`` ran.

    ``cleanup`` (removing the temporaries) runs on every failure, before the error leaves. The error's
    ``exit_at_once`` is True when HDF5 failed mid-write: the command then ends without the interpreter's clean-up
    (`gsrcl.cli.main`), which would have HDF5 flush the broken file again and crash (a segmentation fault).
    """
    full = hdf5 = False
    real = sys.stderr
    try:
        try:
            yield
        except BaseException as exc:
            if cleanup is not None:
                try:
                    cleanup()
                except Exception as cleanup_exc:  # noqa: BLE001 - the first error is the one to report
                    log.debug("clean-up after a failed write failed: %s", cleanup_exc)
            if not (isinstance(exc, Exception) and is_disk_full(exc)):
                raise
            full, hdf5 = True, _through_hdf5(exc)
            sys.stderr = io.StringIO()  # h5py's complaints as the failed writer's objects are freed
        if full:
            gc.collect()
    finally:
        sys.stderr = real
    if full:
        err = DiskFullError(disk_full_message(where))
        err.exit_at_once = hdf5
        raise err


# --- outputs that appear together ----------------------------------------------------------------------------
STAGE = "gsrcl"
_OLD = ".old"  # in a staging folder: the outputs it replaces, moved aside
_COMMITTING = ".committing"  # in a staging folder: all old outputs are aside, the new ones are moving in


class StagedFiles:
    """Files written into one hidden folder of ``out_dir`` and moved into it together by `commit`.

    The staging folder is ``out_dir/.gsrcl.stage-PID.HOST-*``; ``staged[name]`` is the path to write ``name`` to.
    `commit`, holding `locked` on ``out_dir``: runs ``check`` (which raises when another run wrote there
    meanwhile), moves every existing file of ``names`` aside into the staging folder, marks the folder, moves the
    written files in, and removes the folder with the old files. A failure raised at any step puts back what was
    there; a run killed mid-commit is finished (marked: the new files move in) or undone (unmarked: the old files
    move back) by the next `StagedFiles` on the same folder (`recover`). Either way ``out_dir`` then holds all
    the outputs of one run, never a mix.
    """

    def __init__(self, out_dir: str | os.PathLike, names: Iterable[str]):
        self.out_dir = Path(out_dir)
        self.names = tuple(names)
        self.dir: Path | None = None
        self.created_dir = False

    def open(self) -> "StagedFiles":
        """Create ``out_dir`` if missing and the staging folder; clear what killed runs left.

        Raises
        ------
        DiskFullError
        OutputError
            When ``out_dir`` cannot be written.
        """
        try:
            if not self.out_dir.exists():
                self.out_dir.mkdir(parents=True)
                self.created_dir = True
            clear_stale(self.out_dir)
            self.dir = temp_dir(self.out_dir, STAGE, "stage")
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise write_error(exc, self.out_dir) from None
            raise
        return self

    def __getitem__(self, name: str) -> Path:
        return self.dir / name

    def commit(self, written: Iterable[str], check: Callable[[], None] | None = None) -> dict[str, Path]:
        """Move the ``written`` files into ``out_dir``; every other file of ``names`` there is removed (an output
        of an earlier run that this run did not make must not stay beside its outputs). Returns the paths."""
        wanted = set(written)
        written = [n for n in self.names if n in wanted]
        out, stage = self.out_dir, self.dir
        with locked(out):
            if check is not None:
                try:
                    check()
                except BaseException:
                    self.discard()
                    raise
            moved_old: list[str] = []
            moved_new: list[str] = []
            try:
                (stage / _OLD).mkdir()
                for name in self.names:
                    if os.path.lexists(out / name):
                        os.replace(out / name, stage / _OLD / name)
                        moved_old.append(name)
                (stage / _COMMITTING).touch()
                for name in written:
                    os.replace(stage / name, out / name)
                    moved_new.append(name)
            except BaseException:
                try:  # put back what was there
                    for name in reversed(moved_new):
                        os.replace(out / name, stage / name)
                    (stage / _COMMITTING).unlink(missing_ok=True)
                    for name in reversed(moved_old):
                        os.replace(stage / _OLD / name, out / name)
                except BaseException as undo_exc:  # noqa: BLE001 - left for `recover` by the next run
                    log.warning("could not undo an interrupted commit in %s (%s); the next gsrcl run writing "
                                "there finishes it", out, undo_exc)
                    self.dir = None
                else:
                    self.discard()
                raise
            self.dir = None
            shutil.rmtree(stage, ignore_errors=True)
        return {name: out / name for name in written}

    def discard(self) -> None:
        """Remove the staging folder, and ``out_dir`` when `open` made it and it is empty."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()  # only if still empty


def clear_stale(out_dir: str | os.PathLike) -> None:
    """`recover` (holding the lock) and `remove_stale` in ``out_dir``, when it exists: what killed runs left there
    is cleared before a run looks at what ``out_dir`` holds."""
    if not os.path.isdir(out_dir):
        return
    with locked(out_dir):
        recover(out_dir)
    remove_stale(out_dir)


def recover(out_dir: str | os.PathLike) -> None:
    """Finish or undo the commits of dead runs in ``out_dir`` (`StagedFiles`) and remove their staging folders.

    Call it holding `locked` on ``out_dir``."""
    out_dir = Path(out_dir)
    for folder, _ in stale(out_dir, ("stage",)):
        try:
            if (folder / _COMMITTING).exists():  # the old outputs are aside: the new ones go in
                for p in sorted(folder.iterdir()):
                    if p.name not in (_OLD, _COMMITTING):
                        os.replace(p, out_dir / p.name)
                log.warning("finished writing the outputs of a killed run in %s", out_dir)
            elif (folder / _OLD).is_dir():  # no new output is in place yet: the old ones go back
                for p in sorted((folder / _OLD).iterdir()):
                    if not os.path.lexists(out_dir / p.name):
                        os.replace(p, out_dir / p.name)
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("could not clear %s, left by a killed run: %s", folder, exc)


# --- a folder replaced as a whole (a reference) ----------------------------------------------------------------
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, getattr(errno, "EOPNOTSUPP", errno.EINVAL),
                getattr(errno, "ENOTSUP", errno.EINVAL)):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(new: Path, target: Path, name: str) -> None:
    """Put the complete folder ``new`` (a temporary beside ``target``) at ``target``, replacing what is there.

    Where the system can swap two paths in one step, ``target`` holds the old folder and then the new one, and is
    never missing. Elsewhere the old folder is renamed to ``.NAME.old-PID.HOST-*/ref``, ``new`` renamed to
    ``target``, the old one removed: a failure raised between the renames puts the old one back, and a run
    killed between them leaves it for `recover_dirs`, which puts it back at the next save, load or listing.
    """
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # it holds the old folder now
        return
    old = temp_dir(target.parent, name, "old")
    moved = False
    try:
        os.rename(target, old / "ref")
        moved = True
        os.rename(new, target)
    except BaseException:
        if moved and not os.path.lexists(target):
            os.rename(old / "ref", target)
        raise
    finally:
        if os.path.lexists(target):
            shutil.rmtree(old, ignore_errors=True)


def recover_dirs(root: str | os.PathLike) -> None:
    """Clear what runs killed in `replace_dir` (or while writing a folder) left in ``root``: an old folder whose
    name is missing goes back in place; other old folders and unfinished new ones are removed. Errors (a
    folder not writable by this user) are logged and ignored."""
    root = Path(root)
    for path, info in stale(root, ("old", "tmp")):
        try:
            if info["tag"] == "old":
                target = root / info["name"]
                if (path / "ref").is_dir() and not os.path.lexists(target):
                    os.rename(path / "ref", target)
                    log.warning("restored %s, which a killed run had moved aside", target)
            _remove(path)
        except OSError as exc:
            log.debug("could not clear %s: %s", path, exc)
