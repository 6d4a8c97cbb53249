"""One job, run in a worker process: verify the upload against a reference, then predict as ``gsrcl predict`` does.

`worker_main` is a worker process's loop (it takes job ids from the server through a pipe); `run_job` runs one.
Verification is ``gsrcl.verify.verify`` (the report of ``gsrcl verify``); prediction is
``gsrcl.outputs.write_prediction_files`` on the uploaded file, so a job's four files are those ``gsrcl predict``
writes for the same inputs. A failure is stored as the line the command line prints (``gsrcl predict: error:
...``), with its exit code, the uploaded file's name in place of its path on the server.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import EXIT_INTERNAL, GsrclError, OutOfMemoryError, PredictionError
from .jobs import JobStore

log = logging.getLogger("gsrcl.serve")

OUT = "out"
LOG = "log.txt"
# Errors of the HDF5 layout and names, after which the page shows the file's tree and asks for key paths.
KEY_PATH_ERRORS = frozenset({66, 67, 68, 69, 70, 71, 72, 73, 74, 80})
# How far each of prediction's passes takes the job's percentage (start, end); then the t-SNE and the files.
PASSES = {"predict": (5.0, 70.0), "neighbours: gene variances": (70.0, 75.0), "neighbours: covariance": (75.0, 80.0),
          "neighbours: projection": (80.0, 90.0)}
AFTER_PASSES = ("drawing the t-SNE and writing the files", 90.0)
WORKER_NICE = 10


class Progress:
    """Prediction's progress (`gsrcl.predict.reporting_progress`) written to the job's row, at most every
    ``every`` seconds."""

    def __init__(self, store: JobStore, job_id: str, every: float = 0.3):
        self.store, self.job_id, self.every = store, job_id, every
        self.last = 0.0

    def stage(self, stage: str, progress: float, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.store.update(self.job_id, stage=stage, progress=round(float(progress), 1))
            self.last = now

    def __call__(self, name: str, total: int) -> "_Bar":
        return _Bar(self, name, max(int(total), 1))


class _Bar:
    def __init__(self, progress: Progress, name: str, total: int):
        self.progress, self.name, self.total, self.done = progress, name, total, 0
        self.lo, self.hi = PASSES.get(name, (5.0, 90.0))
        progress.stage(name, self.lo)

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        pct = self.lo + (self.hi - self.lo) * min(self.done / self.total, 1.0)
        self.progress.stage(f"{self.name}: {self.done:,} of {self.total:,} cells", pct, force=False)

    def close(self) -> None:
        self.progress.stage(*AFTER_PASSES)

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reader_kwargs(params: dict) -> dict:
    """``gsrcl.io.open_query``'s key paths and transpose from a job's parameters."""
    return {"transpose": bool(params.get("transpose")), "mat": params.get("mat"), "obs": params.get("obs"),
            "var": params.get("var")}


def _shown(text: str | None, paths: dict[str, str]) -> str | None:
    """``text`` with the job's server paths replaced by what the user knows them as."""
    if text is None:
        return None
    for path, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, name)
    return text


def verify_report(path: Path, refdir: Path, params: dict) -> dict[str, Any]:
    """Step 1 of a job: ``gsrcl verify``'s checks and numbers for the uploaded file and the chosen reference."""
    from ..reference import read_manifest, resolve
    from ..verify import describe, verify

    adata = verify(path, read_manifest(resolve(refdir, params["reference"])), **reader_kwargs(params))
    rec = adata.uns["gsrcl_verify"]
    return {
        "reference": str(rec["reference"]),
        "method": str(rec["method"]),
        "format": str(rec["source"].get("format", "")),
        "n_cells": int(adata.n_obs),
        "n_genes": int(rec["n_query_genes"]),
        "n_query_genes_matched": int(rec["n_query_genes_matched"]),
        "n_reference_genes": int(rec["n_reference_genes"]),
        "n_reference_genes_matched": int(rec["n_reference_genes_matched"]),
        "values": str(rec["values"]),
        "values_message": str(rec["values_message"]),
        "summary": describe(rec),
        "query_genes_dropped": [str(g) for g in rec["query_genes_dropped"]][:20],
        "reference_genes_zero_filled": [str(g) for g in rec["reference_genes_zero_filled"]][:20],
    }


def _predict(path: Path, folder: Path, refdir: Path, params: dict, progress: Progress) -> dict[str, Any]:
    from ..outputs import write_prediction_files
    from ..predict import Settings, reporting_progress
    from ..reference import resolve

    settings = Settings.checked(p=params.get("p", 0.5), quiet=True)
    progress.stage("loading the reference", 4.0)
    with reporting_progress(progress):
        summary = write_prediction_files(path, resolve(refdir, params["reference"]), folder / OUT, settings,
                                         overwrite=True, reader_kwargs=reader_kwargs(params))
    return {"n_cells": int(summary["n_cells"]), "counts": {str(k): int(v) for k, v in summary["counts"].items()},
            "method": str(summary["method"]), "reference": str(summary["reference"]), "p": settings.p,
            "seconds_predict": round(float(summary["seconds_predict"]), 2),
            "seconds_tsne": round(float(summary["seconds_tsne"]), 2), "files": sorted(summary["paths"])}


def _input(job: dict, folder: Path, store: JobStore) -> Path:
    """The query's path: the upload, or the 10x folder unpacked from an uploaded zip (once)."""
    from .uploads import unpack_10x_zip

    path = folder / job["input"]
    if path.suffix == ".zip":
        unpacked = folder / "input" / "matrix"
        if not unpacked.exists():
            unpack_10x_zip(path, unpacked, job["upload_name"])
        path = unpacked
        store.update(job["id"], input=str(path.relative_to(folder)))
    return path


def run_job(store: JobStore, refdir: Path, jobs_dir: Path, job_id: str) -> None:
    """Run job ``job_id`` (claimed already) to its end state: ``verified``, ``done`` or ``failed``."""
    job = store.get(job_id)
    if job is None:
        return
    folder = jobs_dir / job_id
    params = job["params"]
    phase = job["phase"]
    progress = Progress(store, job_id)
    shown = {str(folder / job["input"]): job["upload_name"], str(folder / "input" / "matrix"): job["upload_name"],
             str(refdir): "REFDIR", str(folder): "JOB"}
    handler = logging.FileHandler(folder / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("gsrcl")
    root.addHandler(handler)
    path = folder / job["input"]
    try:
        path = _input(job, folder, store)
        if phase == "verify":
            progress.stage("verifying", 2.0)
            report = verify_report(path, refdir, params)
            if not job["run"]:
                store.update(job_id, state="verified", verify=report, stage="verified", progress=100.0,
                             worker_pid=None)
                return
            store.update(job_id, verify=report, phase="predict")
            phase = "predict"
        result = _predict(path, folder, refdir, params, progress)
        store.update(job_id, state="done", result=result, stage="done", progress=100.0, worker_pid=None)
    except GsrclError as exc:
        detail = exc.detail
        if exc.exit_code in KEY_PATH_ERRORS:
            detail = _tree(path) or detail
        _fail(store, job_id, phase, exc.message, exc.exit_code, _shown(detail, shown), shown)
    except MemoryError:
        _fail(store, job_id, phase, "out of memory; use a smaller query or a larger machine",
              OutOfMemoryError.exit_code, None, shown)
    except Exception as exc:  # noqa: BLE001 - a bug or the environment: one line, as the command line gives it
        log.debug("job %s failed", job_id, exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        code = PredictionError.exit_code if phase == "predict" else EXIT_INTERNAL
        _fail(store, job_id, phase, f"{phase} failed: {type(exc).__name__}: {first}", code, None, shown)
    finally:
        root.removeHandler(handler)
        handler.close()


def _tree(path: Path) -> str | None:
    """The HDF5 tree of ``path`` (None for another kind of file)."""
    from ..io import format_tree

    try:
        return format_tree(path)
    except Exception:  # noqa: BLE001 - not HDF5, or unreadable: no tree to show
        return None


def _fail(store: JobStore, job_id: str, phase: str, message: str, code: int, detail: str | None,
          shown: dict[str, str]) -> None:
    command = "verify" if phase == "verify" else "predict"
    store.update(job_id, state="failed", error=f"gsrcl {command}: error: {_shown(message, shown)}", exit_code=int(code),
                 detail=detail, stage="failed", worker_pid=None)


def worker_main(db_path: str, refdir: str, jobs_dir: str, conn, threads: int) -> None:
    """A worker process: run each job id received on ``conn``, answering ``("done", id)``; stop on None or when
    the server's end of the pipe closes."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        os.nice(WORKER_NICE)  # jobs yield the processor to the server, which answers the page
    except (AttributeError, OSError):  # pragma: no cover - not on this platform
        pass
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    from .. import outputs, verify  # noqa: F401 - imported before the first job arrives, not while it waits

    logging.getLogger("gsrcl").setLevel(logging.INFO)
    logging.getLogger("gsrcl").propagate = False
    store = JobStore(db_path)
    while True:
        try:
            job_id = conn.recv()
        except (EOFError, OSError):
            return
        if job_id is None:
            return
        try:
            run_job(store, Path(refdir), Path(jobs_dir), job_id)
        finally:
            try:
                conn.send(("done", job_id))
            except (BrokenPipeError, OSError):
                return
