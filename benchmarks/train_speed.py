"""Training speed of the default preset against an earlier revision, on the same data, in the same run.

For each task of ``benchmarks/tasks.json`` (its first reference: the whole reference of a ``cross`` task, the
first fold's training part of a ``cv`` task), the reference is written once to ``benchmarks/scratch/`` as h5ad;
then, for each method, ``gsrcl.train(..., preset="default", seed=SEED)`` of the revision ``--base`` (checked out
into a temporary git worktree) and of this working tree each train on it in a fresh subprocess, one after the
other (the order alternates between tasks so that a drift in the machine's load does not favour one side). The
subprocess times ``gsrcl.train`` alone (after the imports and the reading) and reports its peak memory (VmHWM).
The ratio ``base s / head s`` is the speed-up; the machine's load average is recorded at both ends.
``--together`` trains both sides at the same time instead (one process each, for a machine with a core for
each): both then share whatever else the machine runs.

The default base, b215426, is main when the speed issue was filed (issue 24: "at least 4 times faster than
today's main"). Results merge into ``benchmarks/results/train_speed.{json,md}`` (a rerun of a task x method
replaces its entry)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speed.py --tasks pbmc_3v1_to_5p --methods afrcl
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speed.py --tasks pbmc3k_to_kang,mouse_immune_cv
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from harness.files import write_json, write_text  # noqa: E402  (benchmarks/ is on the path)
from harness.measure import now  # noqa: E402
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits  # noqa: E402

SCRATCH = ROOT / "benchmarks" / "scratch" / "train_speed"
RESULTS = ROOT / "benchmarks" / "results"
BASE = "b215426"

# Run in the subprocess with the revision's src first on the path: only gsrcl.train's long-standing keywords.
CHILD = r"""
import json, sys, time
import anndata as ad
import gsrcl
adata = ad.read_h5ad(sys.argv[1])
t0 = time.perf_counter()
gsrcl.train(adata, sys.argv[2], method=sys.argv[3], seed=int(sys.argv[4]), quiet=True)
seconds = time.perf_counter() - t0
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("RESULT " + json.dumps({"seconds": seconds, "peak_rss": peak, "gsrcl": gsrcl.__file__}))
"""


def reference_file(task, data_dir: str) -> Path:
    """The task's first reference as h5ad in the scratch folder (written once)."""
    path = SCRATCH / f"{task.name}.h5ad"
    if not path.exists():
        ref, _ = task_splits(task, data_dir)[0]
        SCRATCH.mkdir(parents=True, exist_ok=True)
        ref.obs = ref.obs[[LABEL]].astype(str)
        tmp = path.with_suffix(".tmp.h5ad")
        ref.write_h5ad(tmp)
        os.replace(tmp, path)
    return path


def train_once(src: Path, h5ad: Path, method: str, seed: int) -> dict:
    """``gsrcl.train`` of the gsrcl in ``src`` on ``h5ad``, in a fresh process: seconds and peak memory."""
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run([sys.executable, "-c", CHILD, str(h5ad), LABEL, method, str(seed)], env=env,
                          capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"training with {src} failed: {done.stderr.strip().splitlines()[-1:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    if not out.pop("gsrcl").startswith(str(src)):
        raise RuntimeError(f"the subprocess did not import gsrcl from {src}")
    return out


def markdown(results: dict) -> str:
    lines = ["# Training speed of the default preset against an earlier revision", "",
             "`benchmarks/train_speed.py`: each task's first reference trained by `gsrcl.train(preset='default')` of "
             "both revisions in fresh processes in the same run, one after the other (`in turn`) or at the same time "
             "(`together`, one core each). `speed-up`: base s / head s; `load`: the machine's load average before and "
             "after.",
             "", "| task | method | cells x genes | base | run | base s | head s | speed-up | base peak GB | head peak GB "
             "| load |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for e in sorted(results["entries"].values(), key=lambda e: (e["task"], e["method"])):
        b, h = e["base_run"], e["head_run"]
        load = " → ".join(f"{x:.1f}" for x in e.get("load", [])) or "-"
        lines.append(f"| {e['task']} | {e['method']} | {e['cells']:,} x {e['genes']:,} | {e['base']} | "
                     f"{e.get('run', 'in turn')} | {b['seconds']:.0f} | {h['seconds']:.0f} | "
                     f"{b['seconds'] / h['seconds']:.2f}x | {b['peak_rss'] / 1e9:.2f} | {h['peak_rss'] / 1e9:.2f} | {load} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", required=True, help="comma-separated task names of the config")
    ap.add_argument("--methods", default="afrcl,gsrcl")
    ap.add_argument("--base", default=BASE, help=f"the earlier revision (default {BASE})")
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--together", action="store_true",
                    help="train both revisions at the same time (one core each) instead of one after the other")
    args = ap.parse_args(argv)
    import anndata as ad

    config = load_config(DEFAULT_CONFIG)
    out = Path(args.out)
    path = out / "train_speed.json"
    results = json.loads(path.read_text()) if path.exists() else {"entries": {}}
    base_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], capture_output=True,
                              text=True, check=True).stdout.strip()
    head_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks" / "scratch") as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), base_rev], check=True)
        try:
            for i, name in enumerate(args.tasks.split(",")):
                task = config.tasks[name]
                h5ad = reference_file(task, str(config.data_dir))
                shape = ad.read_h5ad(h5ad, backed="r").shape
                for method in args.methods.split(","):
                    load = [os.getloadavg()[0]]
                    sides = [("base", tree / "src"), ("head", ROOT / "src")]
                    runs = {}
                    if args.together:
                        from concurrent.futures import ThreadPoolExecutor

                        with ThreadPoolExecutor(2) as pool:
                            jobs = {side: pool.submit(train_once, src, h5ad, method, args.seed) for side, src in sides}
                            runs = {side: job.result() for side, job in jobs.items()}
                    else:
                        for side, src in (sides if i % 2 == 0 else sides[::-1]):
                            runs[side] = train_once(src, h5ad, method, args.seed)
                    for side in ("base", "head"):
                        print(f"{name} {method} {side}: {runs[side]['seconds']:.0f} s", flush=True)
                    load.append(os.getloadavg()[0])
                    results["entries"][f"{name}|{method}"] = {
                        "task": name, "method": method, "cells": shape[0], "genes": shape[1], "base": base_rev,
                        "head": head_rev, "seed": args.seed, "base_run": runs["base"], "head_run": runs["head"],
                        "speed_up": runs["base"]["seconds"] / runs["head"]["seconds"], "load": load,
                        "run": "together" if args.together else "in turn",
                        "threads": os.environ.get("OMP_NUM_THREADS"), "finished": now(),
                        "command": " ".join(["benchmarks/train_speed.py", *sys.argv[1:]])}
                    out.mkdir(parents=True, exist_ok=True)
                    write_json(path, results)
                    write_text(out / "train_speed.md", markdown(results))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
