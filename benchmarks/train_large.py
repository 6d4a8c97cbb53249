"""``gsrcl train`` on a reference of 100,000 or 1,000,000 cells: time and peak memory (issue 24, part 2).

The reference: cells resampled from mouse_immune_actinn_1k (19,371 genes, ~1,500 non-zero genes a cell, raw
counts), written as h5ad into ``benchmarks/scratch/`` (git-ignored) chunk by chunk, never held whole. Its 30
types: each of the file's 5 cell types split into 6 by k-means on 20 principal components of its log1p
values, so that types are real groups of cells; their sizes very unequal (the i-th largest drawn with weight
1 / i, so at a million cells the largest has ~250,000 cells and the smallest ~8,000).

Each run is ``gsrcl train`` in its own process (its peak RSS from /proc, VmHWM); ``--flags`` adds options (the
default: the default preset). Prints a table and writes ``benchmarks/results/train_large.json``::

    OMP_NUM_THREADS=1 python benchmarks/train_large.py --cells 100000,1000000 --flags "--ensemble 1 --epochs 3"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness.files import write_json  # noqa: E402  (benchmarks/ is on the path)
SCRATCH = ROOT / "benchmarks" / "scratch"
RESULT = ROOT / "benchmarks" / "results" / "train_large.json"
N_TYPES = 30


def thirty_types(seed: int = 0):
    """A label per cell of the source: its type and one of 6 k-means groups within it."""
    import anndata as ad
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    from predict import LABELS, SOURCE

    src = ad.read_h5ad(SOURCE)
    X = src.X.astype(np.float32).tocsr()
    X.data = np.log1p(X.data)
    y = src.obs[LABELS].astype(str).to_numpy()
    labels = np.empty(len(y), dtype=object)
    for t in np.unique(y):
        rows = np.flatnonzero(y == t)
        Z = TruncatedSVD(20, random_state=seed).fit_transform(X[rows])
        groups = KMeans(N_TYPES // 5, n_init=4, random_state=seed).fit_predict(Z)
        labels[rows] = [f"{t} {g + 1}" for g in groups]
    return SOURCE, labels.astype(str)


def build(n_cells: int, path: Path, seed: int = 0) -> dict:
    from predict import build_query

    source, labels = thirty_types(seed)
    names = np.unique(labels)
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(names) + 1)
    per_type = rng.multinomial(n_cells, weights / weights.sum())
    picks = np.concatenate([rng.choice(np.flatnonzero(labels == t), k) for t, k in zip(rng.permutation(names),
                                                                                        per_type)])
    info = build_query(source, n_cells, path, picks=rng.permutation(picks), labels=labels)
    info["cells_per_type"] = sorted(per_type.tolist(), reverse=True)
    return info


def measured(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def poll():
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except OSError:
                pass
            time.sleep(0.5)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    th.join()
    return {"seconds": time.perf_counter() - t0, "peak_rss": peak[0], "rc": proc.returncode,
            "stdout": out[-2000:], "stderr": err[-2000:], "stderr_all": err}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="100000,1000000")
    p.add_argument("--method", default="afrcl")
    p.add_argument("--flags", default="", help="more options of gsrcl train, e.g. '--ensemble 1 --epochs 3'")
    p.add_argument("--keep", action="store_true", help="keep the reference files in benchmarks/scratch")
    p.add_argument("--scratch", type=Path, default=SCRATCH,
                   help="where the reference files are built and, with --keep, kept (default benchmarks/scratch)")
    p.add_argument("--stages", action="store_true",
                   help="also record the memory at each of gsrcl train's log lines (benchmarks/harness/rss_log.py)")
    p.add_argument("--out", type=Path, default=RESULT)
    a = p.parse_args(argv)
    a.scratch.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(c) for c in a.cells.split(",")]:
        path = a.scratch / f"reference_{n}.h5ad"
        info = None
        if not path.exists():
            print(f"building a {n:,}-cell reference ...", flush=True)
            info = build(n, path)
        with tempfile.TemporaryDirectory(dir=a.scratch) as refdir:
            run = [str(ROOT / "benchmarks" / "harness" / "rss_log.py")] if a.stages else ["-m", "gsrcl"]
            cmd = [sys.executable, *run, "train", "-i", str(path), "--labels", "cell_type", "-r", "large",
                   "-mp", refdir, "--method", a.method, "-q", *(["-v"] if a.stages else []), *shlex.split(a.flags)]
            print(f"{n:,} cells: {' '.join(cmd[len(run) + 1:])}", flush=True)
            r = measured(cmd)
            if a.stages:
                r["stages"] = [line for line in r.pop("stderr_all").splitlines() if line.startswith("[rss ")]
            else:
                r.pop("stderr_all")
            if r["rc"] == 0:
                m = json.loads((Path(refdir) / "large" / "manifest.json").read_text())["training"]
                r.update(cells_kept=m["cells"], max_cells_per_type=m["max_cells_per_type"],
                         seconds_fit=m["seconds_fit"], seconds_novelty=m["seconds_novelty"])
            else:
                print(r["stderr"], file=sys.stderr)
        r.update(cells=n, method=a.method, flags=a.flags, load=os.getloadavg(), build=info)
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("stdout", "stderr", "stages")}), flush=True)
        if not a.keep:
            path.unlink(missing_ok=True)
    lines = ["| cells | kept (cap) | flags | s | fit s | peak GB |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['cells']:,} | {r.get('cells_kept', '-')} ({r.get('max_cells_per_type', '-')}) | {r['flags']} | "
              f"{r['seconds']:.0f} | {r.get('seconds_fit', float('nan')):.0f} | {r['peak_rss'] / 2**30:.2f} |"
              for r in rows]
    md = "\n".join(lines)
    print(md)
    write_json(a.out, {"command": "benchmarks/train_large.py " + " ".join(argv or sys.argv[1:]), "rows": rows,
                       "table": md})
    return 0


if __name__ == "__main__":
    sys.exit(main())
