"""GsRCL and AF-RCL as a user runs them: ``gsrcl.train`` with the default preset, then ``gsrcl.annotate``."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd

from .inputs import align_to
from .metrics import as_text
from .prediction import Prediction
from .tasks import DEFAULT_SEED

#: gsrcl.annotate's cut-off: Unassigned when the reported probability is <= p.
DEFAULT_P = 0.5
#: ``--quick``: tiny networks and a few epochs (keys both methods' presets have); a smoke test, not a measurement.
QUICK_OVERRIDES = {"hidden": (64,), "out": 32, "head": (32, 16), "epochs": 3, "val_every": 1, "min_epochs": 0,
                   "svm_cv": 3}


class OurMethod:
    """GsRCL or AF-RCL through the public API.

    ``fit`` calls ``gsrcl.train`` (default preset); ``predict`` calls ``gsrcl.annotate`` at ``p`` on the query
    aligned to the reference genes. Confidence = ``conf_score``; also scored: GsRCL's ``max_raw_score`` and the
    negated ``novelty_score``, ``unseen_score`` and ``unseen_score_cell``.

    Parameters
    ----------
    method : {"gsrcl", "afrcl"}
    seed : int
        Training seed.
    p : float
        The annotation cut-off.
    quick : bool
        Train with `QUICK_OVERRIDES`.
    overrides : dict, optional
        Hyperparameters other than the preset's (for trials of a change, not for the benchmark itself); they win
        over the quick ones.
    """


    def __init__(self, method: str, seed: int = DEFAULT_SEED, p: float = DEFAULT_P, quick: bool = False,
                 overrides: dict[str, Any] | None = None):
        self.name = self.method = method
        self.seed, self.p, self.quick = seed, p, quick
        self.overrides = dict(overrides or {})
        settings = "".join(f", {k}={v!r}" for k, v in self.overrides.items())
        self.implementation = (f"gsrcl.train(method='{method}', preset='default', seed={seed}{settings})"
                               + (f" with --quick overrides {QUICK_OVERRIDES}" if quick else "")
                               + f" + gsrcl.annotate(p={p})")

    def warm_up(self) -> None:
        """Import torch, ``gsrcl.train`` and ``gsrcl.annotate`` with what they use."""
        import torch  # noqa: F401

        import gsrcl

        gsrcl.train, gsrcl.annotate  # noqa: B018 (gsrcl imports them on first use)
        importlib.import_module(f"gsrcl.methods.{self.method}")  # train imports the method's module lazily

    def fit(self, adata, labels) -> "OurMethod":
        """Train a reference on the cells ``adata`` with their ``labels``; kept as ``reference_``. Returns self."""
        import gsrcl

        overrides = {**(QUICK_OVERRIDES if self.quick else {}), **self.overrides}
        epochs = overrides.pop("epochs", None)
        self.reference_ = gsrcl.train(adata, labels_key=np.asarray(as_text(labels)), method=self.method,
                                      preset="default", epochs=epochs, seed=self.seed, quiet=True, **overrides)
        return self

    @property
    def svm_inputs(self) -> dict[str, str] | None:
        """GsRCL: what each type's SVM takes (``encoder``, ``genes`` or ``encoder+genes``); None for AF-RCL."""
        tasks = (self.reference_.manifest.get("validation") or {}).get("tasks") or {}
        inputs = {t: v["input"] for t, v in tasks.items() if isinstance(v, dict) and "input" in v}
        return inputs or None

    def predict(self, adata) -> Prediction:
        """Annotate the query cells ``adata``; ``best`` holds the most probable type before the cut-off."""
        import anndata as ad

        import gsrcl

        genes = list(self.reference_.genes)
        query = ad.AnnData(align_to(adata.X, adata.var, genes), obs=pd.DataFrame(index=adata.obs_names),
                           var=pd.DataFrame(index=pd.Index(genes)))
        out = gsrcl.annotate(query, self.reference_, p=self.p, quiet=True)
        obs = out.obs
        scores = {"max_raw_score": obs["max_raw_score"].to_numpy(float)} if "max_raw_score" in obs else {}
        for name in ("novelty_score", "unseen_score", "unseen_score_cell"):  # negated: higher = more likely known
            if name in obs:
                scores[name] = -obs[name].to_numpy(float)
        types = np.asarray(out.uns["gsrcl"]["cell_types"], dtype=object)
        best = types[np.asarray(out.obsm["probabilities"]).argmax(axis=1)]
        return Prediction(obs["predicted_labels"].astype(str).to_numpy(object), obs["conf_score"].to_numpy(float),
                          scores, best=best)


def ours_available() -> str | None:
    """Whether GsRCL and AF-RCL can run here.

    Returns
    -------
    str or None
        None when ``gsrcl.train`` and ``gsrcl.annotate`` can be imported, else why not (for the report).
    """
    try:
        gsrcl = importlib.import_module("gsrcl")
        for name in ("train", "annotate"):
            getattr(gsrcl, name)
    except (ImportError, AttributeError) as exc:
        return f"gsrcl.train / gsrcl.annotate cannot be imported ({exc})"
    return None
