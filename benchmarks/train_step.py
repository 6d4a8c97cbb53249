"""Benchmark (not a test): one training step of each method's network, with and without
``gsrcl.nn.allocator.reuse_large_allocations`` (large freed blocks kept for reuse), in the same process.

Real cells: batches of mouse_immune_actinn_1k (1,000 cells x 19,371 genes) as log1p CP10k, the default
presets' networks, losses and fused Adam. The two settings alternate in rounds (``--rounds``), so that a
neighbour's load falls on both alike; each round times ``--steps`` steps after one warm-up step. Prints a
table (median ms per step, ratio) and merges it into ``benchmarks/results/train_step.json``::

    python benchmarks/train_step.py [--threads 2] [--steps 20] [--rounds 3] [--methods afrcl,gsrcl]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mouse_immune_actinn_1k.h5ad"
RESULTS = ROOT / "benchmarks" / "results" / "train_step.json"


def _cells():
    import anndata as ad

    from gsrcl.values import log1p_normalized
    from harness.inputs import model_input

    adata = ad.read_h5ad(DATA)
    X = log1p_normalized(model_input(adata), 10_000)  # log1p CP10k, as the default presets train
    y = np.unique(adata.obs["cell_type"].astype(str), return_inverse=True)[1]
    return X, y


def _stepper(method: str, X, y, seed: int = 0):
    """A function doing one optimiser step on a random batch, as the method's default preset trains."""
    import torch

    from gsrcl.methods.encoding import sparse_tensor
    from gsrcl.methods.presets import as_dict, get_preset
    from gsrcl.methods.session import adam
    from gsrcl.nn import Encoder, ProjectionHead, afrcl_loss, nt_xent

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    p = as_dict(get_preset(method, "default").params)
    encoder = Encoder(X.shape[1], p["hidden"], p["out"], batch_norm=method == "afrcl")
    head = ProjectionHead(p["out"], p["head"][:-1], p["head"][-1], batch_norm=method == "afrcl")
    opt = adam(list(encoder.parameters()) + list(head.parameters()), p["lr"], p["weight_decay"],
               torch.device("cpu"))
    labels = torch.from_numpy(y.astype(np.int64))
    bs = int(p["batch_size"])

    def step() -> None:
        idx = np.sort(rng.choice(X.shape[0], bs, replace=False))
        opt.zero_grad(set_to_none=True)
        if method == "afrcl":
            loss = afrcl_loss(head(encoder(sparse_tensor(X[idx], torch.device("cpu")))), labels[idx],
                              p["temperature"])
        else:
            xb = torch.from_numpy(X[idx].toarray())
            v1 = xb + p["noise_std"] * torch.randn_like(xb)
            v2 = xb + p["noise_std"] * torch.randn_like(xb)
            loss = nt_xent(head(encoder(v1)), head(encoder(v2)), p["temperature"])
        loss.backward()
        opt.step()

    return step


def _time(step, n: int) -> float:
    step()  # warm-up: first touches, lazy initialisation
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n * 1e3


def main(argv=None) -> int:
    import contextlib

    import torch

    from gsrcl.nn import flush_denormals
    from gsrcl.nn.allocator import allow_malloc_tuning, malloc_tunable, reuse_large_allocations

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default="afrcl,gsrcl")
    args = ap.parse_args(argv)
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: this benchmark needs ../shared/data")
    if not malloc_tunable():
        raise SystemExit("the allocator is not glibc's, or malloc is tuned in the environment: nothing to compare")
    torch.set_num_threads(args.threads)
    flush_denormals()
    allow_malloc_tuning()  # this script owns its process, as the gsrcl command does
    X, y = _cells()
    rows = {}
    for method in args.methods.split(","):
        step = _stepper(method, X, y)
        times = {"glibc default": [], "kept for reuse": []}
        for _ in range(args.rounds):
            for setting in times:
                ctx = reuse_large_allocations() if setting == "kept for reuse" else contextlib.nullcontext()
                with ctx:
                    times[setting].append(_time(step, args.steps))
        base, new = (statistics.median(v) for v in times.values())
        rows[method] = {"ms_per_step_default": base, "ms_per_step_kept": new, "speedup": base / new,
                        "rounds": times}
        print(f"{method}: {base:.1f} ms per step with glibc's default, {new:.1f} ms with large blocks kept "
              f"(x{base / new:.2f}; rounds {[round(t, 1) for t in times['glibc default']]} / "
              f"{[round(t, 1) for t in times['kept for reuse']]})", flush=True)
    record = {
        "command": "python benchmarks/train_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
        "cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "torch": torch.__version__,
        "platform": platform.platform(), "results": rows,
    }
    store = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    store["runs"][f"threads={args.threads}"] = record
    from harness.files import write_json

    write_json(RESULTS, store)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
