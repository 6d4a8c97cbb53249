"""``gsrcl import`` at the published references' size: import time, and gsrcl's probabilities against the original
tool's rules on the same query.

The published references cannot be downloaded here, so references of their size are built in the original
layouts with the tests' fixture builders (`tests/original/fixtures.py`): GsRCL with the published encoder
(4096-4096-4096 -> 2048, no norms) per cell type, and AF-RCL at its fixed sizes, on the 19,371 genes of
``../shared/data/mouse_immune_actinn_1k.h5ad`` (raw counts, about 8% non-zero, 5 types), their SVMs fitted by
scikit-learn on the first half of its cells; the other half is the query (``--cells`` of them). The encoders'
weights are random: this measures conversion, speed and agreement, not accuracy. Without ../shared, synthetic
counts on ``--genes`` genes (denser than real cells) stand in.
Then, for each: ``gsrcl import`` (timed, in-process, after the imports), ``gsrcl predict`` on ``--cells`` query
cells (timed), and the original's probabilities computed step by step with scikit-learn's ``predict_proba`` (the
baseline, timed too); reported: the largest absolute difference and whether the labels agree.

    .venv/bin/python benchmarks/import_original.py
    .venv/bin/python benchmarks/import_original.py --types 2 --genes 5000 --cells 500   # synthetic, no ../shared

The folders go to ``benchmarks/scratch/`` (git-ignored) and are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.original import fixtures as F  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=int, default=3)
    parser.add_argument("--genes", type=int, default=15000)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--labels", default="cell_type", help="the real data's label column")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "import_original.json"))
    args = parser.parse_args()

    import anndata as ad
    import pandas as pd

    from gsrcl.cli import main as gsrcl

    scratch = ROOT / "benchmarks" / "scratch" / "import_original"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    data = ROOT.parent / "shared" / "data" / "mouse_immune_actinn_1k.h5ad"
    rng = np.random.default_rng(0)
    if data.exists():
        real = ad.read_h5ad(data)
        X = real.X.toarray() if hasattr(real.X, "toarray") else np.asarray(real.X)
        labels = real.obs[args.labels].astype(str).to_numpy()
        genes, types = list(map(str, real.var_names)), sorted(set(labels))
        half = len(X) // 2
        cells = (X[:half].astype(np.int64), np.searchsorted(types, labels[:half]))
        Q = X[half:half + args.cells].astype(np.int64)
    else:
        genes = [f"G{i:05d}" for i in range(args.genes)]
        types = [f"type{i}" for i in range(args.types)]
        cells = None
        Q, _ = F.counts(args.cells, genes, rng, types)
    args.cells = len(Q)
    query = ad.AnnData(Q.astype(np.float32))
    query.var_names, query.obs_names = genes, [f"c{i}" for i in range(args.cells)]
    query.write_h5ad(scratch / "query.h5ad")
    results = {"data": data.name if cells is not None else "synthetic", "genes": len(genes), "types": len(types),
               "cells": args.cells}
    try:
        for method in ("gsrcl", "afrcl"):
            t = time.perf_counter()
            if method == "gsrcl":
                folder = F.make_gsrcl_folder(scratch / method, genes=genes, types=types, genes_only=(), enc=4096,
                                             out=2048, cells=cells)
            else:
                folder = F.make_afrcl_folder(scratch / method, genes=genes, types=types, cells=cells)
            built = time.perf_counter() - t
            size = sum(p.stat().st_size for p in folder.iterdir())
            t = time.perf_counter()
            assert gsrcl(["import", "-i", str(folder), "-r", method, "-mp", str(scratch / "refs"), "-q"]) == 0
            imported = time.perf_counter() - t
            t = time.perf_counter()
            out = scratch / f"out_{method}"
            assert gsrcl(["predict", "-i", str(scratch / "query.h5ad"), "-r", method, "-mp", str(scratch / "refs"),
                          "-o", str(out), "-q", "--neighbours", "0"]) == 0
            predicted = time.perf_counter() - t
            got = pd.read_csv(out / "probabilities.csv", index_col=0)
            t = time.perf_counter()
            names, expected, labels = F.expected_probabilities(folder, Q, genes)
            original = time.perf_counter() - t
            row = {
                "original_files_mb": round(size / 1e6, 1),
                "reference_mb": round(sum(p.stat().st_size for p in (scratch / "refs" / method).iterdir()) / 1e6, 1),
                "build_s": round(built, 1),
                "import_s": round(imported, 2),
                "predict_s": round(predicted, 2),
                "original_rules_s": round(original, 2),
                "max_abs_difference": float(np.abs(got[names].to_numpy() - expected).max()),
                "labels_agree": float((got["Identified as"].to_numpy() == labels).mean()),
            }
            results[method] = row
            print(method, row, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
