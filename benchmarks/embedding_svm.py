"""Benchmark (not a test): the final SVM on an embedding (the C/gamma grid on at most 3,000 cells, then the chosen
setting with Platt probabilities on all of them, `gsrcl.methods.classifiers.fit_final_svc`), as libsvm runs it
(each kernel value computed afresh, at the cost of the embedding's width, in every one of the 86 fits) and on a
precomputed kernel (``distances=True``: one matrix of squared distances, the default since 2026-12-07), in the
same process, on the same cells.

The cells: pbmc3k's 2,638 real cells (log1p CP10k, 50 principal components), mapped to the embeddings' widths by
a fixed random layer (tanh) and scaled to unit length, as the classifiers see an encoder's output: 512 wide with
pbmc3k's 9 types (AF-RCL's one multi-class SVM per model), 2,048 wide with one type against the rest (one of
GsRCL's per-type SVMs). Only the cost is measured here (it depends on the cells, width and number of support
vectors, not on how the embedding was learnt); both paths must choose the same setting, and the largest change
of a probability is reported. Writes ``benchmarks/results/embedding_svm.json``::

    OMP_NUM_THREADS=1 python benchmarks/embedding_svm.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pbmc3k_seurat_clustifyr.h5ad"
RESULTS = ROOT / "benchmarks" / "results" / "embedding_svm.json"
CASES = (("afrcl: 9 types, 512 wide", 512, False), ("gsrcl: one type against the rest, 2,048 wide", 2048, True))


def embedding(Z: np.ndarray, width: int, seed: int = 0) -> np.ndarray:
    """Unit-length rows of tanh(Z W) for a fixed random W (width columns)."""
    W = np.random.default_rng(seed).normal(size=(Z.shape[1], width)) / np.sqrt(Z.shape[1])
    E = np.tanh(Z @ W)
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def main(argv=None) -> int:
    from sklearn.decomposition import TruncatedSVD

    from gsrcl.methods.classifiers import fit_final_svc
    from gsrcl.values import log1p_normalized
    from harness.files import write_json
    from harness.inputs import model_input, read_labelled
    from harness.measure import now

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(RESULTS), help=f"result file (default {RESULTS.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    data = read_labelled(DATA)
    if data is None:
        return 2
    adata, labels = data
    Z = TruncatedSVD(50, random_state=0).fit_transform(log1p_normalized(model_input(adata), 10_000))
    rows = []
    for name, width, binary in CASES:
        E = embedding(Z, width)
        y = (labels == "B").astype(np.int64) if binary else labels
        fitted = {}
        for path, distances in (("libsvm", False), ("kernel", True)):
            t0 = time.perf_counter()
            fitted[path] = (fit_final_svc(E, y, 5, 7, 3000, "largest_c", distances), time.perf_counter() - t0)
        (slow, t_slow), (fast, t_fast) = fitted["libsvm"], fitted["kernel"]
        diff = float(np.abs(slow.predict_proba(E) - fast.predict_proba(E)).max())
        rows.append({"case": name, "cells": int(len(y)), "width": width, "libsvm_s": t_slow, "kernel_s": t_fast,
                     "speed_up": t_slow / t_fast, "same_setting": slow.best_params_ == fast.best_params_,
                     "max_abs_diff_proba": diff})
        print(f"{name}: libsvm {t_slow:.1f} s, kernel {t_fast:.1f} s ({t_slow / t_fast:.1f}x), same setting "
              f"{rows[-1]['same_setting']}, largest probability change {diff:.1e}", flush=True)
    write_json(Path(args.out), {"command": "python benchmarks/embedding_svm.py", "created": now(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
