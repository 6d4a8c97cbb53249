"""Load on ``gsrcl serve``: many jobs submitted at once, the page's answer times and the memory while they run.

Starts ``gsrcl serve`` (the command, in its own process) on 127.0.0.1 with ``--workers`` workers, over a REFDIR
(``--refdir``, or tiny references of both methods trained here on scanpy's ``pbmc68k_reduced``), and submits
``--jobs`` jobs at once, each the 210 held-out cells of the demo split (``--cells`` resamples them to more), the
references taken in turn. While they run it asks for the page (``GET /``), the job list and each job's state
every ``--every`` seconds, and samples the resident memory of the server and of its worker processes (psutil).
Reports: jobs submitted, done, failed and lost (not ended), the seconds until all ended, the slowest and the
95th-percentile page answer while loaded, and the peak memory of the server alone and with its workers.

    .venv/bin/python benchmarks/serve_load.py --jobs 20 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "serve_load.json"
TINY = dict(epochs=6, min_epochs=2, val_every=1, hidden=(32,), out=16, head=(16, 8), ensemble=1, svm_cv=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(work: Path, refdir: Path | None, cells: int) -> tuple[Path, Path, list[str]]:
    """(REFDIR, query file, reference names)."""
    import numpy as np

    from gsrcl.demo import load_pbmc68k, split
    from gsrcl.reference import list_references

    ref_part, query = split(load_pbmc68k())
    if cells > query.n_obs:
        idx = np.random.default_rng(0).choice(query.n_obs, cells, replace=True)
        query = query[idx].copy()
        query.obs_names = [f"c{i}" for i in range(cells)]
    path = work / "query.h5ad"
    query.write_h5ad(path)
    if refdir is None:
        import gsrcl

        refdir = work / "refs"
        for method in ("afrcl", "gsrcl"):
            gsrcl.train(ref_part, "bulk_labels", method, name=f"pbmc68k_{method}", top_genes=200, quiet=True,
                        **TINY).save(refdir, f"pbmc68k_{method}")
    names = [r["name"] for r in list_references(refdir) if not r.get("error")]
    return refdir, path, names


class Sampler(threading.Thread):
    """Page answer times and the memory of the server's process tree, every ``every`` seconds."""

    def __init__(self, client, pid: int, every: float, ids: list[str]):
        super().__init__(daemon=True)
        import psutil

        self.client, self.proc, self.every, self.ids = client, psutil.Process(pid), every, ids
        self.latencies: list[float] = []
        self.slowest: tuple[float, str, float] = (0.0, "", 0.0)  # seconds, path, when (since the start)
        self.t0 = time.perf_counter()
        self.server_rss = self.total_rss = 0
        self.stop = threading.Event()

    def _memory(self) -> None:
        import psutil

        try:
            server = self.proc.memory_info().rss
            total = server + sum(c.memory_info().rss for c in self.proc.children(recursive=True))
        except psutil.Error:
            return
        self.server_rss, self.total_rss = max(self.server_rss, server), max(self.total_rss, total)

    def _timed(self, path: str) -> None:
        t0 = time.perf_counter()
        r = self.client.get(path)
        took = time.perf_counter() - t0
        self.latencies.append(took)
        if took > self.slowest[0]:
            self.slowest = (took, path.split("/api/jobs/")[0] + ("/api/jobs/ID" if "/api/jobs/" in path else ""),
                            t0 - self.t0)
        r.raise_for_status()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self._memory()
            self._timed("/")
            self._timed("/api/jobs")
            if self.ids:
                self._timed(f"/api/jobs/{self.ids[i % len(self.ids)]}")
                i += 1
            self.stop.wait(self.every)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cells", type=int, default=210, help="cells per query (resampled above 210)")
    ap.add_argument("--refdir", type=Path, help="REFDIR to use (default: tiny references trained here)")
    ap.add_argument("--every", type=float, default=0.2, help="seconds between page requests")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        refdir, query, names = _inputs(work, args.refdir, args.cells)
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "gsrcl", "serve", "-mp", str(refdir), "--port", str(port),
                                   "--data", str(work / "data"), "--workers", str(args.workers), "-q"],
                                  env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        client.get("/api/config").raise_for_status()
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline or server.poll() is not None:
                            raise SystemExit("the server did not start")
                        time.sleep(0.2)
                ids: list[str] = []
                sampler = Sampler(client, server.pid, args.every, ids)
                t0 = time.perf_counter()
                sampler.t0 = t0
                sampler.start()

                def submit(i: int) -> str:
                    with httpx.Client(base_url=url, timeout=120) as c, open(query, "rb") as fh:
                        r = c.post("/api/jobs", data={"reference": names[i % len(names)], "p": "0.5"},
                                   files={"file": (f"query{i}.h5ad", fh)})
                        r.raise_for_status()
                        return r.json()["id"]

                with ThreadPoolExecutor(args.jobs) as pool:
                    ids.extend(pool.map(submit, range(args.jobs)))
                submitted = time.perf_counter() - t0
                states: dict[str, str] = {}
                while time.perf_counter() - t0 < args.timeout:
                    states = {j["id"]: j["state"] for j in client.get("/api/jobs").json() if j["id"] in ids}
                    if all(s in ("done", "failed", "interrupted") for s in states.values()) and len(states) == len(ids):
                        break
                    time.sleep(0.5)
                seconds = time.perf_counter() - t0
                sampler.stop.set()
                sampler.join()
        finally:
            server.terminate()
            server.wait(30)
    lat = sorted(sampler.latencies)
    result = {
        "command": "benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "jobs": args.jobs, "workers": args.workers, "cells_per_job": args.cells,
        "done": sum(s == "done" for s in states.values()), "failed": sum(s == "failed" for s in states.values()),
        "lost": args.jobs - sum(s in ("done", "failed", "interrupted") for s in states.values()),
        "seconds_to_submit": round(submitted, 2), "seconds_all_ended": round(seconds, 2),
        "page_requests": len(lat), "slowest_page_seconds": round(lat[-1], 3) if lat else None,
        "slowest_page": sampler.slowest[1], "slowest_page_at_seconds": round(sampler.slowest[2], 2),
        "p95_page_seconds": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
        "peak_rss_server_mb": round(sampler.server_rss / 2**20, 1),
        "peak_rss_with_workers_mb": round(sampler.total_rss / 2**20, 1),
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["done"] == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
