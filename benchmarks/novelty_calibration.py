"""Does ``--novelty-cutoff PCT`` call about (100 - PCT)% of a query's known cells novel, and how many unseen ones?

For every task of the accuracy benchmark (``benchmarks/tasks.json``; each fold of a cross-validation task), the
novelty score (`gsrcl.novelty`, fitted on the reference as ``gsrcl.train`` fits it: log1p CP10k over the reference
genes) scores the query, and each cut-off is applied under two calibrations, in the same run:

- ``held-out`` (gsrcl now): the percentiles of reference cells scored by models fitted without them (5-fold);
- ``in-sample`` (the baseline, gsrcl before): the percentiles of the reference cells' own scores.

Reported per task and percentile: the share of the query's known cells above the cut-off (what the percentile
promises for cells like the reference's: 100 - PCT), the share of its unseen cells above it, and the fit seconds
of both. The novelty score is the same for GsRCL and AF-RCL (it does not depend on the method), so no encoder is
trained here::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/novelty_calibration.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gsrcl.model_input import ModelInput
from gsrcl.novelty import NoveltyModel
from gsrcl.values import CP10K
from gsrcl.values import log1p_normalized
from harness import inputs
from harness.files import write_json, write_text
from harness.measure import environment, now
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits

RESULTS = Path(__file__).resolve().parent / "results"
PERCENTILES = (95.0, 99.0, 99.5, 99.9)


def model_input(adata, genes):
    """The cells on ``genes`` as the default preset's model input (log1p CP10k over those genes)."""
    return log1p_normalized(inputs.align_to(inputs.model_input(adata), adata.var, genes), 1e4)


def measure(ref, query) -> dict:
    genes = list(map(str, ref.var_names))
    Xr, Xq = model_input(ref, genes), model_input(query, genes)
    yr = ref.obs[LABEL].astype(str).to_numpy()
    yq = query.obs[LABEL].astype(str).to_numpy()
    t0 = time.perf_counter()
    baseline = NoveltyModel()
    cp10k = ModelInput("log1p", library_size=CP10K)  # the model input is log1p CP10k already
    Nr = cp10k.novelty_input(Xr)
    baseline._fit_space(Nr, yr)  # the space alone: what the in-sample rule fitted
    in_sample = baseline._distance(baseline._project(Nr))
    t1 = time.perf_counter()
    model = NoveltyModel().fit(Xr, yr, cp10k)
    t2 = time.perf_counter()
    distance = model.score(Xq, cp10k) * model.median_  # the same space as the baseline's (same cells, seed)
    known = np.isin(yq, np.unique(yr))
    return {"n_ref": len(yr), "n_known": int(known.sum()), "n_unseen": int((~known).sum()),
            "seconds": {"in-sample": t1 - t0, "held-out": t2 - t1},
            "calibration": model.calibration_,
            "median_ratio": float(np.median(in_sample) / model.median_),
            "cut": {name: {str(p): {"known": float((distance[known] > cut(p)).mean()) if known.any() else None,
                                    "unseen": float((distance[~known] > cut(p)).mean()) if (~known).any() else None}
                           for p in PERCENTILES}
                    for name, cut in (("held-out", lambda p: model.threshold(p) * model.median_),
                                      ("in-sample", lambda p: float(np.percentile(in_sample, p))))}}


def pooled(folds: list[dict]) -> dict:
    """Folds of a cross-validation task as one: shares weighted by the cells, seconds summed."""
    if len(folds) == 1:
        return folds[0]
    out = {"n_ref": sum(f["n_ref"] for f in folds) // len(folds), "n_known": sum(f["n_known"] for f in folds),
           "n_unseen": 0, "calibration": folds[0]["calibration"],
           "seconds": {k: sum(f["seconds"][k] for f in folds) for k in folds[0]["seconds"]},
           "median_ratio": float(np.mean([f["median_ratio"] for f in folds])), "cut": {}}
    for name in folds[0]["cut"]:
        out["cut"][name] = {p: {"known": sum(f["cut"][name][p]["known"] * f["n_known"] for f in folds)
                                / out["n_known"], "unseen": None} for p in folds[0]["cut"][name]}
    return out


def markdown(results: dict) -> str:
    lines = ["# Novelty cut-off calibration", "",
             "Share of the query's cells of known types (and of unseen types, where the task has them) called "
             "novel by `--novelty-cutoff PCT`, with the percentiles of held-out reference cells (gsrcl now) and "
             "of the reference cells' own in-sample scores (before). A percentile promises 100 - PCT % for "
             "cells like the reference's; a query from another batch or study may differ. `in/held median`: "
             "the in-sample median distance over the held-out one. Made with `" + results["command"] + "`.", "",
             "| task | cells ref / known / unseen | in/held median | " + " | ".join(
                 f"{p:g}: known held-out / in-sample" for p in PERCENTILES) + " | unseen at 99 / 99.5: held-out "
             "(in-sample) | fit s held-out / in-sample |",
             "|---|---|---|" + "---|" * len(PERCENTILES) + "---|---|"]
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"
    for name, r in results["tasks"].items():
        c = r["cut"]
        cells = [f"{pct(c['held-out'][str(p)]['known'])} / {pct(c['in-sample'][str(p)]['known'])}" for p in PERCENTILES]
        unseen = "-" if not r["n_unseen"] else " / ".join(
            f"{pct(c['held-out'][str(p)]['unseen'])} ({pct(c['in-sample'][str(p)]['unseen'])})" for p in (99.0, 99.5))
        s = r["seconds"]
        lines.append(f"| {name} | {r['n_ref']} / {r['n_known']} / {r['n_unseen']} | {r['median_ratio']:.2f} | "
                     + " | ".join(cells) + f" | {unseen} | {s['held-out']:.1f} / {s['in-sample']:.1f} "
                     f"({s['held-out'] / s['in-sample']:.1f}x) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=None, help="comma-separated task names (default: all of the config's)")
    ap.add_argument("--config", default=None, help="task config (default benchmarks/tasks.json)")
    ap.add_argument("--data", default=None, help="data folder (default: the config's)")
    ap.add_argument("--out", default=str(RESULTS), help="folder of novelty_calibration.{json,md}")
    args = ap.parse_args(argv)
    config = load_config(args.config or DEFAULT_CONFIG, args.data)
    names = args.tasks.split(",") if args.tasks else list(config.tasks)
    unknown = [t for t in names if t not in config.tasks]
    if unknown:
        print(f"error: unknown task {', '.join(unknown)}; tasks: {', '.join(config.tasks)}", file=sys.stderr)
        return 2
    results = {"command": "python benchmarks/novelty_calibration.py" + (f" --tasks {args.tasks}" if args.tasks else ""),
               "created": now(), "environment": environment(), "tasks": {}}
    for name in names:
        task = config.tasks[name]
        results["tasks"][name] = pooled([measure(ref, query) for ref, query in task_splits(task, config.data_dir)])
        print(name, json.dumps(results["tasks"][name]["cut"]["held-out"]["99.0"]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "novelty_calibration.json", results)
    write_text(out / "novelty_calibration.md", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
