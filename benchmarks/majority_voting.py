"""Majority voting (``--majority-voting``) against the per-cell labels, on the same trained model.

For each task, method and seed one model is trained at its ``default`` preset (as ``benchmarks/accuracy.py``
trains it); the query is annotated once with ``majority_voting=True`` and both labels are scored with macro-F1 over
the reference's types (Unassigned counts as wrong). Results accumulate in
``benchmarks/results/majority_voting.{json,md}``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/majority_voting.py --tasks pbmc_3v2_to_5p --methods gsrcl,afrcl
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from harness.inputs import align_to
from harness.methods import make_method
from harness.metrics import as_text, macro_f1
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits
from harness.trials import TrialLog, trial_parser



def run(task, data_dir: str, method: str, seed: int) -> list[dict]:
    import anndata as ad
    import pandas as pd

    from gsrcl import annotate

    out = []
    for ref, query in task_splits(task, data_dir):
        est = make_method(method, seed=seed)
        est.fit(ref, ref.obs[LABEL].to_numpy())
        reference = est.reference_
        genes, types = list(reference.genes), list(reference.cell_types)
        q = ad.AnnData(align_to(query.X, query.var, genes), obs=pd.DataFrame(index=query.obs_names),
                       var=pd.DataFrame(index=pd.Index(genes)))
        obs = annotate(q, reference, quiet=True, majority_voting=True).obs
        y = as_text(query.obs[LABEL])
        out.append({"per_cell": macro_f1(y, as_text(obs["predicted_labels"]), types),
                    "majority_voting": macro_f1(y, as_text(obs["majority_voting"]), types),
                    "clusters": int(obs["over_clustering"].nunique())})
    return out


def markdown(results: dict) -> str:
    lines = ["# Majority voting against the per-cell labels", "",
             "Paired (`benchmarks/majority_voting.py`): one `default` model per task, method and seed; macro-F1 over "
             "the reference's types (Unassigned counts as wrong; mean over folds).", "",
             "| task | method | seed | per cell | majority voting | clusters |", "|---|---|---|---|---|---|"]
    for e in sorted(results["entries"].values(), key=lambda e: (e["task"], e["method"], e["seed"])):
        s = e["splits"]
        lines.append(f"| {e['task']} | {e['method']} | {e['seed']} | {np.mean([x['per_cell'] for x in s]):.4f} | "
                     f"{np.mean([x['majority_voting'] for x in s]):.4f} | {np.mean([x['clusters'] for x in s]):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = trial_parser(__doc__, "majority_voting")
    ap.add_argument("--methods", default="gsrcl,afrcl")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = load_config(args.config or DEFAULT_CONFIG, args.data)
    trials = TrialLog(args.out, "majority_voting", markdown)
    for name in args.tasks.split(","):
        for method in args.methods.split(","):
            for seed in map(int, args.seeds.split(",")):
                splits = run(config.tasks[name], str(config.data_dir), method, seed)
                trials.add(f"{name}|{method}|{seed}", {"task": name, "method": method, "seed": seed, "splits": splits})
                print(markdown(trials.results).splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
