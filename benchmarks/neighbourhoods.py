"""Does averaging a score over query neighbourhoods (`gsrcl.neighbours`) help tell unseen types from known ones
beyond the two tasks it was looked at on?

For every cross task of the accuracy benchmark (``benchmarks/tasks.json``) and the first fold of each
cross-validation task, each reference type in turn is taken out of the reference, so its query cells become
unseen (beside any the task has already). Two per-cell scores, neither needing an encoder, are computed on the
reference without that type: the novelty score (`gsrcl.novelty`, the same for GsRCL and AF-RCL) and the linear
SVM's top decision value (the baseline with the best unseen-type AUROC on Kang -> pbmc3k). Each is scored per
cell (the baseline) and averaged over each query cell's 15 nearest query cells (the query neighbourhoods of
``gsrcl predict``), in the same run: AUROC for known (positive) against unseen cells::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neighbourhoods.py

Writes ``benchmarks/results/neighbourhoods.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from gsrcl.model_input import ModelInput
from gsrcl.novelty import NoveltyModel
from harness.files import write_json, write_text
from harness.inputs import align_to, model_input
from harness.measure import now
from harness.metrics import unseen_auroc
from harness.runner import query_neighbourhoods
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits

RESULTS = Path(__file__).resolve().parent / "results"
MIN_UNSEEN = 10  # a split whose unseen cells are fewer is left out: its AUROC would rest on a handful of cells


def scores(ref, query) -> dict[str, np.ndarray]:
    """Per-cell scores of the query (higher = more likely a known type)."""
    from sklearn.svm import LinearSVC

    genes = list(map(str, ref.var_names))
    Xr, Xq = model_input(ref), align_to(model_input(query), query.var, genes)
    yr = ref.obs[LABEL].astype(str).to_numpy()
    novelty = NoveltyModel()
    novelty._fit_space(ModelInput("log1p").novelty_input(Xr), yr)  # the held-out calibration only rescales: the ranking is the same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svm = LinearSVC(random_state=0).fit(Xr, yr)
    decision = svm.decision_function(Xq)
    top = decision.max(axis=1) if decision.ndim == 2 else np.abs(decision)
    return {"novelty": -novelty._distance(novelty._project(ModelInput("log1p").novelty_input(Xq))), "svm": top}


def run(tasks: list[str]) -> dict:
    config = load_config(DEFAULT_CONFIG)
    rows, graph_seconds = [], {}
    for name in tasks:
        task = config.tasks[name]
        ref_all, query = task_splits(task, config.data_dir)[0]
        t0 = time.perf_counter()
        graph = query_neighbourhoods(query, list(map(str, ref_all.var_names)))
        graph_seconds[name] = time.perf_counter() - t0
        yq = query.obs[LABEL].astype(str).to_numpy()
        types = sorted(set(ref_all.obs[LABEL].astype(str)))
        for removed in [None, *types]:
            if removed is None and not task.unseen:
                continue
            ref = ref_all if removed is None else ref_all[ref_all.obs[LABEL].astype(str) != removed].copy()
            known_types = sorted(set(ref.obs[LABEL].astype(str)))
            if len(known_types) < 2:
                continue
            known = np.isin(yq, known_types)
            if (~known).sum() < MIN_UNSEEN or known.sum() < MIN_UNSEEN:
                continue
            row = {"task": name, "removed": removed or "(none)", "n_known": int(known.sum()),
                   "n_unseen": int((~known).sum())}
            for score, values in scores(ref, query).items():
                row[score] = unseen_auroc(yq, values, known_types)
                row[f"{score}_neighbourhood"] = unseen_auroc(yq, graph.smooth(values), known_types)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neighbourhoods.py " + " ".join(sys.argv[1:]),
            "created": now(), "rows": rows, "neighbourhood_seconds": graph_seconds}


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = ["# Unseen-type AUROC per cell and over query neighbourhoods", "", "Made with:", "", "```",
             result["command"], "```", "", __doc__.split("::")[0].strip(), "",
             "| task | type taken out | known / unseen cells | novelty: cell | neighbourhood | SVM: cell | neighbourhood |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['removed']} | {r['n_known']} / {r['n_unseen']} | {r['novelty']:.4f} | "
                     f"{r['novelty_neighbourhood']:.4f} | {r['svm']:.4f} | {r['svm_neighbourhood']:.4f} |")
    for s in ("novelty", "svm"):
        diff = np.array([r[f"{s}_neighbourhood"] - r[s] for r in rows])
        lines += ["", f"{s}: neighbourhood minus cell over {len(rows)} splits: median {np.median(diff):+.4f}, "
                  f"higher in {int((diff > 0).sum())}, lower in {int((diff < 0).sum())} (worst {diff.min():+.4f}, "
                  f"best {diff.max():+.4f})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="cellbench_celseq2_to_dropseq,cellbench_5cl_plates,xin_to_wang_all,"
                        "pbmc3k_to_kang,kang_donors,kang_to_pbmc3k,mouse_immune_cv")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.tasks.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "neighbourhoods.json", result)
    write_text(args.out / "neighbourhoods.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
