"""Benchmark (not a test): the accuracy table of a candidate default, from probabilities already scored.

`benchmarks/pool_rules.py` scores every rule of pooling (and, with ``p_members``, every ensemble size) on the
probabilities of one training per task. This script takes one rule of such a file for each method, puts it beside
the method's row of the accuracy benchmark (``accuracy.json``: the defaults the benchmark last ran) and the
baselines of that benchmark, and reports for each task the target (the best baseline less 0.005), each column's
margin to the best baseline, and the worst and mean margin over the tasks; also each column's unseen-type AUROC
(``unseen_score``) where the task has unseen types. Writes ``OUT/NAME.{json,md}``::

    python benchmarks/defaults_table.py --rule "afrcl=benchmarks/results/pool_rules_afrcl_members.json:m3 2+1" \\
        --rule "gsrcl=benchmarks/results/pool_rules_gsrcl.json:2+1" --name defaults_table
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.files import write_json, write_text  # noqa: E402
from harness.measure import now  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ("svm", "svm_rejection", "celltypist")
TOLERANCE = 0.005


def _rule(text: str) -> tuple[str, Path, str]:
    method, _, rest = text.partition("=")
    path, _, rule = rest.rpartition(":")
    if not (method and path and rule):
        raise argparse.ArgumentTypeError(f"expected METHOD=FILE.json:RULE, not {text!r}")
    return method, Path(path), rule


def _unseen(entry: dict) -> float | None:
    return (entry.get("metrics") or {}).get("unseen_auroc_unseen_score")


def build(accuracy: dict, rules: list[tuple[str, Path, str]]) -> dict:
    """Rows of the table: each task's baselines, each method's benchmark row and candidate rule, the target."""
    candidates = {m: (json.loads(p.read_text())["tasks"], r) for m, p, r in rules}
    rows = {}
    for task, entry in accuracy["tasks"].items():
        methods = entry["methods"]
        if not all(b in methods for b in BASELINES):
            continue
        row = {b: methods[b]["metrics"]["macro_f1"] for b in BASELINES}
        best = max(row.values())
        row["target"] = best - TOLERANCE
        auroc = {}
        for m, (scored, rule) in candidates.items():
            if m in methods:
                row[f"{m} (benchmark)"] = methods[m]["metrics"]["macro_f1"]
                if _unseen(methods[m]) is not None:
                    auroc[f"{m} (benchmark)"] = _unseen(methods[m])
            if task in scored and rule in scored[task]:
                row[f"{m} ({rule})"] = scored[task][rule]
                if f"auroc {rule}" in scored[task]:
                    auroc[f"{m} ({rule})"] = scored[task][f"auroc {rule}"]
        rows[task] = {"macro_f1": row, "best_baseline": best, "unseen_auroc": auroc}
    return rows


def markdown(rows: dict, command: str) -> str:
    cols = sorted({c for r in rows.values() for c in r["macro_f1"] if c not in BASELINES and c != "target"},
                  key=lambda c: (c.split(" ")[0], "(benchmark)" not in c))
    cols = cols + list(BASELINES) + ["target"]
    lines = ["# A candidate default's accuracy table, from scored probabilities", "",
             f"`{command}`. Macro-F1 (Unassigned counts as wrong); `(benchmark)`: the method's row of "
             "`accuracy.json`; `(rule)`: the rule of `benchmarks/pool_rules.py` on one training per task (seed 1111); "
             "`target`: the best baseline less 0.005; * below it.", "",
             "| task | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    margins: dict[str, list[float]] = {c: [] for c in cols[:-4]}
    for task, r in rows.items():
        f1 = r["macro_f1"]
        cells = []
        for c in cols:
            v = f1.get(c)
            if v is None:
                cells.append("-")
                continue
            star = " *" if c in margins and v < f1["target"] - 1e-9 else ""
            cells.append(f"{v:.4f}{star}")
            if c in margins:
                margins[c].append(v - r["best_baseline"])
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "| column | tasks | worst margin to the best baseline | mean margin |", "|---|---|---|---|"]
    lines += [f"| {c} | {len(m)} | {min(m):+.4f} | {np.mean(m):+.4f} |" for c, m in margins.items() if m]
    aurocs = {t: r["unseen_auroc"] for t, r in rows.items() if r["unseen_auroc"]}
    if aurocs:
        lines += ["", "Unseen-type AUROC (`unseen_score`):", ""]
        lines += [f"- {t}: " + ", ".join(f"{c} {v:.4f}" for c, v in a.items()) for t, a in aurocs.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rule", type=_rule, action="append", required=True, metavar="METHOD=FILE.json:RULE",
                    help="a method, a pool_rules.py JSON file and one of its rules (repeatable)")
    ap.add_argument("--accuracy", type=Path, default=RESULTS / "accuracy.json")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="defaults_table")
    a = ap.parse_args(argv)
    command = "python benchmarks/defaults_table.py " + " ".join(
        f'"{x}"' if " " in x else x for x in (argv if argv is not None else sys.argv[1:]))
    rows = build(json.loads(a.accuracy.read_text()), a.rule)
    text = markdown(rows, command)
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / f"{a.name}.json", {"command": command, "created": now(), "tasks": rows})
    write_text(a.out / f"{a.name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
