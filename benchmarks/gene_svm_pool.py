"""GsRCL's per-type classifiers compared on the same trained encoders: each type's SVM on its encoder checkpoint
only, on the genes only, the choice between them (the gene SVM where its validation MCC is higher,
``gene_svm=True``), and the mean of the two SVMs' probabilities (``gene_svm="pool"``, the default).

One GsRCL model per task and seed is trained with ``gene_svm="pool"`` (which fits both SVMs for every type and
records both validation scores); the other rules are that model with some of its SVMs left out, so the comparison
is paired: the encoders, the checkpoints and each SVM are the same in every column. Every variant annotates the
query as ``benchmarks/accuracy.py`` does (``gsrcl.annotate``, p = 0.5) and is scored with its macro-F1 over the known
types (Unassigned counts as wrong) and, for tasks with unseen types, the AUROC of conf_score. Results accumulate in
``benchmarks/results/gene_svm_pool.{json,md}`` (a rerun of a task and seed replaces its entry)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gene_svm_pool.py --tasks pbmc3k_to_kang --seeds 1111,1114
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from harness.inputs import align_to
from harness.methods import make_method
from harness.metrics import as_text, macro_f1, unseen_auroc
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits
from harness.trials import TrialLog, trial_parser

RULES = ("encoder", "genes", "chosen", "pool")


def variants(model) -> dict[str, tuple[list, list, list]]:
    """(svcs_, task_encoder_, gene_svcs_) of each rule, from a model trained with ``gene_svm="pool"``."""
    from gsrcl.methods.gsrcl import GENES

    K = len(model.cell_types)
    enc, genes, tasks = list(model.svcs_), list(model.gene_svcs_), model.validation_["tasks"]
    chosen = [t["gene_score"] is not None and (t["encoder_score"] is None or t["gene_score"] > t["encoder_score"])
              for t in (tasks[c] for c in model.cell_types)]
    return {
        "encoder": (enc, list(model.task_encoder_), [None] * K),
        "genes": (genes, [GENES] * K, [None] * K),
        "chosen": ([g if c else e for e, g, c in zip(enc, genes, chosen)],
                   [GENES if c else j for j, c in zip(model.task_encoder_, chosen)], [None] * K),
        "pool": (enc, list(model.task_encoder_), genes),
    }


def run_task(task, data_dir: str, seed: int) -> list[dict]:
    import anndata as ad
    import pandas as pd

    from gsrcl import annotate

    out = []
    for ref, query in task_splits(task, data_dir):
        est = make_method("gsrcl", seed=seed, overrides={"gene_svm": "pool"})
        t0 = time.perf_counter()
        est.fit(ref, ref.obs[LABEL].to_numpy())
        fit_seconds = time.perf_counter() - t0
        reference, model = est.reference_, est.reference_.model
        genes = list(reference.genes)
        q = ad.AnnData(align_to(query.X, query.var, genes), obs=pd.DataFrame(index=query.obs_names),
                       var=pd.DataFrame(index=pd.Index(genes)))
        y = as_text(query.obs[LABEL])
        known = sorted(set(reference.cell_types))
        split = {"fit_seconds": fit_seconds, "validation": {
            t: {"encoder": v["encoder_score"], "genes": v["gene_score"]} for t, v in model.validation_["tasks"].items()},
            "rules": {}}
        for rule, (svcs, task_encoder, gene_svcs) in variants(model).items():
            model.svcs_, model.task_encoder_, model.gene_svcs_ = svcs, task_encoder, gene_svcs
            model._set_positive_columns()
            obs = annotate(q, reference, quiet=True).obs
            pred = as_text(obs["predicted_labels"])
            metrics = {"macro_f1": macro_f1(y, pred, known)}
            auroc = unseen_auroc(y, obs["conf_score"].to_numpy(float), known)
            if auroc is not None:
                metrics["unseen_auroc"] = auroc
            split["rules"][rule] = metrics
        out.append(split)
    return out


def mean_f1(splits: list[dict], rule: str) -> float:
    """A rule's macro-F1, the mean over the folds of a cross-validation task."""
    return float(np.mean([s["rules"][rule]["macro_f1"] for s in splits]))


def markdown(results: dict) -> str:
    lines = ["# GsRCL's per-type SVMs: encoder, genes, the choice between them, or both pooled", "",
             "Paired: one model per task and seed (`gene_svm=\"pool\"`), the other rules are the same model with "
             "some SVMs left out (`benchmarks/gene_svm_pool.py`). `chosen`: the gene SVM where its validation MCC "
             "is higher than the checkpoint's (`gene_svm=True`, the default before 2026-12-06); `pool`: the mean of "
             "both SVMs' probabilities (`gene_svm=\"pool\"`, the default). Macro-F1 over the known types (mean "
             "over the folds of a cross-validation task); in "
             "brackets the unseen-type AUROC of conf_score.", ""]
    lines += [f"- {note}" for note in results.get("notes", [])] + ([""] if results.get("notes") else [])
    lines += ["| task | seed | " + " | ".join(RULES) + " |", "|---|---|" + "---|" * len(RULES)]
    for e in sorted(results["entries"].values(), key=lambda e: (e["task"], e["seed"])):
        cells = []
        for rule in RULES:
            f1 = mean_f1(e["splits"], rule)
            auc = [s["rules"][rule]["unseen_auroc"] for s in e["splits"] if "unseen_auroc" in s["rules"][rule]]
            cells.append(f"{f1:.4f}" + (f" ({np.mean(auc):.3f})" if auc else ""))
        lines.append(f"| {e['task']} | {e['seed']} | " + " | ".join(cells) + " |")
    means = {}
    for e in results["entries"].values():
        means.setdefault(e["task"], []).append(e)
    lines += ["", "Mean over the seeds:", "", "| task | seeds | " + " | ".join(RULES) + " |",
              "|---|---|" + "---|" * len(RULES)]
    for task, entries in sorted(means.items()):
        row = [np.mean([mean_f1(e["splits"], r) for e in entries]) for r in RULES]
        lines.append(f"| {task} | {', '.join(str(e['seed']) for e in sorted(entries, key=lambda e: e['seed']))} | "
                     + " | ".join(f"{v:.4f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = trial_parser(__doc__, "gene_svm_pool").parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = load_config(args.config or DEFAULT_CONFIG, args.data)
    trials = TrialLog(args.out, "gene_svm_pool", markdown)
    for name in args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            splits = run_task(config.tasks[name], str(config.data_dir), seed)
            trials.add(f"{name}|{seed}", {"task": name, "seed": seed, "splits": splits})
            print(name, seed, {r: round(mean_f1(splits, r), 4) for r in RULES}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
