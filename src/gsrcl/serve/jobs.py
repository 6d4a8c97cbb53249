"""Job state in SQLite (``DATA/jobs.sqlite``), shared by the server and its worker processes.

A job is one uploaded query. Its states: ``queued`` (waiting for a worker, to verify or to predict: ``phase``),
``running``, ``verified`` (the report is there; the user picks a reference and p, then starts it), ``done``,
``failed`` (``error`` is the one line the command line prints, ``exit_code`` its code) and ``interrupted`` (the
server stopped while it ran). Every connection is opened for one operation, in WAL mode, so the server's threads
and the workers write without locking each other out for long.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "verified", "done", "failed", "interrupted")
FINISHED = ("verified", "done", "failed", "interrupted")
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL,
    run INTEGER NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    upload_name TEXT NOT NULL,
    input TEXT NOT NULL,
    size INTEGER NOT NULL,
    params TEXT NOT NULL,
    verify TEXT,
    result TEXT,
    error TEXT,
    exit_code INTEGER,
    detail TEXT,
    worker_pid INTEGER
)
"""
_JSON = ("params", "verify", "result")


def new_id() -> str:
    """A random job id: 32 hex digits (`secrets.token_hex`)."""
    return secrets.token_hex(16)


def valid_id(job_id: str) -> bool:
    """Whether ``job_id`` has the form of an id (checked before it is used anywhere)."""
    return isinstance(job_id, str) and bool(ID_PATTERN.match(job_id))


class JobStore:
    """The jobs table of one data folder."""

    def __init__(self, db_path: str | Path):
        self.path = Path(db_path)
        with closing(self._connect()) as con, con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        job = dict(row)
        for key in _JSON:
            job[key] = json.loads(job[key]) if job[key] else None
        job["run"] = bool(job["run"])
        return job

    def create(self, job_id: str, *, upload_name: str, input_path: str, size: int, params: dict,
               run: bool) -> dict:
        now = time.time()
        with closing(self._connect()) as con:
            con.execute("INSERT INTO jobs (id, created, updated, state, phase, run, stage, upload_name, input, size, "
                        "params) VALUES (?, ?, ?, 'queued', 'verify', ?, 'waiting for a worker', ?, ?, ?, ?)",
                        (job_id, now, now, int(run), upload_name, input_path, int(size), json.dumps(params)))
        return self.get(job_id)

    def get(self, job_id: str) -> dict | None:
        with closing(self._connect()) as con:
            return self._row(con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def list(self, limit: int = 100) -> list[dict]:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (int(limit),)).fetchall()
        return [self._row(r) for r in rows]

    def update(self, job_id: str, *, where_state: tuple[str, ...] | None = None, **fields) -> bool:
        """Set ``fields`` of a job (JSON-encoding params/verify/result); with ``where_state``, only while the job
        is in one of those states. Returns whether a row changed."""
        fields["updated"] = time.time()
        for key in _JSON:
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        if "run" in fields:
            fields["run"] = int(fields["run"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql, args = f"UPDATE jobs SET {sets} WHERE id = ?", [*fields.values(), job_id]
        if where_state:
            sql += f" AND state IN ({', '.join('?' * len(where_state))})"
            args += list(where_state)
        with closing(self._connect()) as con:
            return con.execute(sql, args).rowcount > 0

    def requeue(self, job_id: str, phase: str, *, params: dict, run: bool) -> bool:
        """Queue a finished job again (``phase`` 'verify' or 'predict'); False when it is queued or running."""
        cleared = {"error": None, "exit_code": None, "detail": None, "result": None}
        if phase == "verify":
            cleared["verify"] = None
        return self.update(job_id, where_state=("verified", "failed", "interrupted"), state="queued", phase=phase,
                           run=run, params=params, stage="waiting for a worker", progress=0.0, worker_pid=None,
                           **cleared)

    def next_queued(self) -> dict | None:
        with closing(self._connect()) as con:
            return self._row(con.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1")
                             .fetchone())

    def claim(self, job_id: str, pid: int) -> bool:
        """Mark a queued job running in worker ``pid``; False when it is no longer queued (deleted, say)."""
        return self.update(job_id, where_state=("queued",), state="running", stage="starting", progress=0.0,
                           worker_pid=int(pid))

    def delete(self, job_id: str) -> bool:
        with closing(self._connect()) as con:
            return con.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

    def interrupt_running(self) -> list[str]:
        """At start-up: jobs left running by a server that stopped become ``interrupted``; their ids."""
        with closing(self._connect()) as con:
            ids = [r["id"] for r in con.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()]
        for job_id in ids:
            self.update(job_id, where_state=("running",), state="interrupted", worker_pid=None,
                        error="the server stopped while this job ran: start it again")
        return ids

    def older_than(self, seconds: float) -> list[str]:
        """Ids of finished jobs last changed more than ``seconds`` ago."""
        cutoff = time.time() - seconds
        with closing(self._connect()) as con:
            rows = con.execute(f"SELECT id FROM jobs WHERE updated < ? AND state IN ({', '.join('?' * len(FINISHED))})",
                               (cutoff, *FINISHED)).fetchall()
        return [r["id"] for r in rows]

    def count(self, state: str) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0])
