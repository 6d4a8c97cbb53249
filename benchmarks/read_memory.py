"""Peak memory of reading a large 10x HDF5 file: gsrcl's reader against scanpy.read_10x_h5.

Builds a Cell Ranger v3 HDF5 file of ``--cells`` cells by resampling real cells (with replacement) of a
shared dataset, then measures in a fresh subprocess each:

- ``read_query``: the whole matrix as AnnData (CSR float32);
- ``iter_blocks``: one pass over row blocks (what `verify` uses for a large file);
- ``scanpy.read_10x_h5``: the baseline.

Peak RSS comes from VmHWM in /proc/self/status (ru_maxrss elsewhere); the RSS after the imports is subtracted
and the rest is reported as a multiple of the CSR size (data + indices + indptr bytes of the matrix as
gsrcl returns it: float32 values, int32 indices). Target: the reader within 3x of that size.

    .venv/bin/python benchmarks/read_memory.py --cells 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "mouse_immune_actinn_1k.h5ad"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "read_memory.json"
TARGET = 3.0


def _barcodes(start: int, stop: int):
    """Unique 16-base barcodes with a -1 suffix (the number i written in base 4 over ACGT)."""
    import numpy as np

    idx = np.arange(start, stop, dtype=np.int64)
    digits = (idx[:, None] // (4 ** np.arange(15, -1, -1))) % 4
    letters = np.frombuffer(b"ACGT", dtype="S1")[digits]
    return np.asarray([b"".join(row) + b"-1" for row in letters])


def build_10x(source: Path, n_cells: int, path: Path, seed: int = 0, chunk: int = 10_000) -> dict:
    """Write a 10x v3 file of ``n_cells`` cells resampled from ``source``; chunk by chunk, bounded memory."""
    import anndata as ad
    import h5py
    import numpy as np
    import scipy.sparse as sp

    src = ad.read_h5ad(source)
    X = sp.csr_matrix(src.X)
    genes = np.asarray(src.var_names, dtype="S")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, X.shape[0], size=n_cells)
    nnz_per_cell = np.diff(X.indptr)[picks]
    indptr = np.concatenate([[0], np.cumsum(nnz_per_cell)]).astype(np.int64)
    nnz = int(indptr[-1])
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        opts = {"compression": "gzip", "compression_opts": 1, "chunks": (1 << 20,)}
        data = g.create_dataset("data", shape=(nnz,), dtype=np.int32, **opts)
        indices = g.create_dataset("indices", shape=(nnz,), dtype=np.int64, **opts)
        g.create_dataset("indptr", data=indptr)
        g.create_dataset("shape", data=np.asarray([X.shape[1], n_cells], dtype=np.int32))
        bc = g.create_dataset("barcodes", shape=(n_cells,), dtype="S18")
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            block = X[picks[start:stop]]
            lo, hi = indptr[start], indptr[stop]
            data[lo:hi] = np.rint(block.data).astype(np.int32)
            indices[lo:hi] = block.indices.astype(np.int64)
            bc[start:stop] = _barcodes(start, stop)
        feats = g.create_group("features")
        feats.create_dataset("id", data=genes)
        feats.create_dataset("name", data=genes)
        feats.create_dataset("feature_type", data=np.asarray([b"Gene Expression"] * len(genes)))
        feats.create_dataset("genome", data=np.asarray([b"mm10"] * len(genes)))
        feats.create_dataset("_all_tag_keys", data=np.asarray([b"genome"]))
    return {"cells": n_cells, "genes": int(X.shape[1]), "nnz": nnz, "file_bytes": path.stat().st_size,
            "csr_bytes": nnz * 8 + (n_cells + 1) * (4 if nnz < 2**31 else 8)}


def _peak_rss_kib() -> int:
    """The process's peak RSS. VmHWM belongs to the address space, so it starts afresh at exec; ru_maxrss
    (the fallback off Linux) can carry the parent's peak into a child."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_now_kib() -> int:
    import psutil

    return psutil.Process().memory_info().rss // 1024


def measure(kind: str, path: Path, block_size: int = 10_000) -> dict:
    """Run one reader in this (fresh) process; memory figures in KiB."""
    import anndata  # noqa: F401
    import h5py  # noqa: F401
    import numpy  # noqa: F401
    import scipy.sparse  # noqa: F401

    if kind == "scanpy":
        import scanpy as sc
    else:
        from gsrcl.io import open_query, read_query
    baseline = _rss_now_kib()
    t0 = time.perf_counter()
    if kind == "read_query":
        adata = read_query(path)
        nnz, shape = adata.X.nnz, adata.shape
    elif kind == "iter_blocks":
        src = open_query(path)
        nnz = sum(block.nnz for _, block in src.iter_blocks(block_size))
        shape = src.shape
    elif kind == "scanpy":
        adata = sc.read_10x_h5(path)
        nnz, shape = adata.X.nnz, adata.shape
    else:
        raise ValueError(kind)
    seconds = time.perf_counter() - t0
    peak = _peak_rss_kib()
    return {"reader": kind, "seconds": seconds, "peak_rss_kib": peak, "baseline_rss_kib": baseline,
            "nnz": int(nnz), "shape": list(shape)}


def _run_child(kind: str, path: Path, block_size: int) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, __file__, "--measure", kind, "--file", str(path), "--block-size",
                          str(block_size)], capture_output=True,
                         text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".read_memory.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="h5ad whose cells are resampled")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workdir", type=Path, default=None, help="where the 10x file is built (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=10_000, help="cells per block for the iter_blocks pass")
    parser.add_argument("--no-baseline", action="store_true", help="skip scanpy.read_10x_h5")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:  # child process
        print(json.dumps(measure(args.measure, args.file, args.block_size)))
        return 0

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / f"resampled_{args.cells}.h5"
        t0 = time.perf_counter()
        info = build_10x(args.source, args.cells, path, seed=args.seed)
        info["build_seconds"] = time.perf_counter() - t0
        kinds = ["read_query", "iter_blocks"] + ([] if args.no_baseline else ["scanpy"])
        rows = [_run_child(kind, path, args.block_size) for kind in kinds]

    csr = info["csr_bytes"]
    for row in rows:
        row["over_baseline_bytes"] = (row["peak_rss_kib"] - row["baseline_rss_kib"]) * 1024
        row["x_csr"] = row["over_baseline_bytes"] / csr
        row["within_target"] = row["x_csr"] <= TARGET if row["reader"] != "scanpy" else None
    by = {r["reader"]: r for r in rows}
    if "scanpy" in by:
        for kind in ("read_query", "iter_blocks"):
            by[kind]["vs_scanpy_memory"] = by[kind]["over_baseline_bytes"] / max(1, by["scanpy"]["over_baseline_bytes"])
            by[kind]["vs_scanpy_seconds"] = by[kind]["seconds"] / max(1e-9, by["scanpy"]["seconds"])

    mib = 1 / 2**20
    print(f"\n10x v3 file: {info['cells']} cells x {info['genes']} genes, {info['nnz']} non-zeros, "
          f"{info['file_bytes'] * mib:.0f} MiB on disk; CSR float32/int32 = {csr * mib:.0f} MiB "
          f"(source {args.source.name}); iter_blocks with {args.block_size} cells per block\n")
    print("| reader | seconds | peak RSS (MiB) | RSS after imports (MiB) | peak - imports (MiB) | x CSR size | vs scanpy (memory) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        vs = f"{r['vs_scanpy_memory']:.2f}" if "vs_scanpy_memory" in r else "-"
        print(f"| {r['reader']} | {r['seconds']:.1f} | {r['peak_rss_kib'] / 1024:.0f} | {r['baseline_rss_kib'] / 1024:.0f} "
              f"| {r['over_baseline_bytes'] * mib:.0f} | {r['x_csr']:.2f} | {vs} |")
    print(f"\ntarget: gsrcl readers at most {TARGET:.0f}x the CSR size above the import baseline")
    _write_json(args.out, {"benchmark": "read_memory", "file": info, "block_size": args.block_size,
                           "target_x_csr": TARGET, "results": rows,
                           "python": sys.version.split()[0], "cpu_count": os.cpu_count()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
