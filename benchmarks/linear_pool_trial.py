"""Benchmark (not a test): the probabilities `benchmarks/pool_rules.py` scores, for either method.

For each task and seed: the method's ``default`` model trained as `benchmarks/accuracy.py` trains it, the query
annotated (`gsrcl.annotate`: its novelty scores), the model's probabilities before any pool, and the linear
SVM's on the model input (the reference's own where its preset takes the linear pool, else
`gsrcl.linear.LinearClassifier` fitted on the reference's cells as ``--linear-pool`` fits it). Saved as
``DIR/TASK_SEED_SPLIT.npz`` with the keys `benchmarks/afrcl_shift.py --save-proba` uses (``y``, ``types``,
``novelty``, ``p_default``, ``p_linear``; with ``--members`` also ``p_members``, each ensemble member's), then
scored by ``python benchmarks/pool_rules.py DIR``::

    OMP_NUM_THREADS=1 python benchmarks/linear_pool_trial.py --method gsrcl --tasks mouse_immune_to_kang \\
        --save-proba /tmp/gsrcl_proba
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from harness.inputs import align_to
from harness.methods import make_method
from harness.metrics import as_text
from harness.tasks import DEFAULT_CONFIG, LABEL, load_config, task_splits
from harness.trials import trial_parser


def run_task(task, data_dir: str, method: str, seed: int, save: Path, splits=None, members_too=False) -> None:
    import anndata as ad
    import pandas as pd

    from gsrcl import annotate
    from gsrcl.linear import LinearClassifier
    from gsrcl.values import detect_values

    for i, (ref, query) in enumerate(task_splits(task, data_dir)):
        if splits is not None and i not in splits:
            continue
        est = make_method(method, seed=seed)
        t0 = time.perf_counter()
        est.fit(ref, ref.obs[LABEL].to_numpy())
        reference = est.reference_
        genes, types = list(reference.genes), list(reference.cell_types)
        q = ad.AnnData(align_to(query.X, query.var, genes), obs=pd.DataFrame(index=query.obs_names),
                       var=pd.DataFrame(index=pd.Index(genes)))
        out = annotate(q, reference, quiet=True, plot=False)
        Qm = reference.model_input.transform(q.X, detect_values(q.X))
        own = reference.linear
        linear = own
        if own is None:  # a reference trained without the pool: fit its linear SVM as --linear-pool does
            keep = np.isin(as_text(ref.obs[LABEL]), types)
            R = align_to(ref.X, ref.var, genes)[keep]
            Rm = reference.model_input.transform(R, detect_values(R))
            linear = LinearClassifier.fit(Rm, as_text(ref.obs[LABEL])[keep], seed)
        p_linear = linear.predict_proba(Qm)[:, [list(linear.classes_).index(t) for t in types]]
        members = getattr(reference.model, "members", [reference.model])
        p_members = np.stack([m.predict_proba(Qm)[:, [list(m.classes_).index(t) for t in types]] for m in members])
        # the model's own probabilities, before any pool with the linear SVM
        p_default = p_members.mean(axis=0) if own is not None else np.asarray(out.obsm["probabilities"])
        save.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(save / f"{task.name}_{seed}_{i}.npz", y=np.asarray(as_text(query.obs[LABEL]), dtype=str),
                            types=np.asarray(types, dtype=str), novelty=np.asarray(out.obs["novelty_score"], float),
                            p_default=p_default, p_linear=p_linear,
                            **({"p_members": p_members} if members_too else {}))
        print(f"{task.name} split {i}: {method} trained and scored in {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv=None) -> int:
    parser = trial_parser(__doc__, "linear_pool_trial")
    parser.add_argument("--method", choices=("afrcl", "gsrcl"), default="gsrcl")
    parser.add_argument("--save-proba", type=Path, required=True, metavar="DIR")
    parser.add_argument("--members", action="store_true",
                        help="also save each ensemble member's probabilities (p_members: members x cells x types)")
    parser.add_argument("--splits", default=None, help="comma-separated split numbers to run (default: all)")
    args = parser.parse_args(argv)
    config = load_config(args.config or DEFAULT_CONFIG, args.data)
    for name in args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            run_task(config.tasks[name], str(config.data_dir), args.method, seed, args.save_proba,
                     None if args.splits is None else {int(i) for i in args.splits.split(",")}, args.members)
    return 0


if __name__ == "__main__":
    sys.exit(main())
