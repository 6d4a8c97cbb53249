"""How much the accuracy benchmark's numbers move with the seed: every task x method x seed asked for, scored as
``benchmarks/accuracy.py`` scores it (``harness.runner.run_job`` / ``score_job``), with the mean, standard deviation and
worst seed per task and method next to the best baseline's mean.

One run of a small reference is one draw: GsRCL and AF-RCL start from random weights and batches, so a single seed
can land above or below a target by more than the target's margin. Results accumulate in
``benchmarks/results/seeds.{json,md}`` (a rerun of the same task, method and seed replaces that entry), so seeds
can be added in several runs::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seeds.py --tasks pbmc3k_to_kang --methods afrcl,svm,celltypist \\
        --seeds 1111,1112,1113,1114,1115

``--set KEY=VALUE`` (repeatable) trains ours with a hyperparameter other than the default preset's, to try a change
of the method on the benchmark's tasks before making it the default; such rows are named ``method[KEY=VALUE]``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seeds.py --tasks kang_donors --methods gsrcl --seeds 1111 \\
        --set scale_genes=true
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from harness.files import write_json, write_text
from harness.trials import parse_settings
from harness.measure import now
from harness.methods import BASELINES, METHOD_NAMES, OURS
from harness.report import TARGET_MARGIN
from harness.runner import run_isolated, run_job, score_job
from harness.tasks import DEFAULT_CONFIG, load_config

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("macro_f1", "macro_f1_best", "unseen_auroc", "unseen_auroc_novelty_score", "unseen_auroc_unseen_score",
           "unseen_auroc_max_raw_score")


def label(method: str, overrides: dict) -> str:
    """The row name of ``method`` trained with ``overrides``."""
    return method + ("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) + "]" if overrides else "")


def run(task_names, methods, seeds, config, out: Path, isolate: bool = True, overrides: dict | None = None) -> dict:
    overrides = dict(overrides or {})
    path = out / "seeds.json"
    results = json.loads(path.read_text()) if path.exists() else {"entries": {}}
    for name in task_names:
        task = config.tasks[name]
        for method in methods:
            for seed in seeds:
                t0 = time.perf_counter()
                job = (run_isolated if isolate else run_job)(task, str(config.data_dir), method, seed, False,
                                                              overrides)
                entry = score_job(job)
                row = label(method, overrides)
                results["entries"][f"{name}|{row}|{seed}"] = {
                    "task": name, "method": row, "seed": seed, **({"settings": overrides} if overrides else {}),
                    "metrics": {k: entry["metrics"].get(k) for k in METRICS if entry["metrics"].get(k) is not None},
                    "fit_seconds": float(sum(entry["fit_seconds"])), "wall_seconds": time.perf_counter() - t0,
                    "finished": now(), "threads": os.environ.get("OMP_NUM_THREADS"),
                }
                print(f"{name} {row} seed {seed}: macro-F1 {entry['metrics']['macro_f1']:.4f}", flush=True)
                write(results, out)  # after every run, so an interrupted sweep keeps what it finished
    return results


def summary(results: dict) -> dict:
    """{task: {method: {metric: (values by seed)}}} with the seeds in order."""
    out: dict = {}
    for e in sorted(results["entries"].values(), key=lambda e: (e["task"], e["method"], e["seed"])):
        m = out.setdefault(e["task"], {}).setdefault(e["method"], {"seeds": []})
        m["seeds"].append(e["seed"])
        for k, v in e["metrics"].items():
            m.setdefault(k, []).append(v)
    return out


def _stats(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f} (min {v.min():.4f})"


def markdown(results: dict) -> str:
    lines = ["# Seed spread of the accuracy benchmark", "",
             "Each task x method trained and scored as `benchmarks/accuracy.py` does, once per seed; mean ± standard "
             "deviation (worst seed) over the seeds. `needed`: the best baseline's mean macro-F1 minus 0.005, the "
             "target of the accuracy benchmark. Made with `benchmarks/seeds.py` (commands in the JSON's entries: "
             "task, method, seed, threads): `OMP_NUM_THREADS=1 python benchmarks/seeds.py --tasks TASK --methods "
             "METHOD --seeds SEEDS` for each row.", ""]
    lines += [f"- {note}" for note in results.get("notes", [])] + ([""] if results.get("notes") else [])
    for task, methods in summary(results).items():
        base = [np.mean(m["macro_f1"]) for name, m in methods.items() if name in BASELINES]
        needed = max(base) - TARGET_MARGIN if base else None
        lines += [f"## {task}", "", "| method | seeds | macro-F1 | macro-F1 without rejection | unseen AUROC "
                  "(conf_score / novelty_score / unseen_score) | meets `needed` on the mean |",
                  "|---|---|---|---|---|---|"]
        for name, m in methods.items():
            auc = " / ".join(_stats(m[k]).split(" ")[0] for k in ("unseen_auroc", "unseen_auroc_novelty_score",
                                                                    "unseen_auroc_unseen_score") if k in m) or "-"
            meets = "-" if needed is None or name in BASELINES else (
                f"{'yes' if np.mean(m['macro_f1']) >= needed else 'no'} (needed {needed:.4f})")
            lines.append(f"| {name} | {', '.join(map(str, m['seeds']))} | {_stats(m['macro_f1'])} | "
                         f"{_stats(m['macro_f1_best']) if 'macro_f1_best' in m else '-'} | {auc} | {meets} |")
        lines.append("")
    return "\n".join(lines)


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "seeds.json", results)
    write_text(out / "seeds.md", markdown(results) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", required=True, help="comma-separated task names of the config")
    ap.add_argument("--methods", required=True, help="comma-separated: gsrcl, afrcl, svm, svm_rejection, celltypist")
    ap.add_argument("--seeds", default="1111,1112,1113", help="comma-separated seeds (default 1111,1112,1113)")
    ap.add_argument("--config", default=None, help="task config (default benchmarks/tasks.json)")
    ap.add_argument("--data", default=None, help="data folder (default: the config's)")
    ap.add_argument("--out", default=str(RESULTS), help="folder of seeds.json / seeds.md (default benchmarks/results)")
    ap.add_argument("--in-process", action="store_true", help="run every job in this process (no worker process)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                    help="train gsrcl/afrcl with this hyperparameter instead of the preset's (value as JSON); repeatable")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = load_config(args.config or DEFAULT_CONFIG, args.data)
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    unknown = [t for t in tasks if t not in config.tasks] + [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        print(f"error: unknown task or method {', '.join(unknown)}; tasks: {', '.join(config.tasks)}; methods: "
              f"{', '.join(METHOD_NAMES)}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        overrides = parse_settings(args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if overrides and set(methods) - set(OURS):
        print(f"error: --set is for {', '.join(OURS)} only: run the baselines without it", file=sys.stderr)
        return 2
    run(tasks, methods, seeds, config, Path(args.out), isolate=not args.in_process, overrides=overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
