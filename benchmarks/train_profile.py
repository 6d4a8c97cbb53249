"""Where the default training's time goes, by stage (issue 24, part 1).

One process per (task, method): ``gsrcl.train`` with the default preset on the task's first reference split (the
reference a user of the accuracy benchmark's task would train), under cProfile; the stages are read from the
cumulative times of the functions that implement them, so they are the same code paths a user runs:

- optimiser steps: the epochs' mini-batch loops (the encoder's time outside validation and the final SVM);
- validations: checkpoint scoring (the encoders' passes over training and validation cells and the quick
  classifier), weight averaging's extra scoring included;
- SVM grid and final SVM: ``fit_final_svc`` (C and gamma by CV, then the refit), on the embedding or on genes;
- novelty model: ``NoveltyModel.fit`` (PCA, centroids and the held-out calibration);
- preparation: what ``gsrcl.train`` does outside the members (reading, values, genes, the reference's own
  bookkeeping);
- each ensemble member's total.

The trained references are kept in ``benchmarks/scratch/profile_refs/TASK_METHOD``. Prints a markdown table; ``--out`` merges the rows into a JSON file (a row run again replaces its entry)::

    OMP_NUM_THREADS=1 python benchmarks/train_profile.py --tasks pbmc3k_to_kang,mouse_immune_cv --methods afrcl,gsrcl
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness.files import write_json  # noqa: E402  (benchmarks/ is on the path)
RESULT = ROOT / "benchmarks" / "results" / "train_profile.json"
SCRATCH = ROOT / "benchmarks" / "scratch" / "profile_refs"  # the trained references, kept (git-ignored)

# stage -> (module file suffix, function name) whose cumulative time is the stage's
STAGES = {
    "members": [("methods/afrcl.py", "fit"), ("methods/gsrcl.py", "fit")],
    "validations": [("methods/afrcl.py", "score_encoder"), ("methods/gsrcl.py", "score_encoder")],
    "gene SVM scoring": [("methods/gsrcl.py", "_score_genes")],
    "final SVMs (grid + refit)": [("methods/classifiers.py", "fit_final_svc")],
    "novelty model": [("gsrcl/novelty.py", "fit")],
    "train": [("gsrcl/training.py", "train")],
}


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    """The cumulative seconds of each stage's functions (outermost calls only, as cProfile reports them)."""
    out = {name: 0.0 for name in STAGES}
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        for name, targets in STAGES.items():
            if any(path.endswith(suffix) and func == f for suffix, f in targets):
                out[name] += ct
    return out


def child(task_name: str, method: str, threads: int) -> dict:
    import numpy as np

    from harness.tasks import LABEL, load_config, task_splits

    import gsrcl

    config = load_config()
    task = config.tasks[task_name]
    ref, _query = task_splits(task, config.data_dir)[0]
    labels = ref.obs[LABEL].to_numpy()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    model = gsrcl.train(ref, labels_key=LABEL, method=method, threads=threads, quiet=True)
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    stages = stage_seconds(stats)
    model.save(SCRATCH, f"{task_name}_{method}", overwrite=True)  # for benchmarks/reference_size.py
    inner = stages["validations"] + stages["gene SVM scoring"] + stages["final SVMs (grid + refit)"]
    stages["optimiser steps and the rest of the members"] = stages["members"] - inner
    stages["preparation"] = stages.pop("train") - stages["members"] - stages["novelty model"]
    return {"task": task_name, "method": method, "cells": int(ref.n_obs), "genes": int(ref.n_vars),
            "types": int(len(np.unique(labels))), "members": int(model.manifest["hyperparameters"].get("ensemble", 1)),
            "seconds": total, "stages": stages}


ORDER = ["members", "optimiser steps and the rest of the members", "validations", "gene SVM scoring",
         "final SVMs (grid + refit)", "novelty model", "preparation"]


def table(rows: list[dict]) -> str:
    names = ORDER
    head = "| task | method | cells × genes | total s | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for r in rows:
        cells = " | ".join(f"{r['stages'].get(k, 0.0):.0f} ({100 * r['stages'].get(k, 0.0) / r['seconds']:.0f}%)"
                           for k in names)
        lines.append(f"| {r['task']} | {r['method']} ×{r['members']} | {r['cells']:,} × {r['genes']:,} | "
                     f"{r['seconds']:.0f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        print("RESULT " + json.dumps(child(argv[1], argv[2], int(argv[3]))), flush=True)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="pbmc3k_to_kang,mouse_immune_cv")
    p.add_argument("--methods", default="afrcl,gsrcl")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULT)
    a = p.parse_args(argv)
    rows = []
    for task in a.tasks.split(","):
        for method in a.methods.split(","):
            print(f"{task} / {method} ...", flush=True)
            run = subprocess.run([sys.executable, __file__, "_child", task, method, str(a.threads)],
                                 capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
            found = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
            if run.returncode or not found:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(found[-1][7:])
            row["load"] = os.getloadavg()
            rows.append(row)
            print(table([row]), flush=True)
    print(table(rows))
    old = json.loads(a.out.read_text()) if a.out.exists() else {"rows": []}
    keep = [r for r in old["rows"] if (r["task"], r["method"]) not in {(n["task"], n["method"]) for n in rows}]
    result = {"command": "benchmarks/train_profile.py " + " ".join(argv), "platform": platform.platform(),
              "cpus": os.cpu_count(), "rows": keep + rows, "table": table(keep + rows)}
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
