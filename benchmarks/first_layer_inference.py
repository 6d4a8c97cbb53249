"""The sparse first layer at prediction time (no autograd): one `embedding_bag` pass over all output columns
against passes over groups of G columns (what `gsrcl.nn.encoder.InputLinear` does, G = GATHER_COLUMNS), and a
dense product, on a block of real cells.

The block: 4,096 cells resampled from mouse_immune_actinn_1k (19,371 genes, ~1,500 non-zeros a cell), log1p;
weights N(0, 0.02²) of the widths AF-RCL (1,024) and GsRCL (4,096) use. Every variant runs ``--reps`` times in
turn (so a neighbour's load falls on all alike); the best time of each is reported, with its ratio to the one-
pass product, and each grouped result is checked to be bitwise the one-pass result.

    OMP_NUM_THREADS=1 python benchmarks/first_layer_inference.py [--threads 1] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
from harness.files import write_json  # noqa: E402  (benchmarks/ is on the path)
DATA = ROOT.parent / "shared" / "data" / "mouse_immune_actinn_1k.h5ad"
RESULT = ROOT / "benchmarks" / "results" / "first_layer_inference.json"
warnings.filterwarnings("ignore", category=UserWarning)


def grouped(col, crow, val, W, group):
    out = torch.empty(crow.numel() - 1, W.shape[1])
    for s in range(0, W.shape[1], group):
        out[:, s : s + group] = F.embedding_bag(col, W[:, s : s + group].contiguous(), crow, mode="sum",
                                                per_sample_weights=val, include_last_offset=True)
    return out


def main(argv=None) -> int:
    import anndata as ad
    import scipy.sparse as sp

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--widths", default="1024,4096")
    p.add_argument("--groups", default="16,32,64,128")
    p.add_argument("--out", type=Path, default=RESULT)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    X = sp.csr_matrix(ad.read_h5ad(DATA).X, dtype=np.float32)
    X = X[np.random.default_rng(0).integers(0, X.shape[0], 4096)]
    X.data = np.log1p(X.data)
    crow, col = torch.from_numpy(X.indptr.astype(np.int64)), torch.from_numpy(X.indices.astype(np.int64))
    val = torch.from_numpy(X.data)
    dense = torch.from_numpy(X.toarray())
    rows = []
    with torch.inference_mode():
        for width in map(int, a.widths.split(",")):
            W = torch.randn(X.shape[1], width, generator=torch.Generator().manual_seed(0)) * 0.02
            one = F.embedding_bag(col, W, crow, mode="sum", per_sample_weights=val, include_last_offset=True)
            variants = {"one pass": lambda: F.embedding_bag(col, W, crow, mode="sum", per_sample_weights=val,
                                                            include_last_offset=True),
                        "dense product": lambda: dense @ W}
            for g in map(int, a.groups.split(",")):
                variants[f"groups of {g}"] = lambda g=g: grouped(col, crow, val, W, g)
            best = {k: float("inf") for k in variants}
            for _ in range(a.reps):
                for name, fn in variants.items():
                    t0 = time.perf_counter()
                    y = fn()
                    best[name] = min(best[name], time.perf_counter() - t0)
                    if name.startswith("groups") and not torch.equal(y, one):
                        raise SystemExit(f"{name}: not bitwise the one-pass product")
            for name, s in best.items():
                rows.append({"width": width, "variant": name, "seconds": s, "vs_one_pass": best["one pass"] / s})
    lines = ["| width | variant | s per 4,096 cells | speed-up vs one pass |", "|---|---|---|---|"]
    lines += [f"| {r['width']} | {r['variant']} | {r['seconds']:.3f} | {r['vs_one_pass']:.2f}x |" for r in rows]
    md = "\n".join(lines)
    print(md)
    result = {"command": "benchmarks/first_layer_inference.py " + " ".join(argv or sys.argv[1:]),
              "threads": a.threads, "load": os.getloadavg(), "density": X.nnz / np.prod(X.shape), "rows": rows,
              "table": md}
    write_json(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
