"""Prediction speed and peak memory of ``gsrcl predict`` against CellTypist, for 10k / 100k / 1M query cells.

The query: cells resampled with replacement from the real cells of ``mouse_immune_actinn_1k.h5ad`` (raw counts,
~1,500 non-zero genes per cell, 19,371 genes), written as h5ad into ``benchmarks/scratch/`` (git-ignored) block
by block with h5py, so building it never holds the whole matrix (uncompressed: ~12 GB per million cells).

The references: each method's ``default`` preset (its architecture is what prediction speed depends on) trained
for a few epochs on the 1k set. Each measurement runs in a fresh subprocess: the parent polls its RSS with
psutil and the child reports its own peak (VmHWM); the larger is reported. Timings start after the imports.

- gsrcl: ``predict_files`` (reading from disk in blocks, gene matching, values, prediction, writing
  probabilities.csv, legend.txt and annotated.h5ad with the query's X); the t-SNE (of at most 50,000 cells) is
  run in the same call and reported apart, and cells/s excludes it. cells/s includes the query neighbourhoods
  that ``obs['unseen_score']`` is averaged over (three more reads of the query, a PCA and a neighbour search; also
  reported apart); ``--without-neighbours`` also runs each method with ``--neighbours 0`` in the same run.
- baseline: CellTypist 1.7.1's annotation (``pip install celltypist==1.7.1``, a benchmark-only dependency), timed
  for reading the query h5ad, normalising it to log1p CP10k (as CellTypist requires),
  ``celltypist.annotate(..., majority_voting=False)`` and writing its label and probability tables. Its model
  (z-scored log1p CP10k clipped at 10, logistic regression C=1) is fitted on the same 1k cells with
  scikit-learn following ``celltypist.train``'s code, because celltypist 1.7.1 cannot train under
  scikit-learn >= 1.8 (it passes ``multi_class='ovr'``); training speed is not measured. Without celltypist, the
  same annotator written with scikit-learn runs instead; the table says which ran. A run whose RSS passes ``--mem-limit`` GB is stopped and reported as
  such (CellTypist needed 12 GB for 50,000 cells when measured before).

- ``--dask local:1,local:2`` also runs each method on a Dask ``LocalCluster`` of that many worker processes (one
  thread each; ``gsrcl predict --dask``), in the same run: cells/s against the single-process run of the same
  size ("vs single"), the peak memory of each worker process and of the client (the process that runs
  ``predict_files``, which must not hold the matrix). The cluster's start (and the workers' imports) is timed
  apart; the workers' loading of the reference is part of the run, as the single process's is.

Targets: AF-RCL >= the baseline's cells/s, GsRCL >= a quarter of it, peak memory < 3 GB whatever the size.

    .venv/bin/python benchmarks/predict.py --cells 10000
    .venv/bin/python benchmarks/predict.py --cells 10000,100000,1000000 --mem-limit 16
    .venv/bin/python benchmarks/predict.py --cells 100000 --methods afrcl --baseline none --without-neighbours
    .venv/bin/python benchmarks/predict.py --cells 1000000 --methods afrcl --neighbours-only
    .venv/bin/python benchmarks/predict.py --cells 1000000 --methods afrcl --baseline none --no-tsne \
        --dask local:1,local:2 --out benchmarks/results/predict_dask.json

Timings taken while other work shares the CPUs are not trustworthy: the JSON records the load average at the
start and end of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from harness.files import write_json  # noqa: E402  (benchmarks/ is on the path)
SOURCE = ROOT.parent / "shared" / "data" / "mouse_immune_actinn_1k.h5ad"
SCRATCH = ROOT / "benchmarks" / "scratch"
RESULT = ROOT / "benchmarks" / "results" / "predict.json"
LABELS = "cell_type"
TARGET_MEMORY_GB = 3.0


# --- the query -------------------------------------------------------------------------------------------


def build_query(source: Path, n_cells: int, path: Path, seed: int = 0, chunk: int = 20_000, picks=None,
                labels=None) -> dict:
    """``n_cells`` cells resampled from ``source`` into an h5ad at ``path``, written chunk by chunk.

    ``picks`` (the source rows to write, default: drawn uniformly) and ``labels`` (one per source cell, default:
    its ``cell_type``) let `benchmarks/train_large.py` build a labelled reference the same way."""
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import write_elem

    src = ad.read_h5ad(source)
    X = sp.csr_matrix(src.X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, X.shape[0], size=n_cells) if picks is None else np.asarray(picks)
    labels = src.obs[LABELS].astype(str).to_numpy() if labels is None else np.asarray(labels, dtype=str)
    indptr = np.concatenate([[0], np.cumsum(np.diff(X.indptr)[picks])]).astype(np.int64)
    nnz = int(indptr[-1])
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, X.shape[1])})
        data = g.create_dataset("data", shape=(nnz,), dtype=np.float32, chunks=(1 << 20,))
        indices = g.create_dataset("indices", shape=(nnz,), dtype=np.int32, chunks=(1 << 20,))
        g.create_dataset("indptr", data=indptr)
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            block = X[picks[start:stop]]
            data[indptr[start] : indptr[stop]] = block.data
            indices[indptr[start] : indptr[stop]] = block.indices
        names = pd.Index([f"c{i}" for i in range(n_cells)])
        write_elem(f, "obs", pd.DataFrame({LABELS: labels[picks]}, index=names))
        write_elem(f, "var", src.var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
    os.replace(tmp, path)
    return {"cells": n_cells, "genes": int(X.shape[1]), "nnz": nnz, "nnz_per_cell": nnz / n_cells,
            "bytes": path.stat().st_size}


# --- workers (run in a subprocess each) ----------------------------------------------------------------------


def _vmhwm() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_train(method: str, refdir: Path, epochs: int) -> dict:
    import anndata as ad

    from gsrcl import train

    adata = ad.read_h5ad(SOURCE)
    t0 = time.perf_counter()
    ref = train(adata, labels_key=LABELS, method=method, name=method, epochs=epochs, min_epochs=0, quiet=True)
    ref.save(refdir, method, overwrite=True)
    return {"seconds": time.perf_counter() - t0}


def _warm() -> None:
    """A worker's imports, done before the timing (a standing cluster has them done)."""
    import gsrcl.distributed  # noqa: F401
    import gsrcl.methods.afrcl  # noqa: F401
    import gsrcl.methods.gsrcl  # noqa: F401


def worker_gsrcl(query: Path, ref: Path, out: Path, block_size: int, plot: bool, neighbours: int | None = None,
                 dask: str | None = None) -> dict:
    import contextlib

    from gsrcl import Reference
    from gsrcl.outputs import predict_files

    t_start = time.perf_counter()
    if dask:
        from gsrcl.distributed import connect

        cluster = connect(dask)
    else:
        cluster = contextlib.nullcontext()
    with cluster as client:
        if client is not None:
            client.run(_warm)
        startup = time.perf_counter() - t_start
        base = _vmhwm()
        t0 = time.perf_counter()
        extra = {} if neighbours is None else {"neighbours": neighbours}
        summary = predict_files(query, Reference.load(ref), out, block_size=block_size, overwrite=True, plot=plot,
                                quiet=True, client=client, **extra)
        total = time.perf_counter() - t0
        workers = sorted(client.run(_vmhwm).values()) if client is not None else None
    r = {"seconds": total - summary["seconds_tsne"], "seconds_tsne": summary["seconds_tsne"],
         "seconds_neighbours": summary["prediction"].info["neighbours"].get("seconds", 0.0),
         "cells": summary["n_cells"], "peak_rss_self": _vmhwm(), "rss_after_imports": base}
    if client is not None:
        r.update(seconds_cluster_start=startup, peak_rss_workers=workers, peak_rss_client=r["peak_rss_self"])
    return r


def worker_neighbours(query: Path, ref: Path, block_size: int) -> dict:
    """The query neighbourhoods alone, found as prediction finds them (its variance pass included): no
    prediction."""
    from gsrcl import Reference
    from gsrcl.io import open_query
    from gsrcl.neighbours import QueryNeighbours
    from gsrcl.model_input import log1p_cp10k
    from gsrcl.predict import prepare, rows_in

    base = _vmhwm()
    t0 = time.perf_counter()
    source = open_query(query)
    kind = prepare(source, Reference.load(ref)).kind

    def blocks(rows=None):
        for start, block in source.iter_blocks(block_size):
            if rows is not None:
                block = block[rows_in(rows, start, start + block.shape[0])]
            yield log1p_cp10k(block, kind)

    t1 = time.perf_counter()
    graph = QueryNeighbours(15).fit(blocks, int(source.n_obs))
    record = {"applied": True, **graph.record(), "seconds": round(time.perf_counter() - t1, 2)}
    return {"seconds": time.perf_counter() - t0, "seconds_neighbours": record.get("seconds", 0.0),
            "cells": int(source.n_obs), "peak_rss_self": _vmhwm(), "rss_after_imports": base, "record": record}


def _log_cp10k(X):
    import numpy as np

    X = X.tocsr().astype(np.float32)
    sums = np.asarray(X.sum(axis=1)).ravel()
    X.data *= np.repeat(np.divide(1e4, sums, out=np.zeros_like(sums), where=sums > 0), np.diff(X.indptr))
    np.log1p(X.data, out=X.data)
    return X


def worker_baseline(query: Path, out: Path, kind: str) -> dict:
    import anndata as ad
    import numpy as np
    import pandas as pd

    ref = ad.read_h5ad(SOURCE)
    ref.X = _log_cp10k(ref.X)
    labels = ref.obs[LABELS].astype(str).to_numpy()
    out.mkdir(parents=True, exist_ok=True)
    if kind == "celltypist":
        import celltypist
        from celltypist.models import Model
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        # celltypist.train's recipe, fitted here because celltypist 1.7.1 cannot train under scikit-learn >= 1.8
        # (it passes multi_class='ovr'); the annotation below is celltypist's own code
        expressed = np.asarray(ref.X.getnnz(axis=0) > 0)
        scaler = StandardScaler(with_mean=True)
        Z = scaler.fit_transform(ref.X[:, expressed].toarray())
        Z[Z > 10] = 10
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(Z, labels)
        clf.features = np.asarray(ref.var_names)[expressed]
        clf.n_features_in_ = int(expressed.sum())
        model = Model(clf, scaler, {"date": "", "details": "benchmark", "url": "", "source": "", "version": "",
                                    "number_celltypes": len(clf.classes_)})
        base = _vmhwm()
        t0 = time.perf_counter()
        q = ad.read_h5ad(query)
        q.X = _log_cp10k(q.X)
        result = celltypist.annotate(q, model=model, majority_voting=False)
        result.predicted_labels.to_csv(out / "predicted_labels.csv")
        result.probability_matrix.to_csv(out / "probability_matrix.csv")
        n = q.n_obs
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(ref.X.toarray())
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(ref.X.toarray()), labels)
        base = _vmhwm()
        t0 = time.perf_counter()
        q = ad.read_h5ad(query)
        genes = pd.Index(q.var_names).get_indexer(ref.var_names)
        Xq = _log_cp10k(q.X)[:, np.clip(genes, 0, None)].toarray()
        Xq[:, genes < 0] = 0
        P = clf.predict_proba(scaler.transform(Xq))
        pd.DataFrame(P, index=q.obs_names, columns=clf.classes_).to_csv(out / "probability_matrix.csv")
        pd.Series(clf.classes_[P.argmax(1)], index=q.obs_names).to_csv(out / "predicted_labels.csv")
        n = q.n_obs
    return {"seconds": time.perf_counter() - t0, "cells": n, "peak_rss_self": _vmhwm(), "rss_after_imports": base}


def _worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("job", choices=("train", "gsrcl", "baseline", "neighbours"))
    p.add_argument("--method")
    p.add_argument("--query", type=Path)
    p.add_argument("--ref", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--plot", action="store_true")
    p.add_argument("--neighbours", type=int)
    p.add_argument("--dask")
    a = p.parse_args(argv)
    if a.job == "train":
        r = worker_train(a.method, a.ref, a.epochs)
    elif a.job == "neighbours":
        r = worker_neighbours(a.query, a.ref, a.block_size)
    elif a.job == "gsrcl":
        r = worker_gsrcl(a.query, a.ref, a.out, a.block_size, a.plot, a.neighbours, a.dask)
    else:
        r = worker_baseline(a.query, a.out, a.method)
    print("RESULT " + json.dumps(r), flush=True)


# --- the parent -------------------------------------------------------------------------------------------------


def run_measured(args: list[str], mem_limit_gb: float, timeout: float) -> dict:
    """Run a worker, polling the RSS of it and its children; stop it past ``mem_limit_gb``."""
    import psutil

    proc = subprocess.Popen([sys.executable, __file__, "_worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak, killed, t0 = 0, None, time.perf_counter()
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        if peak > mem_limit_gb * 2**30:
            killed = f"stopped: RSS passed {mem_limit_gb:g} GB"
        elif time.perf_counter() - t0 > timeout:
            killed = f"stopped: ran past {timeout:g} s"
        if killed:
            proc.kill()
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if killed:
        return {"error": killed, "peak_rss": peak}
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:300]}", "peak_rss": peak}
    r = json.loads(line[len("RESULT "):])
    r["peak_rss"] = max(peak, r.get("peak_rss_self", 0))
    return r


def baseline_kind(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import celltypist  # noqa: F401

        return "celltypist"
    except Exception:  # noqa: BLE001 - any import failure means: use the scikit-learn re-implementation
        return "sklearn"


def table(rows: list[dict]) -> str:
    lines = ["| cells | annotator | cells/s | vs baseline | target | peak memory | < 3 GB | t-SNE s | neighbourhoods s |",
             "|---:|---|---:|---:|---|---:|---|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['cells']:,} | {r['name']} | - | - | - | {r['peak_rss'] / 2**30:.2f} GB+ | - | {r['error']} | |")
            continue
        ratio = r.get("ratio")
        target = r.get("target")
        ok_rate = "" if target is None or ratio is None else ("met" if ratio >= target else "MISSED") + f" (>= {target:g}x)"
        mem = r["peak_rss"] / 2**30
        ok_mem = "" if r["name"].startswith("baseline") else ("yes" if mem < TARGET_MEMORY_GB else "NO")
        tsne = f"{r['seconds_tsne']:.1f}" if "seconds_tsne" in r else ""
        hood = f"{r['seconds_neighbours']:.1f}" if r.get("seconds_neighbours") else ""
        lines.append(f"| {r['cells']:,} | {r['name']} | {r['cells_per_s']:,.0f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | {ok_rate} | {mem:.2f} GB | {ok_mem} | {tsne} | {hood} |")
    return "\n".join(lines)


def dask_table(rows: list[dict]) -> str:
    """The --dask rows: cells/s against the single-process run, the client's and each worker's peak memory."""
    lines = ["| cells | annotator | cells/s | vs single | client peak | each worker's peak | cluster start s |",
             "|---:|---|---:|---:|---:|---|---:|"]
    for r in rows:
        if "dask" not in r:
            continue
        if "error" in r:
            lines.append(f"| {r['cells']:,} | {r['name']} | - | - | - | - | {r['error']} |")
            continue
        ratio = r.get("vs_single")
        workers = ", ".join(f"{w / 2**30:.2f} GB" for w in r["peak_rss_workers"])
        lines.append(f"| {r['cells']:,} | {r['name']} | {r['cells_per_s']:,.0f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | {r['peak_rss_client'] / 2**30:.2f} GB | "
                     f"{workers} | {r['seconds_cluster_start']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from gsrcl.versions import versions

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        _worker(argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="10000,100000,1000000", help="query sizes, comma-separated")
    p.add_argument("--methods", default="afrcl,gsrcl")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the references (speed does not depend on it)")
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--baseline", choices=("auto", "celltypist", "sklearn", "none"), default="auto")
    p.add_argument("--baseline-max-cells", type=int, default=100_000,
                   help="skip the baseline above this many cells (it holds the whole query in memory)")
    p.add_argument("--mem-limit", type=float, default=16.0, help="stop a run whose RSS passes this many GB")
    p.add_argument("--timeout", type=float, default=7200.0, help="stop a run after this many seconds")
    p.add_argument("--no-tsne", action="store_true", help="skip the t-SNE")
    p.add_argument("--neighbours-only", action="store_true",
                   help="time only the query neighbourhoods (no prediction, no baseline) at each size")
    p.add_argument("--without-neighbours", action="store_true",
                   help="also run each method with --neighbours 0, in the same run: the cost of the query "
                   "neighbourhoods that obs['unseen_score'] is averaged over")
    p.add_argument("--dask", default="", metavar="local:1,local:2",
                   help="also run each method on these Dask clusters (comma-separated: local:N or an address)")
    p.add_argument("--keep", action="store_true", help="keep the query files and outputs in benchmarks/scratch")
    p.add_argument("--retrain", action="store_true", help="train the references again even if scratch holds them")
    p.add_argument("--out", type=Path, default=RESULT)
    a = p.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in a.cells.split(",") if s]
    methods = [m for m in a.methods.split(",") if m]
    kind = baseline_kind(a.baseline)
    if not SOURCE.exists():
        print(f"{SOURCE} is absent", file=sys.stderr)
        return 1
    SCRATCH.mkdir(parents=True, exist_ok=True)
    refdir = SCRATCH / "refs"
    load_start = os.getloadavg()
    train_info = {}
    for m in methods:
        if a.retrain or not (refdir / m / "manifest.json").exists():
            print(f"training the {m} reference ({a.epochs} epochs) ...", flush=True)
            train_info[m] = run_measured(["train", "--method", m, "--ref", str(refdir), "--epochs", str(a.epochs)],
                                         a.mem_limit, a.timeout)
            if "error" in train_info[m]:
                print(f"training {m} failed: {train_info[m]['error']}", file=sys.stderr)
                return 1
    rows = []
    for n in sizes:
        query = SCRATCH / f"query_{n}.h5ad"
        if not query.exists():
            print(f"building a {n:,}-cell query ...", flush=True)
            info = build_query(SOURCE, n, query)
            print(f"  {info['nnz_per_cell']:.0f} non-zeros per cell, {info['bytes'] / 2**30:.2f} GB", flush=True)
        base_rate = None
        if a.neighbours_only:
            print(f"{n:,} cells: the query neighbourhoods alone ...", flush=True)
            r = run_measured(["neighbours", "--query", str(query), "--ref", str(refdir / methods[0]),
                              "--block-size", str(a.block_size)], a.mem_limit, a.timeout)
            r.update(cells=n, name="query neighbourhoods alone")
            if "error" not in r:
                r["cells_per_s"] = n / r["seconds"]
            rows.append(r)
        elif kind != "none" and n <= a.baseline_max_cells:
            print(f"{n:,} cells: baseline ({kind}) ...", flush=True)
            r = run_measured(["baseline", "--method", kind, "--query", str(query), "--out", str(SCRATCH / f"out_{n}_baseline")],
                             a.mem_limit, a.timeout)
            r.update(cells=n, name=f"baseline: {kind}")
            if "error" not in r:
                r["cells_per_s"] = n / r["seconds"]
                base_rate = r["cells_per_s"]
            rows.append(r)
        elif kind != "none":
            rows.append({"cells": n, "name": f"baseline: {kind}", "error": f"skipped above {a.baseline_max_cells:,} cells",
                         "peak_rss": 0})
        clusters = [c for c in a.dask.split(",") if c]
        runs = [(m, None, None) for m in methods] + ([(m, 0, None) for m in methods] if a.without_neighbours else [])
        runs += [(m, None, c) for m in methods for c in clusters]
        runs = [] if a.neighbours_only else runs
        single: dict[str, float] = {}
        for m, neighbours, cluster in runs:
            name = m if neighbours is None else f"{m} --neighbours 0"
            name += f" --dask {cluster}" if cluster else ""
            print(f"{n:,} cells: gsrcl predict, {name} ...", flush=True)
            args = ["gsrcl", "--query", str(query), "--ref", str(refdir / m), "--out", str(SCRATCH / f"out_{n}_{m}"),
                    "--block-size", str(a.block_size)] + ([] if a.no_tsne else ["--plot"])
            args += [] if neighbours is None else ["--neighbours", str(neighbours)]
            args += ["--dask", cluster] if cluster else []
            r = run_measured(args, a.mem_limit, a.timeout)
            r.update(cells=n, name=name, target=1.0 if m == "afrcl" else 0.25)
            if cluster:
                r["dask"] = cluster
            if "error" not in r:
                r["cells_per_s"] = n / r["seconds"]
                r["ratio"] = None if base_rate is None else r["cells_per_s"] / base_rate
                if not cluster and neighbours is None:
                    single[m] = r["cells_per_s"]
                elif cluster:
                    r["vs_single"] = r["cells_per_s"] / single[m] if m in single else None
            rows.append(r)
        if not a.keep:
            query.unlink(missing_ok=True)
            for d in SCRATCH.glob(f"out_{n}_*"):
                shutil.rmtree(d, ignore_errors=True)
    md = table(rows)
    if a.dask:
        md += "\n\n" + dask_table(rows)
    print(md)
    result = {
        "command": "benchmarks/predict.py " + " ".join(argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_start": load_start,
                    "load_end": os.getloadavg()},
        "versions": versions("torch", "numpy", "scikit-learn", "anndata", "openTSNE", "celltypist"),
        "baseline": kind,
        "block_size": a.block_size,
        "reference_epochs": a.epochs,
        "training": train_info,
        "rows": rows,
        "table": md,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
