"""The worker processes: at most ``workers`` jobs run at once, each in a process of its own, never in the server's.

A dispatcher thread in the server hands queued jobs (oldest first) to idle workers through a pipe, notices a
worker that died (killed, out of memory) and marks the job it ran failed with that reason, starts a new worker in
its place, and removes jobs older than ``keep_days``. Workers are started with the ``spawn`` method, so none
inherits the server's threads or sockets.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

from ..errors import PredictionError
from .config import ServeConfig
from .jobs import JobStore
from .worker import worker_main

log = logging.getLogger("gsrcl.serve")

TICK_SECONDS = 0.1
CLEAN_EVERY_SECONDS = 3600.0


@dataclass
class _Worker:
    process: mp.Process
    conn: object
    job: str | None = None
    cancelled: set = field(default_factory=set)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = "; the machine may have run out of memory" if -exitcode == signal.SIGKILL else ""
        return f"the worker process running this job was killed ({name}){hint}: start the job again"
    return f"the worker process running this job ended unexpectedly (exit code {exitcode}): start the job again"


class WorkerPool:
    """Runs the jobs of ``store`` in ``config.workers`` processes."""

    def __init__(self, config: ServeConfig, store: JobStore):
        self.config, self.store = config, store
        self.threads = max(1, (os.cpu_count() or 1) // config.workers)
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_clean = 0.0

    def _spawn(self) -> _Worker:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=worker_main, name="gsrcl-serve-worker", daemon=True,
                              args=(str(self.config.db_path), str(self.config.refdir), str(self.config.jobs_dir),
                                    child, self.threads))
        process.start()
        child.close()
        return _Worker(process, parent)

    def start(self) -> None:
        with self.lock:
            self.workers = [self._spawn() for _ in range(self.config.workers)]
        self.thread = threading.Thread(target=self._loop, name="gsrcl-serve-dispatcher", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dispatcher and the workers; a job still running is killed (the next start marks it
        interrupted)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
        with self.lock:
            for w in self.workers:
                if w.job is None:
                    try:
                        w.conn.send(None)
                    except OSError:
                        pass
            deadline = time.monotonic() + timeout
            for w in self.workers:
                if w.job is not None:
                    w.process.kill()
                w.process.join(max(0.1, deadline - time.monotonic()))
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join(1)
            self.workers = []

    def cancel(self, job_id: str) -> bool:
        """Kill the worker running ``job_id`` (a new one takes its place); whether one was running it."""
        with self.lock:
            for w in self.workers:
                if w.job == job_id:
                    w.cancelled.add(job_id)
                    w.process.kill()
                    return True
        return False

    def pids(self) -> dict[int, str | None]:
        """Worker process id -> the job it runs (for tests and the load benchmark)."""
        with self.lock:
            return {w.process.pid: w.job for w in self.workers}

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._tick()
                if self.config.keep_days is not None and time.monotonic() - self.last_clean > CLEAN_EVERY_SECONDS:
                    self.last_clean = time.monotonic()
                    self.remove_old()
            except Exception:  # noqa: BLE001 - the dispatcher must outlive a bad moment (a locked database)
                log.exception("gsrcl serve: the dispatcher hit an error; going on")
            self.stopping.wait(TICK_SECONDS)

    def _tick(self) -> None:
        with self.lock:
            for i, w in enumerate(self.workers):
                try:
                    while w.conn.poll():
                        message = w.conn.recv()
                        if message[0] == "done" and message[1] == w.job:
                            w.job = None
                except (EOFError, OSError):
                    pass
                if not w.process.is_alive():
                    w.process.join(0)
                    if w.job is not None and w.job not in w.cancelled:
                        self._mark_dead(w.job, w.process.exitcode)
                    if not self.stopping.is_set():
                        self.workers[i] = self._spawn()
            for w in self.workers:
                if w.job is not None or not w.process.is_alive():
                    continue
                job = self.store.next_queued()
                if job is None:
                    break
                if self.store.claim(job["id"], w.process.pid):
                    w.job = job["id"]
                    w.conn.send(job["id"])

    def _mark_dead(self, job_id: str, exitcode: int | None) -> None:
        job = self.store.get(job_id)
        if job is None or job["state"] != "running":
            return
        command = "verify" if job["phase"] == "verify" else "predict"
        log.warning("gsrcl serve: job %s: %s", job_id, _death(exitcode))
        self.store.update(job_id, where_state=("running",), state="failed", stage="failed", worker_pid=None,
                          error=f"gsrcl {command}: error: {_death(exitcode)}", exit_code=PredictionError.exit_code)

    def remove_old(self) -> list[str]:
        """Remove the finished jobs older than ``keep_days`` (their folders and rows); their ids."""
        removed = self.store.older_than(self.config.keep_days * 86400.0)
        for job_id in removed:
            shutil.rmtree(self.config.jobs_dir / job_id, ignore_errors=True)
            self.store.delete(job_id)
        if removed:
            log.info("gsrcl serve: removed %d jobs older than %g days", len(removed), self.config.keep_days)
        return removed
