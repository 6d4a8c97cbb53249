"""Benchmark (not a test): rules pooling AF-RCL's probabilities with a linear SVM's on the genes, scored from the
probabilities `benchmarks/afrcl_shift.py --save-proba DIR` saved (no training).

For every ``DIR/TASK_SEED_SPLIT.npz``: macro-F1 over the reference's types (Unassigned, probability <= 0.5,
counts as wrong; mean over a task's splits) of the default, the linear SVM alone, a fixed weight ``w`` for the
linear SVM, and per-cell weights from the novelty score, ``w = clip((novelty - a) / b, 0, 1)`` (``a+b`` in
the table; `gsrcl.linear.pool_by_novelty` is ``2+1``). Also each task's median novelty and the share of its
cells above 2. Writes ``OUT/pool_rules.{json,md}``::

    python benchmarks/pool_rules.py /tmp/shift_proba --out benchmarks/results
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


def score(d) -> dict[str, float]:
    types, y, p0, pl, nov = d["types"], d["y"], d["p_default"], d["p_linear"], d["novelty"]

    def f1(p):
        return macro_f1(y, _labels(p, types), list(types))

    out = {"default": f1(p0), "linear": f1(pl)}
    out.update({f"w={w}": f1((1 - w) * p0 + w * pl) for w in FIXED})
    for a, b in CELL:
        w = np.clip((nov - a) / b, 0.0, 1.0)[:, None]
        out[f"{a}+{b}"] = f1((1 - w) * p0 + w * pl)
    out["median_novelty"] = float(np.median(nov))
    out["share_novelty_above_2"] = float(np.mean(nov > 2))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("proba", help="the --save-proba folder of benchmarks/afrcl_shift.py")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    per_task = defaultdict(list)
    for f in sorted(glob.glob(os.path.join(a.proba, "*.npz"))):
        task = Path(f).stem.rsplit("_", 2)[0]
        with np.load(f) as d:
            per_task[task].append(score(d))
    tasks = {t: {k: float(np.mean([s[k] for s in splits])) for k in splits[0]} for t, splits in per_task.items()}
    cols = list(next(iter(tasks.values())))
    lines = ["# Pooling AF-RCL with a linear SVM on the genes: rules scored on saved probabilities", "",
             "`benchmarks/pool_rules.py` on `benchmarks/afrcl_shift.py --save-proba` output (seed 1111). Macro-F1; "
             "`w=`: a fixed weight of the linear SVM; `a+b`: per cell `w = clip((novelty - a) / b, 0, 1)`.", "",
             "| task | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {t} | " + " | ".join(f"{v[c]:.4f}" for c in cols) + " |" for t, v in sorted(tasks.items())]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "pool_rules.json", {"command": "python benchmarks/pool_rules.py " + " ".join(argv or sys.argv[1:]),
                                         "created": now(), "tasks": tasks})
    write_text(out / "pool_rules.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
