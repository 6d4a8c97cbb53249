"""Benchmark (not a test): fitting GsRCL's SVMs on the genes (the C/gamma grid, then the chosen setting with
Platt probabilities), as libsvm runs it (GridSearchCV and SVC(kernel='rbf'), each kernel value computed afresh
in every fit) and on one matrix of squared distances (``gsrcl.svm.fit_svc(..., distances=True)``, the default
for those SVMs), in the same process, on the same cells.

Real cells: mouse_immune_actinn_1k (19,371 genes) as log1p CP10k, a stratified ``--cells`` of them, one
one-vs-rest task per cell type, the paper grid (16 settings) with 5-fold CV and the default's tie rule. Prints
seconds per task for both and their ratio, checks that both choose the same setting, gives the largest
difference of their probabilities on the cells left out, and writes ``benchmarks/results/gene_svm_grid.json``::

    OMP_NUM_THREADS=1 python benchmarks/gene_svm_grid.py [--cells 800]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mouse_immune_actinn_1k.h5ad"
RESULTS = ROOT / "benchmarks" / "results" / "gene_svm_grid.json"


def main(argv=None) -> int:
    from gsrcl.methods.labels import stratified_subset
    from gsrcl.svm import PAPER_GRID, fit_svc
    from gsrcl.values import log1p_normalized
    from harness.files import write_json
    from harness.inputs import model_input, read_labelled

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=800, help="cells of the grid (default 800: a CV fold's training "
                                                          "and validation cells)")
    args = ap.parse_args(argv)
    data = read_labelled(DATA)
    if data is None:
        return 2
    adata, labels = data
    sub = stratified_subset(labels, args.cells, 0)
    sub = np.arange(len(labels)) if sub is None else sub
    cells = log1p_normalized(model_input(adata), 10_000)
    rest = np.setdiff1d(np.arange(len(labels)), sub)
    X, held_out = cells[sub].toarray().astype(np.float64), cells[rest].toarray().astype(np.float64)
    labels = labels[sub]
    rows = []
    for t in sorted(set(labels)):
        y = (labels == t).astype(np.int64)
        timed = {}
        for name, distances in (("libsvm", False), ("distances", True)):
            t0 = time.perf_counter()
            svc = fit_svc(X, y, grid=PAPER_GRID, cv=5, seed=0, ties="largest_c", distances=distances)
            timed[name] = (time.perf_counter() - t0, svc.best_params_, svc.cv_score_,
                           svc.predict_proba(held_out)[:, 1] if len(held_out) else np.zeros(0))
        row = {"cell_type": t, "seconds_libsvm": timed["libsvm"][0], "seconds_distances": timed["distances"][0],
               "ratio": timed["libsvm"][0] / timed["distances"][0],
               "same_setting": timed["libsvm"][1] == timed["distances"][1],
               "cv_mcc": [timed["libsvm"][2], timed["distances"][2]],
               "max_probability_difference": float(np.abs(timed["libsvm"][3] - timed["distances"][3]).max(initial=0))}
        rows.append(row)
        print(f"{t}: libsvm {row['seconds_libsvm']:.1f} s, distances {row['seconds_distances']:.2f} s, "
              f"x{row['ratio']:.1f}, same setting {row['same_setting']}, probabilities of {len(held_out)} other cells "
              f"within {row['max_probability_difference']:.1e}", flush=True)
    total = [sum(r[k] for r in rows) for k in ("seconds_libsvm", "seconds_distances")]
    print(f"all {len(rows)} tasks: libsvm {total[0]:.1f} s, distances {total[1]:.2f} s, x{total[0] / total[1]:.1f}")
    write_json(RESULTS, {"command": " ".join(["python", *sys.argv]), "cells": int(X.shape[0]),
                         "genes": int(X.shape[1]), "threads": os.environ.get("OMP_NUM_THREADS"),
                         "platform": platform.platform(), "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
                         "tasks": rows, "seconds_libsvm": total[0], "seconds_distances": total[1],
                         "ratio": total[0] / total[1]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
