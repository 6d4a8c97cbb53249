"""AF-RCL under a shift between reference and query: its default against classifiers fitted on the same model, paired.

One AF-RCL model per task and seed is trained at the ``default`` preset, as ``benchmarks/accuracy.py`` trains it.
On that model, without retraining the encoders, the query is annotated by:

- ``default``: the model as trained;
- ``genes``: a multi-class RBF SVM on the model input itself (log1p CP10k over the reference genes; C and gamma
  by the paper grid on at most 3,000 cells, `gsrcl.svm.fit_svc`), fitted on the reference's training cells;
- ``pool``: the mean of the two rows of probabilities (as GsRCL's ``gene_svm="pool"`` does per type);
- ``adabn``: the encoders' BatchNorm statistics re-estimated on the query's own cells (AdaBN, Li et al. 2016:
  unsupervised, per query), then the model as trained;
- ``adabn_pool``: both;
- ``linear``: a linear SVM on the model input (scikit-learn ``LinearSVC``, C = 1, its probabilities by Platt's
  sigmoid over 3 folds, ``CalibratedClassifierCV``), fitted on the reference's training cells;
- ``linear_pool``: the mean of the default's and the linear SVM's probabilities;
- ``linear_quarter``: the default's probabilities weighted 3/4, the linear SVM's 1/4.

``--save-proba DIR`` also writes, per task, seed and split, ``DIR/TASK_SEED_SPLIT.npz``: the query's true labels,
the reference's types, every rule's probabilities and the novelty score, so that other weights and query-level
rules can be scored without training again.

Each is scored with macro-F1 over the reference's types (Unassigned, probability <= 0.5, counts as wrong), as
the accuracy benchmark; where the query holds types the reference lacks, also the AUROC of each rule's
``unseen_score`` (the model's novelty score over the rule's ``conf_score``, averaged over each cell's 15 nearest
query cells in the model input's principal components) for telling them from known cells. ``--set KEY=VALUE``
trains the model with a setting other than the default preset's (``ensemble=1``, ``scale_genes=true``: values
read as JSON); each setting is an entry of its own. Results accumulate in
``benchmarks/results/afrcl_shift.{json,md}``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/afrcl_shift.py --tasks pbmc_3v1_to_5p,pbmc_5p_to_3v1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/afrcl_shift.py --tasks pbmc_3v1_to_5p --set ensemble=1
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from harness.inputs import align_to
from harness.methods import make_method
from harness.metrics import as_text, macro_f1, unseen_auroc
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits
from harness.trials import TrialLog, parse_settings, trial_parser

RULES = ("default", "genes", "pool", "adabn", "adabn_pool", "linear", "linear_pool", "linear_quarter")
P = 0.5


def _labels(proba: np.ndarray, types: list[str]) -> np.ndarray:
    best = proba.argmax(axis=1)
    return np.where(proba.max(axis=1) <= P, "Unassigned", np.asarray(types, dtype=object)[best])


def _members(model):
    return list(getattr(model, "members", [model]))


def adapt_batch_norm(model, Xm, block: int = 4096) -> None:
    """Each member encoder's BatchNorm running statistics replaced by those of the query's model input ``Xm``."""
    import torch

    from gsrcl.methods.encoding import sparse_tensor

    for member in _members(model):
        enc = member.encoder_
        norms = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative mean over the blocks
        enc.train()
        X = member._scaled(Xm)
        with torch.no_grad():
            for start in range(0, X.shape[0], block):
                enc(sparse_tensor(X[start:start + block], torch.device("cpu")))
        enc.eval()


def _unseen_aurocs(y, types, novelty, proba: dict, Qm) -> dict[str, float] | None:
    """Per rule, the AUROC of its neighbourhood-averaged unseen score (None: the query has no unseen type)."""
    from gsrcl.neighbours import QueryNeighbours, in_blocks

    if np.isin(y, types).all() or Qm.shape[0] < 60:
        return None
    graph = QueryNeighbours().fit(in_blocks(Qm.tocsr()), Qm.shape[0])
    return {r: unseen_auroc(y, -graph.smooth(novelty / np.maximum(p.max(axis=1), 1e-6)), types)
            for r, p in proba.items()}


def linear_svm(X, y, seed: int):
    """A linear SVM on ``X`` with Platt probabilities (3 folds), its columns in sorted label order."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    return CalibratedClassifierCV(LinearSVC(C=1.0, random_state=seed), cv=3).fit(X, y)


def variant_name(settings: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(settings.items())) or "default"


def run_task(task, data_dir: str, seed: int, settings: dict | None = None, save=None) -> list[dict]:
    import anndata as ad
    import pandas as pd

    from gsrcl import annotate
    from gsrcl.svm import fit_svc
    from gsrcl.values import detect_values

    out = []
    for ref, query in task_splits(task, data_dir):
        est = make_method("afrcl", seed=seed, overrides=settings or None)
        t0 = time.perf_counter()
        est.fit(ref, ref.obs[LABEL].to_numpy())
        fit_seconds = time.perf_counter() - t0
        reference, model = est.reference_, est.reference_.model
        genes, types = list(reference.genes), list(reference.cell_types)
        q = ad.AnnData(align_to(query.X, query.var, genes), obs=pd.DataFrame(index=query.obs_names),
                       var=pd.DataFrame(index=pd.Index(genes)))
        y = as_text(query.obs[LABEL])
        keep = np.isin(as_text(ref.obs[LABEL]), types)
        R = align_to(ref.X, ref.var, genes)[keep]
        Rm = reference.model_input.transform(R, detect_values(R))
        Qm = reference.model_input.transform(q.X, detect_values(q.X))
        t1 = time.perf_counter()
        gene_svc = fit_svc(Rm.toarray(), as_text(ref.obs[LABEL])[keep], seed=seed, n_jobs=1, ties="largest_c",
                           distances=True)
        gene_seconds = time.perf_counter() - t1
        gene = gene_svc.predict_proba(Qm.toarray())[:, [list(map(str, gene_svc.classes_)).index(t) for t in types]]
        lin = linear_svm(Rm, as_text(ref.obs[LABEL])[keep], seed)
        linear = lin.predict_proba(Qm)[:, [list(map(str, lin.classes_)).index(t) for t in types]]
        first = annotate(q, reference, quiet=True, plot=False)
        novelty = np.asarray(first.obs["novelty_score"], dtype=float)
        proba = {"default": np.asarray(first.obsm["probabilities"])}
        proba["genes"] = gene
        proba["pool"] = (proba["default"] + gene) / 2
        adapt_batch_norm(model, Qm)
        proba["adabn"] = np.asarray(annotate(q, reference, quiet=True, plot=False).obsm["probabilities"])
        proba["adabn_pool"] = (proba["adabn"] + gene) / 2
        proba["linear"] = linear
        proba["linear_pool"] = (proba["default"] + linear) / 2
        proba["linear_quarter"] = 0.75 * proba["default"] + 0.25 * linear
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(save / f"{task.name}_{seed}_{len(out)}.npz", y=np.asarray(y, dtype=str),
                                types=np.asarray(types, dtype=str), novelty=novelty,
                                **{f"p_{r}": p for r, p in proba.items()})
        rules = {r: {"macro_f1": macro_f1(y, _labels(p, types), types)} for r, p in proba.items()}
        aurocs = _unseen_aurocs(y, types, novelty, proba, Qm)
        for r, value in (aurocs or {}).items():
            rules[r]["unseen_auroc"] = value
        out.append({"fit_seconds": fit_seconds, "gene_svm_seconds": gene_seconds,
                    "gene_svm": {**gene_svc.best_params_, "cv_mcc": gene_svc.cv_score_}, "rules": rules})
    return out


def markdown(results: dict) -> str:
    lines = ["# AF-RCL under shift: the default against other classifiers on the same trained model", "",
             "Paired (`benchmarks/afrcl_shift.py`): one AF-RCL `default` model per task and seed; `genes` a "
             "multi-class RBF SVM on the model input, `pool` the mean of both, `adabn` the encoders' BatchNorm "
             "statistics re-estimated on the query, `adabn_pool` both, `linear` a linear SVM on the model input with Platt "
             "probabilities, `linear_pool` its mean with the default, `linear_quarter` the default weighted 3/4 and the linear SVM 1/4. Macro-F1 over the reference's types "
             "(Unassigned counts as wrong; mean over folds); in brackets, where the query holds types the reference "
             "lacks, the AUROC of the rule's neighbourhood-averaged unseen score. `training`: the settings other than "
             "the default preset's; `fit s`: the model's training time; –: an entry made before the rule.", "",
             *([results["note"], ""] if results.get("note") else []),
             "| task | training | seed | fit s | " + " | ".join(RULES) + " |", "|---|---|---|---|" + "---|" * len(RULES)]

    def cell(e, r):
        if any(r not in s["rules"] for s in e["splits"]):
            return "–"  # an entry made before the rule
        text = f"{np.mean([s['rules'][r]['macro_f1'] for s in e['splits']]):.4f}"
        aurocs = [s["rules"][r].get("unseen_auroc") for s in e["splits"]]
        if all(a is not None for a in aurocs):
            text += f" ({np.mean(aurocs):.3f})"
        return text

    def order(e):
        return e["task"], e.get("training", "default") != "default", e.get("training", "default"), e["seed"]

    for e in sorted(results["entries"].values(), key=order):
        fit = sum(s["fit_seconds"] for s in e["splits"])
        lines.append(f"| {e['task']} | {e.get('training', 'default')} | {e['seed']} | {fit:.0f} | "
                     + " | ".join(cell(e, r) for r in RULES) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = trial_parser(__doc__, "afrcl_shift")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting other than the default preset's (repeatable)")
    parser.add_argument("--save-proba", type=Path, default=None, metavar="DIR",
                        help="also write each split's probabilities, labels and novelty scores to DIR/*.npz")
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.set)
    except ValueError as exc:
        parser.error(str(exc))
    variant = variant_name(settings)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = load_config(args.config or DEFAULT_CONFIG, args.data)
    trials = TrialLog(args.out, "afrcl_shift", markdown)
    for name in args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            splits = run_task(config.tasks[name], str(config.data_dir), seed, settings, args.save_proba)
            key = f"{name}|{seed}" + ("" if variant == "default" else f"|{variant}")
            trials.add(key, {"task": name, "seed": seed, "training": variant, "splits": splits})
            print(markdown(trials.results).splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
