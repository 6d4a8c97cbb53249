"""Benchmark (not a test): rules pooling AF-RCL's probabilities with a linear SVM's on the genes, scored from the
probabilities `benchmarks/afrcl_shift.py --save-proba DIR` saved (no training).

For every ``DIR/TASK_SEED_SPLIT.npz``: macro-F1 over the reference's types (Unassigned, probability <= 0.5,
counts as wrong; mean over a task's splits) of the default, the linear SVM alone, a fixed weight ``w`` for the
linear SVM, and per-cell weights from the novelty score, ``w = clip((novelty - a) / b, 0, 1)`` (``a+b`` in
the table; `gsrcl.linear.pool_by_novelty` is ``2+1``); where the file holds each ensemble member's
probabilities (``p_members``), also the first ``k`` members' mean alone (``mk``) and under ``2+1`` (the novelty
score stays the whole ensemble's). Also each task's median novelty and the share of its
cells above 2 (``--name``: other file names, e.g. for another method's probabilities). With ``--data DIR``, for a task whose query holds types the reference lacks, also each rule's
unseen-type AUROC (``auroc <rule>``: the novelty score over the rule's ``conf_score``, averaged over each cell's
15 nearest query cells, as ``obs['unseen_score']``; the query read again from the task config). Writes
``OUT/pool_rules.{json,md}``::

    python benchmarks/pool_rules.py /tmp/shift_proba --data ../shared/data --out benchmarks/results
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.files import write_json, write_text  # noqa: E402
from harness.measure import now  # noqa: E402
from harness.metrics import macro_f1  # noqa: E402

FIXED = (0.25, 0.5)
CELL = ((1, 1), (1.5, 1), (1.75, 1), (2, 0.5), (2, 1), (2, 2), (2.5, 1), (3, 1))
P = 0.5


def _labels(p: np.ndarray, types: np.ndarray) -> np.ndarray:
    return np.where(p.max(axis=1) <= P, "Unassigned", types[p.argmax(axis=1)])


def rules(d) -> dict[str, np.ndarray]:
    """Each rule's probabilities."""
    p0, pl, nov = d["p_default"], d["p_linear"], d["novelty"]
    out = {"default": p0, "linear": pl}
    out.update({f"w={w}": (1 - w) * p0 + w * pl for w in FIXED})
    for a, b in CELL:
        w = np.clip((nov - a) / b, 0.0, 1.0)[:, None]
        out[f"{a}+{b}"] = (1 - w) * p0 + w * pl
    if "p_members" in d:  # the first k members of the ensemble, alone and under the 2+1 rule
        from gsrcl.linear import pool_by_novelty

        for k in range(1, len(d["p_members"])):
            pk = d["p_members"][:k].mean(axis=0)
            out[f"m{k}"], out[f"m{k} 2+1"] = pk, pool_by_novelty(pk, pl, nov)
    return out


def score(d, graph=None) -> dict[str, float]:
    types, y, nov = d["types"], d["y"], d["novelty"]
    pooled = rules(d)
    out = {r: macro_f1(y, _labels(p, types), list(types)) for r, p in pooled.items()}
    out["median_novelty"] = float(np.median(nov))
    out["share_novelty_above_2"] = float(np.mean(nov > 2))
    if graph is not None:
        from harness.metrics import unseen_auroc

        out.update({f"auroc {r}": unseen_auroc(y, -graph.smooth(nov / np.maximum(p.max(axis=1), 1e-6)), list(types))
                    for r, p in pooled.items()})
    return out


def query_graphs(task: str, data: str) -> list:
    """The query neighbourhoods of each split of ``task`` (None for a split without unseen types), over the
    reference's genes in log1p CP10k, as `benchmarks/afrcl_shift.py` finds them."""
    from gsrcl.model_input import log1p_cp10k
    from gsrcl.neighbours import QueryNeighbours, in_blocks
    from gsrcl.values import detect_values
    from harness.inputs import align_to
    from harness.metrics import as_text
    from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits

    config = load_config(DEFAULT_CONFIG, data)
    graphs = []
    for ref, query in task_splits(config.tasks[task], str(config.data_dir)):
        y = as_text(query.obs[LABEL])
        if np.isin(y, as_text(ref.obs[LABEL])).all():
            graphs.append(None)
            continue
        X = align_to(query.X, query.var, list(ref.var_names))
        Qm = log1p_cp10k(X, detect_values(X))
        graphs.append(QueryNeighbours().fit(in_blocks(Qm.tocsr()), Qm.shape[0]))
    return graphs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("proba", help="the --save-proba folder of benchmarks/afrcl_shift.py")
    ap.add_argument("--data", default=None, help="the data folder: also score the unseen-type AUROC")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--name", default="pool_rules", help="the files' name, OUT/NAME.{json,md}")
    a = ap.parse_args(argv)
    per_task = defaultdict(list)
    graphs: dict[str, list] = {}
    for f in sorted(glob.glob(os.path.join(a.proba, "*.npz"))):
        task, _, split = Path(f).stem.rsplit("_", 2)
        graph = None
        if a.data:
            if task not in graphs:
                graphs[task] = query_graphs(task, a.data)
            graph = graphs[task][int(split)]
        with np.load(f) as d:
            per_task[task].append(score(d, graph))
    tasks = {t: {k: float(np.mean([s[k] for s in splits])) for k in splits[0] if all(k in s for s in splits)}
             for t, splits in per_task.items()}
    cols = [c for c in next(iter(tasks.values())) if not c.startswith("auroc")]
    lines = ["# Pooling a method's probabilities with a linear SVM on the genes: rules scored on saved probabilities",
             "",
             f"`benchmarks/pool_rules.py DIR --name {a.name}` on the probabilities of `benchmarks/afrcl_shift.py --save-proba` "
             "or `benchmarks/linear_pool_trial.py` (seed 1111). Macro-F1; "
             "`w=`: a fixed weight of the linear SVM; `a+b`: per cell `w = clip((novelty - a) / b, 0, 1)`.", "",
             "| task | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {t} | " + " | ".join(f"{v[c]:.4f}" for c in cols) + " |" for t, v in sorted(tasks.items())]
    for t, v in sorted(tasks.items()):
        aurocs = {c[6:]: x for c, x in v.items() if c.startswith("auroc ")}
        if aurocs:
            lines += ["", f"Unseen-type AUROC, {t}:", "", "| " + " | ".join(aurocs) + " |", "|" + "---|" * len(aurocs),
                      "| " + " | ".join(f"{x:.4f}" for x in aurocs.values()) + " |"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{a.name}.json", {"command": "python benchmarks/pool_rules.py " + " ".join(argv or sys.argv[1:]),
                                         "created": now(), "tasks": tasks})
    write_text(out / f"{a.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
