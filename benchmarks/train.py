"""Training benchmark: time, peak memory and accuracy of ``gsrcl.train`` for AF-RCL and GsRCL.

Parts (each job runs in its own process, limited to ``--threads`` CPU threads, so that its peak memory and
threads are its own):

- ``--cells N [N ...]``: train the default preset on N cells of mouse_immune_actinn_1k (1,000 cells x 19,371
  genes, 5 types): N = 1000 is the file itself; a larger N resamples its cells with replacement and thins each
  count binomially (p = 0.8) so that no two cells are identical. Wall time of ``gsrcl.train`` and peak RSS.
- ``--cv K``: the first K folds of a stratified 5-fold CV of mouse_immune_actinn_1k (seed 1111): train on four
  fifths (``gsrcl.train``, which keeps 20% of them for checkpoint selection), macro-F1 and accuracy on the
  held-out fifth; a linear SVM on log1p counts (scikit-learn ``LinearSVC()``, Abdelaal et al.'s baseline) on the
  same folds, and the ratio of the two.
- ``--paper-epochs E``: the ``paper`` preset for E epochs on the first fold: measured seconds per epoch and per
  validation, and the extrapolated time of the published schedule (AF-RCL 501 epochs, validation every 5;
  GsRCL 3,001 epochs, validation every 50, and, as published, one such run per cell type).

Prints a markdown table and merges the results into ``benchmarks/results/train.json`` (a job run again
replaces its earlier entry). Examples::

    python benchmarks/train.py --method afrcl --cv 1                 # one fold, default preset
    python benchmarks/train.py --method gsrcl --cells 1000 10000
    python benchmarks/train.py --paper-epochs 3 --cells --cv 0        # paper per-epoch timing only
    python benchmarks/train.py --method gsrcl --cv 5 --threads 1 \
        --set '{"hidden": [4096, 4096, 4096], "out": 2048, "head": [512, 128]}'
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mouse_immune_actinn_1k.h5ad"
RESULTS = ROOT / "benchmarks" / "results" / "train.json"
SEED = 1111
PAPER_SCHEDULE = {"afrcl": (501, 5), "gsrcl": (3001, 50)}  # epochs, validation every


# --- one job, in a child process ----------------------------------------------------------------------------
def _load(cells: int, seed: int = SEED):
    import anndata as ad
    import numpy as np

    adata = ad.read_h5ad(DATA)
    if cells == adata.n_obs:
        return adata
    rng = np.random.default_rng(seed)
    pick = rng.choice(adata.n_obs, cells, replace=cells > adata.n_obs)
    sub = adata[np.sort(pick)].copy()
    X = sub.X.tocsr().astype(np.float32)
    X.data = rng.binomial(X.data.astype(np.int64), 0.8).astype(np.float32)
    X.eliminate_zeros()
    sub.X = X
    sub.obs_names = [f"r{i}_{n}" for i, n in enumerate(sub.obs_names)]
    return sub


def _fold(adata, fold: int):
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    y = adata.obs["cell_type"].astype(str).to_numpy()
    tr, te = list(StratifiedKFold(5, shuffle=True, random_state=SEED).split(np.zeros(len(y)), y))[fold]
    return adata[tr].copy(), adata[te].copy()


def _model_input(ref, X):
    """What prediction feeds the model: the reference's value step (log1p CP10k in the default preset) on top
    of the log1p values, over the reference genes."""
    from gsrcl.values import log1p_normalized

    size = ref.values.get("library_size")
    return log1p_normalized(X, size) if size else X


def _log1p(adata):
    import numpy as np

    X = adata.X.tocsr().astype(np.float32, copy=True)
    X.data = np.log1p(X.data)
    return X


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _scores(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"macro_f1": float(f1_score(y_true, y_pred, average="macro")),
            "accuracy": float(accuracy_score(y_true, y_pred))}


def run_job(job: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    from gsrcl import train

    overrides = dict(job.get("set") or {})
    out: dict = {"job": job}
    t_load = time.perf_counter()
    adata = _load(job.get("cells", 1000))
    test = None
    if job["kind"] in ("cv", "paper"):
        adata, test = _fold(adata, job["fold"])
    out["seconds_load"] = time.perf_counter() - t_load
    kw = dict(preset=job["preset"], seed=SEED, quiet=True, **overrides)
    if job.get("epochs"):
        kw["epochs"] = job["epochs"]
    t0, c0 = time.perf_counter(), _cpu()
    ref = train(adata, "cell_type", job["method"], **kw)
    out["seconds_train"] = time.perf_counter() - t0
    out["cpu_seconds_train"] = _cpu() - c0  # on a shared machine, wall time overstates the cost
    out["load_average_1min_end"] = os.getloadavg()[0]
    t, v = ref.manifest["training"], ref.manifest["validation"]
    hist = t["history"]
    runs = hist.get("runs", [hist])
    epochs = sum(len(r["loss"]) for r in runs)
    n_val = sum(len(r["validation"]) for r in runs)
    out.update(
        cells_train=t["cells_train"], cells_validation=t["cells_validation"], genes=t["genes"],
        epochs_run=epochs, validations=n_val, validation_mcc=v.get("score"),
        seconds_steps=sum(r["seconds_steps"] for r in runs),
        seconds_validation=sum(r["seconds_validation"] for r in runs),
        seconds_encoder=hist["seconds_encoder"], seconds_fit=hist["seconds"],
        arrays_mb=sum(a.nbytes for a in ref.arrays.values()) / 2**20,
        hyperparameters=ref.manifest["hyperparameters"],
    )
    out["seconds_per_epoch"] = out["seconds_steps"] / max(epochs, 1)
    out["seconds_per_validation"] = out["seconds_validation"] / max(n_val, 1)
    if v.get("tasks"):
        out["distinct_checkpoints"] = len(v["encoders"])
    if test is not None:
        model = ref.model
        Xte = _model_input(ref, _log1p(test)[:, [test.var_names.get_loc(g) for g in ref.genes]])
        yte = test.obs["cell_type"].astype(str).to_numpy()
        t1 = time.perf_counter()
        proba = model.predict_proba(Xte)
        out["seconds_predict"] = time.perf_counter() - t1
        out["cells_per_second_predict"] = Xte.shape[0] / out["seconds_predict"]
        out.update(_scores(yte, np.array(model.cell_types)[proba.argmax(axis=1)]))
        if job.get("predict_cells"):  # prediction speed on more cells (resampled), aligned the same way
            many = _load(job["predict_cells"], seed=SEED + 1)
            Xmany = _model_input(ref, _log1p(many)[:, [many.var_names.get_loc(g) for g in ref.genes]])
            t1 = time.perf_counter()
            model.predict_proba(Xmany)
            out["cells_per_second_predict"] = Xmany.shape[0] / (time.perf_counter() - t1)
            out["predict_cells"] = Xmany.shape[0]
        if job.get("baseline"):
            from sklearn.svm import LinearSVC

            t2 = time.perf_counter()
            lin = LinearSVC(random_state=SEED).fit(_log1p(adata), adata.obs["cell_type"].astype(str).to_numpy())
            base = _scores(yte, lin.predict(_log1p(test)))
            out["baseline"] = {**base, "seconds": time.perf_counter() - t2, "method": "LinearSVC() on log1p counts"}
    if job["kind"] == "paper":
        E, every = PAPER_SCHEDULE[job["method"]]
        n_val_paper = math.ceil(E / every)
        one = E * out["seconds_per_epoch"] + n_val_paper * out["seconds_per_validation"]
        out["paper_extrapolated_seconds_one_run"] = one
        if job["method"] == "gsrcl":  # the original trains one encoder per cell type
            out["paper_extrapolated_seconds_as_published"] = one * len(ref.cell_types)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- the driver ------------------------------------------------------------------------------------------------
def _spawn(job: dict, timeout: float | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
    cmd = [sys.executable, __file__, "--job", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"job": job, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"job": job, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1])


def _key(job: dict) -> str:
    parts = [job["kind"], job["method"], job["preset"], f"cells={job.get('cells', 1000)}"]
    if "fold" in job:
        parts.append(f"fold={job['fold']}")
    if job.get("epochs"):
        parts.append(f"epochs={job['epochs']}")
    if job.get("set"):
        parts.append("set=" + json.dumps(job["set"], sort_keys=True))
    return " ".join(parts)


def _fmt(v, spec=".3f"):
    return "" if v is None else format(v, spec)


def table(results: list[dict]) -> str:
    rows = ["| job | s total | CPU s | epochs | s/epoch | s/validation | val MCC | test macro-F1 | linear SVM F1 | "
            "ratio | peak MB | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {_key(r['job'])} | | | | | | | | | | | error: {r['error']} |")
            continue
        base = r.get("baseline", {}).get("macro_f1")
        ratio = r["macro_f1"] / base if base and "macro_f1" in r else None
        note = ""
        if "paper_extrapolated_seconds_one_run" in r:
            note = f"paper schedule ≈ {r['paper_extrapolated_seconds_one_run'] / 60:.0f} min per run"
            if "paper_extrapolated_seconds_as_published" in r:
                note += f", {r['paper_extrapolated_seconds_as_published'] / 3600:.1f} h as published (one run per type)"
        if "distinct_checkpoints" in r:
            note += f"{'; ' if note else ''}{r['distinct_checkpoints']} distinct checkpoint(s)"
        if "cells_per_second_predict" in r:
            note += f"{'; ' if note else ''}predict {r['cells_per_second_predict']:.0f} cells/s"
        rows.append(
            f"| {_key(r['job'])} | {r['seconds_train']:.0f} | {_fmt(r.get('cpu_seconds_train'), '.0f')} | "
            f"{r['epochs_run']} | {r['seconds_per_epoch']:.2f} | "
            f"{r['seconds_per_validation']:.2f} | {_fmt(r.get('validation_mcc'))} | {_fmt(r.get('macro_f1'))} | "
            f"{_fmt(base)} | {_fmt(ratio)} | {r['peak_rss_mb']:.0f} | {note} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", nargs="+", choices=("afrcl", "gsrcl"), default=["afrcl", "gsrcl"])
    ap.add_argument("--cells", nargs="*", type=int, default=[1000], help="timing runs on N cells (none: skip)")
    ap.add_argument("--cv", type=int, default=1, help="how many of the 5 CV folds to run (0: none)")
    ap.add_argument("--folds", nargs="+", type=int, choices=range(5), help="run these CV folds (instead of --cv)")
    ap.add_argument("--paper-epochs", type=int, default=0, help="time the paper preset over this many epochs")
    ap.add_argument("--preset", default="default", choices=("default", "paper"))
    ap.add_argument("--epochs", type=int, help="most epochs of the default-preset runs")
    ap.add_argument("--set", help="JSON object of method parameters for the default-preset runs")
    ap.add_argument("--predict-cells", type=int, default=4096,
                    help="CV runs: time prediction on this many (resampled) cells; 0: the test fold only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per job")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.job:
        print(json.dumps(run_job(json.loads(args.job))))
        return 0
    if not DATA.exists():
        print(f"{DATA} is absent", file=sys.stderr)
        return 1
    extra = json.loads(args.set) if args.set else None
    jobs = []
    for m in args.method:
        base = {"method": m, "preset": args.preset, "threads": args.threads, "set": extra, "epochs": args.epochs}
        jobs += [{**base, "kind": "cells", "cells": n} for n in args.cells]
        folds = args.folds if args.folds is not None else range(min(args.cv, 5))
        jobs += [{**base, "kind": "cv", "fold": f, "baseline": True, "predict_cells": args.predict_cells}
                 for f in folds]
        if args.paper_epochs:
            jobs.append({"method": m, "preset": "paper", "threads": args.threads, "kind": "paper", "fold": 0,
                         "epochs": args.paper_epochs, "set": None})
    results = []
    for job in jobs:
        print(f"running {_key(job)} ...", file=sys.stderr, flush=True)
        r = _spawn(job, args.timeout)
        results.append(r)
        print("  " + ("error: " + str(r["error"]) if "error" in r else
                      f"{r['seconds_train']:.0f} s, F1 {_fmt(r.get('macro_f1'))}, peak {r['peak_rss_mb']:.0f} MB"),
              file=sys.stderr, flush=True)
    cv = {}
    for r in results:
        if r["job"]["kind"] == "cv" and "error" not in r:
            cv.setdefault(r["job"]["method"], []).append(r)
    print(table(results))
    for m, rs in cv.items():
        f1 = [r["macro_f1"] for r in rs]
        base = [r["baseline"]["macro_f1"] for r in rs]
        print(f"\n{m}: mean test macro-F1 over {len(rs)} fold(s) {sum(f1) / len(f1):.4f}; linear SVM "
              f"{sum(base) / len(base):.4f}; ratio {sum(f1) / sum(base):.4f}; mean training time "
              f"{sum(r['seconds_train'] for r in rs) / len(rs):.0f} s")

    store = {"runs": {}}
    if args.out.exists():
        try:
            store = json.loads(args.out.read_text())
        except ValueError:
            pass
    import sklearn
    import torch

    meta = {"command": "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "threads": args.threads, "load_average": os.getloadavg(), "torch": torch.__version__,
            "scikit-learn": sklearn.__version__, "python": platform.python_version()}
    for r in results:
        store.setdefault("runs", {})[_key(r["job"])] = {**r, "meta": meta}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(store, indent=1) + "\n")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
