"""Benchmark (not a test): GsRCL's SVMs at prediction, each SVM on its own (as before 2026-12-07) against the SVMs
that see the same input pooled (`gsrcl.svm.PooledSVCs`: each distinct support vector once, one matrix product per
block of cells), in the same process, on the same cells, alternating.

The reference: the GsRCL ``default`` preset trained for a few epochs on ``mouse_immune_actinn_1k`` (as
``benchmarks/predict.py`` trains it; its SVMs are those of the full default, on the genes and on each checkpoint's
embedding), or ``--reference DIR``. The query: ``--cells`` cells resampled from the same file, aligned and
transformed as prediction does. For each group of SVMs (the genes; each checkpoint's embedding): the support
vectors held (each SVM's, summed, and pooled), the seconds of both paths (best of ``--reps``) and the largest
difference of a probability. Writes ``benchmarks/results/pooled_svms.json``::

    OMP_NUM_THREADS=1 python benchmarks/pooled_svms.py --cells 4096
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness.files import write_json  # noqa: E402
from harness.measure import now  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "pooled_svms.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, help="a GsRCL reference folder (default: train one, 3 epochs)")
    p.add_argument("--cells", type=int, default=4096)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULT)
    a = p.parse_args(argv)

    import anndata as ad
    import scipy.sparse as sp
    import torch

    from gsrcl import Reference, train
    from gsrcl.methods.encoding import encode
    from gsrcl.methods.gsrcl import GENES
    from predict import LABELS, SOURCE

    src = ad.read_h5ad(SOURCE)
    if a.reference is None:
        ref = train(src, labels_key=LABELS, method="gsrcl", name="gsrcl", epochs=3, min_epochs=0, quiet=True)
    else:
        ref = Reference.load(a.reference)
    model = ref.model
    rows = np.random.default_rng(0).integers(0, src.n_obs, a.cells)
    X = sp.csr_matrix(src[rows][:, list(ref.genes)].X, dtype=np.float32)
    Xm = ref.model_input.transform(X, "counts")
    inputs = {GENES: Xm}
    for j, enc in enumerate(model.encoders_):
        inputs[j] = model._represent(encode(enc, Xm, torch.device("cpu"), 4096))
    out = []
    for j, (pooled, members) in model._svm_groups().items():
        x = inputs[j]
        best = {"each": np.inf, "pooled": np.inf}
        for _ in range(a.reps):
            t = time.perf_counter()
            each = [svc.predict_proba(x) for svc in pooled.svcs]
            best["each"] = min(best["each"], time.perf_counter() - t)
            t = time.perf_counter()
            together = pooled.predict_proba(x)
            best["pooled"] = min(best["pooled"], time.perf_counter() - t)
        row = {"input": "genes" if j == GENES else f"checkpoint {j} embedding", "features": int(x.shape[1]),
               "svms": len(pooled.svcs), "support_vectors_each": int(sum(s.support_vectors_.shape[0]
                                                                       for s in pooled.svcs)),
               "support_vectors_pooled": int(pooled.support_vectors_.shape[0]),
               "seconds_each": best["each"], "seconds_pooled": best["pooled"],
               "speedup": best["each"] / best["pooled"],
               "max_abs_diff": float(max(np.abs(e - t).max() for e, t in zip(each, together)))}
        out.append(row)
        print(row, flush=True)
    write_json(a.out, {"command": "python benchmarks/pooled_svms.py " + " ".join(argv or sys.argv[1:]),
                       "created": now(), "cells": a.cells, "load": os.getloadavg(), "rows": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
