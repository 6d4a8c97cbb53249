"""Benchmark (not a test): the encoder's first layer on a 64 x 19,371 batch with ~1,500 non-zeros a row,
forward + backward, for CSR, COO and dense input, and torch.sparse.mm for comparison.

    .venv/bin/python benchmarks/sparse_first_layer.py [--threads N] [--reps R]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from gsrcl.nn import Encoder

warnings.filterwarnings("ignore", category=UserWarning)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, genes, nnz = 64, 19371, 1500
    cols = np.concatenate([np.sort(rng.choice(genes, nnz, replace=False)) for _ in range(n)])
    crow = np.arange(0, n * nnz + 1, nnz)
    vals = np.log1p(rng.poisson(2.0, n * nnz) + 1).astype(np.float32)
    csr = torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(cols), torch.from_numpy(vals), (n, genes))
    inputs = {"csr": csr, "coo": csr.to_sparse_coo(), "dense": csr.to_dense()}

    torch.manual_seed(0)
    enc = Encoder(genes)
    first = enc.linears[0]
    w_linear = torch.nn.Parameter(first.weight.detach().t().contiguous())  # nn.Linear layout (out, in)

    def timed(label, fn, params):
        for _ in range(2):
            fn().sum().backward()
        fwd = bwd = 0.0
        for _ in range(args.reps):
            for p in params:
                p.grad = None
            t0 = time.perf_counter()
            y = fn()
            t1 = time.perf_counter()
            y.sum().backward()
            t2 = time.perf_counter()
            fwd, bwd = fwd + t1 - t0, bwd + t2 - t1
        print(f"{label:44s} forward {fwd / args.reps * 1e3:7.1f} ms  backward {bwd / args.reps * 1e3:7.1f} ms")

    print(f"batch {n} x {genes}, {nnz} non-zeros a row, weight {genes} x 1024, {args.threads} threads")
    for name, x in inputs.items():
        timed(f"first layer (embedding_bag / addmm), {name}", lambda x=x: first(x), [first.weight, first.bias])
    timed("torch.sparse.mm(csr, W.t()) nn.Linear layout", lambda: torch.sparse.mm(csr, w_linear.t()), [w_linear])
    timed("torch.sparse.mm(coo, W.t()) nn.Linear layout", lambda: torch.sparse.mm(inputs["coo"], w_linear.t()),
          [w_linear])
    timed("F.linear(dense, W) nn.Linear layout", lambda: torch.nn.functional.linear(inputs["dense"], w_linear),
          [w_linear])
    params = list(enc.parameters())
    for name, x in inputs.items():
        timed(f"whole Encoder(19371), {name}", lambda x=x: enc(x), params)


if __name__ == "__main__":
    main()
