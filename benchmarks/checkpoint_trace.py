"""Benchmark (not a test): how AF-RCL's validation score and its cross-study accuracy move over one training.

One AF-RCL model (the default preset, ``ensemble=1``) is trained on a task's reference as the accuracy benchmark
trains it. At every validation, next to the validation MCC that chooses the checkpoint, the query of the task is
encoded with the same weights and scored: macro-F1 over the known types of one SVC (C=1, gamma='scale', the
checkpoint scorer's classifier) fitted on the scored training cells' embeddings, no rejection. The last row of a
run is the mean of the weights (``average_checkpoints``). The query is never used for training or for any choice:
it is only watched. Writes ``benchmarks/results/checkpoint_trace.{json,md}`` (a seed run again replaces its rows)::

    OMP_NUM_THREADS=1 python benchmarks/checkpoint_trace.py --task pbmc3k_to_kang --seeds 1111,1112
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "checkpoint_trace.json"


def trace(task_name: str, seed: int) -> list[dict]:
    """Rows (validation, epoch, validation MCC, query macro-F1) of one training with ``seed``."""
    import anndata as ad
    import torch

    import gsrcl.methods.afrcl as af
    from gsrcl import train
    from gsrcl.nn import Encoder
    from gsrcl.svm import _fit_quietly, _svc
    from gsrcl.values import log1p_normalized
    from harness.inputs import align_to, model_input
    from harness.metrics import macro_f1
    from harness.tasks import LABEL, load_config, task_splits

    config = load_config(ROOT / "tasks.json")
    ref, query = task_splits(config.tasks[task_name], config.data_dir)[0]
    genes = list(map(str, ref.var_names))
    # the query as prediction gives it to the model: aligned to the reference genes, log1p CP10k
    Xq = log1p_normalized(model_input(ad.AnnData(align_to(query.X, query.var, genes))), 1e4)
    yq = query.obs[LABEL].astype(str).to_numpy()
    known = sorted(set(ref.obs[LABEL].astype(str)) & set(yq))
    seen: dict = {"rows": []}
    originals = (af.AFRCL.fit, Encoder.restrict_inputs, af.encode, af.validation_score)

    def fit(self, *a, **k):
        seen["model"] = self
        return originals[0](self, *a, **k)

    def restrict_inputs(self, keep):
        seen["keep"] = np.asarray(keep)
        return originals[1](self, keep)

    def encode(encoder, X, device, block=af.BLOCK):
        seen["encoder"] = encoder
        return originals[2](encoder, X, device, block)

    def validation_score(selection, emb_tr, y_tr, emb_val, y_val, sd, cv=5):
        score = originals[3](selection, emb_tr, y_tr, emb_val, y_val, sd, cv)
        X = seen["model"]._scaled(Xq)
        if "keep" in seen:
            X = X[:, seen["keep"]]
        emb_q = originals[2](seen["encoder"], X, torch.device("cpu"))
        svc = _fit_quietly(_svc(0, False, C=1.0, gamma="scale"), emb_tr, y_tr)
        seen["rows"].append({"validation_mcc": float(score), "query_macro_f1": macro_f1(yq, svc.predict(emb_q), known)})
        return score

    af.AFRCL.fit, Encoder.restrict_inputs, af.encode, af.validation_score = (fit, restrict_inputs, encode,
                                                                              validation_score)
    try:
        reference = train(ref, labels_key=ref.obs[LABEL].astype(str).to_numpy(), method="afrcl",
                          preset="default", seed=seed, quiet=True, ensemble=1)
    finally:
        af.AFRCL.fit, Encoder.restrict_inputs, af.encode, af.validation_score = originals
    epochs = [e for e, _ in reference.model.history_["validation"]]
    return [{"epoch": e, **row} for e, row in zip(epochs, seen["rows"])]


def summary(rows: list[dict]) -> dict:
    """The query macro-F1 of the single checkpoint the validation MCC picks (the later on ties) and of the mean."""
    singles = [r for r in rows if r["epoch"] != "mean"]
    best = max(range(len(singles)), key=lambda i: (singles[i]["validation_mcc"], i))
    mean = [r for r in rows if r["epoch"] == "mean"]
    return {"best_single_epoch": singles[best]["epoch"], "best_single_query_f1": singles[best]["query_macro_f1"],
            "mean_query_f1": mean[0]["query_macro_f1"] if mean else None,
            "query_f1_range": [min(r["query_macro_f1"] for r in singles), max(r["query_macro_f1"] for r in singles)],
            "validation_mcc_range": [min(r["validation_mcc"] for r in singles),
                                     max(r["validation_mcc"] for r in singles)]}


def markdown(store: dict) -> str:
    lines = ["# AF-RCL over one training: validation MCC and cross-study macro-F1", "", __doc__.split("::")[0]
             .split("\n\n", 1)[1].strip(), "", "| task | seed | validations | validation MCC range | query macro-F1 range "
             "| best single checkpoint by validation MCC (epoch: query F1) | mean of the weights: query F1 |",
             "|---|---|---|---|---|---|---|"]
    for run in store["runs"].values():
        s = summary(run["rows"])
        lines.append(f"| {run['task']} | {run['seed']} | {len(run['rows']) - 1} | "
                     f"{s['validation_mcc_range'][0]:.3f}-{s['validation_mcc_range'][1]:.3f} | "
                     f"{s['query_f1_range'][0]:.3f}-{s['query_f1_range'][1]:.3f} | {s['best_single_epoch']}: "
                     f"{s['best_single_query_f1']:.3f} | {s['mean_query_f1']:.3f} |")
    lines += ["", "Runs (threads, date, command) in `checkpoint_trace.json`.", ""]
    return "\n".join(lines)


def write(store: dict) -> None:
    from harness.files import write_json, write_text

    write_json(RESULTS, store)
    write_text(RESULTS.with_suffix(".md"), markdown(store))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="pbmc3k_to_kang")
    ap.add_argument("--seeds", default="1111")
    args = ap.parse_args(argv)
    store = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    for seed in map(int, args.seeds.split(",")):
        rows = trace(args.task, seed)
        store["runs"][f"{args.task}|{seed}"] = {
            "task": args.task, "seed": seed, "rows": rows, "threads": os.environ.get("OMP_NUM_THREADS"),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python benchmarks/checkpoint_trace.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        print(json.dumps({"seed": seed, **summary(rows)}), flush=True)
        write(store)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
