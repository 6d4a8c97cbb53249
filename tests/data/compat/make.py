"""Makes the compatibility fixture: two small references and what they predicted, by the commit named in
``made_by.txt``. Run from the repository root with that commit checked out:

    OMP_NUM_THREADS=1 .venv/bin/python tests/data/compat/make.py

Later code must load these references and give the same probabilities, labels and scores on the same query
(``tests/test_compat.py``), and training with the same settings must give the same model.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
SETTINGS = {  # small networks, one member, few genes: a fixture of a few hundred kB
    # scale_genes: the default preset's value when the fixture was made (off by default since)
    "afrcl": {"epochs": 10, "min_epochs": 5, "hidden": (64, 64), "out": 32, "head": (32, 16), "ensemble": 1,
              "scale_genes": True},
    "gsrcl": {"epochs": 10, "min_epochs": 5, "min_steps": 20, "val_steps": 5, "hidden": (64, 64), "out": 32,
              "head": (32, 16), "ensemble": 1},
}
TOP_GENES = 120
SEED = 7


def data():
    """pbmc68k_reduced (bundled with scanpy), its .raw values, split 70/30 as the demo does."""
    from gsrcl.demo import load_pbmc68k, split

    return split(load_pbmc68k())


def query_for(query, genes):
    """The query with the reference's genes but its last five (zero-filled at prediction) and 100 others."""
    others = [g for g in query.var_names if g not in set(genes)][:100]
    return query[:, list(genes[:-5]) + others].copy()


def main() -> None:
    import gsrcl

    torch.set_num_threads(1)
    reference, query = data()
    refdir = HERE / "references"
    for method, settings in SETTINGS.items():
        ref = gsrcl.train(reference, "bulk_labels", method, name=f"compat_{method}", seed=SEED, quiet=True,
                          top_genes=TOP_GENES, **settings)
        ref.save(refdir, f"compat_{method}", overwrite=True)
        loaded = gsrcl.Reference.load(refdir / f"compat_{method}")
        out = gsrcl.annotate(query_for(query, loaded.genes), loaded, p=0.5)
        cols = ["predicted_labels", "conf_score", "novelty_score", "unseen_score_cell", "unseen_score"]
        table = out.obs[cols].copy()
        proba = out.obsm["probabilities"] if "probabilities" in out.obsm else None
        proba = pd.DataFrame(np.asarray(proba), index=out.obs_names, columns=loaded.cell_types)
        table = pd.concat([table, proba.add_prefix("p:")], axis=1)
        if "raw_scores" in out.obsm:
            raw = pd.DataFrame(np.asarray(out.obsm["raw_scores"]), index=out.obs_names, columns=loaded.cell_types)
            table = pd.concat([table, raw.add_prefix("raw:")], axis=1)
        table.to_csv(HERE / f"expected_{method}.csv", float_format="%.9g")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (HERE / "made_by.txt").write_text(commit + "\n")
    json.dump({"settings": SETTINGS, "top_genes": TOP_GENES, "seed": SEED, "torch_threads": 1},
              open(HERE / "settings.json", "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
