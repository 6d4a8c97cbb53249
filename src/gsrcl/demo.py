"""``gsrcl demo``: train a reference with each method and annotate held-out cells, on data that ships with scanpy.

The data: scanpy's ``pbmc68k_reduced`` (700 PBMCs from Zheng et al. 2017, read from the scanpy package, no
download). Its ``.X`` is scaled, so the demo uses ``.raw`` (log-normalised values, 765 genes). The labels are
``bulk_labels`` (10 types), assigned by correlation with sorted bulk profiles: a smoke-test label, not a gold
standard, so accuracy well below 1 is expected. The cells are split, stratified by label with a fixed seed, into
a reference part (70%) and a query part (30%); each method is trained on the reference part with the ``demo``
preset (the default with few epochs) and the query part is annotated with ``gsrcl predict``'s code path, from a
file. The results are the same on every run (fixed seeds).

Written under OUT (default ``demo_output``): ``query.h5ad`` (the query part, true labels in
``obs['bulk_labels']``), ``references/pbmc68k_<method>/`` (usable with ``gsrcl predict -mp OUT/references``),
and per method ``<method>/`` with probabilities.csv, tsne.svg, legend.txt and annotated.h5ad, and ``MARKER``,
which marks OUT as the demo's: a later run replaces those outputs, and nothing else in OUT.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

log = logging.getLogger("gsrcl.demo")

LABELS_KEY = "bulk_labels"
QUERY_FRACTION = 0.3
SEED = 0
METHODS = ("afrcl", "gsrcl")
PRESET = "demo"  # the default presets with few epochs (gsrcl.methods.presets)
MARKER = ".gsrcl-demo"  # written in OUT by the demo: its outputs there may be replaced by the next run
CAVEAT = (
    "Note: pbmc68k_reduced's bulk_labels come from correlation with sorted bulk profiles (a smoke-test label, not "
    "a gold standard), and training here is demo-sized; accuracy near 1 is not expected."
)


def load_pbmc68k():
    """scanpy's pbmc68k_reduced with the log-normalised ``.raw`` values as X (CSR float32) and its labels.

    Raises
    ------
    ImportError
        Without scanpy.
    """
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    full = sc.datasets.pbmc68k_reduced()
    X = sp.csr_matrix(full.raw.X, dtype=np.float32)
    obs = full.obs[[LABELS_KEY]].copy()
    obs[LABELS_KEY] = obs[LABELS_KEY].astype(str).astype("category")
    return ad.AnnData(X=X, obs=obs, var=full.raw.var[[]].copy())


def split(adata, labels_key: str = LABELS_KEY, query_fraction: float = QUERY_FRACTION, seed: int = SEED):
    """A (reference, query) split of ``adata``'s cells, stratified by ``labels_key``, ``query_fraction`` of them
    in the query; the same for the same ``seed``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(adata.n_obs)
    ref_idx, query_idx = train_test_split(idx, test_size=query_fraction, random_state=seed,
                                          stratify=adata.obs[labels_key].astype(str).to_numpy())
    return adata[np.sort(ref_idx)].copy(), adata[np.sort(query_idx)].copy()


def scores(true, predicted) -> dict[str, float]:
    """Accuracy (Unassigned counts as wrong), macro-F1 over the true types, and % Unassigned, of ``predicted``
    against ``true`` labels."""
    from sklearn.metrics import f1_score

    from .plot import UNASSIGNED

    true = np.asarray(true, dtype=str)
    predicted = np.asarray(predicted, dtype=str)
    labels = sorted(set(true))
    return {
        "accuracy": float(np.mean(true == predicted)),
        "macro_f1": float(f1_score(true, predicted, labels=labels, average="macro", zero_division=0)),
        "unassigned_pct": float(100.0 * np.mean(predicted == UNASSIGNED)),
    }


def _write_h5ad(adata, path: Path) -> None:
    """Write ``path`` atomically; the temporaries of killed runs beside it are removed first, a full disk is
    `DiskFullError` with nothing left behind."""
    from .atomic import disk_full_as_error, held_stderr, remove_stale, temp_file

    tmp = None

    def discard() -> None:
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    with disk_full_as_error(path.parent, cleanup=discard):
        remove_stale(path.parent)
        tmp = temp_file(path.parent, path.name)
        with held_stderr():
            adata.write_h5ad(tmp)
        os.replace(tmp, path)


def run_demo(
    out_dir: str | os.PathLike = "demo_output",
    *,
    methods=METHODS,
    settings: dict[str, dict[str, Any]] | None = None,
    p: float = 0.5,
    overwrite: bool = False,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Run the demo: split the data, train each method, annotate the query part from a file, score it.

    Parameters
    ----------
    out_dir : path
        The output folder (made if missing). The demo writes only its own outputs there (the module docstring
        lists them) and replaces those of an earlier demo run; anything else in it is left alone.
    methods : sequence of str
        The methods to run.
    settings : dict, optional
        Per method, `gsrcl.train` settings that replace the ``demo`` preset's (e.g. fewer epochs in tests).
    p : float
        The probability cut-off of the annotation.
    overwrite : bool
        Also replace files at the demo's output paths in a folder no demo wrote (one without `MARKER`).
    quiet : bool
        No progress bars.

    Returns
    -------
    list of dict
        One row per method: accuracy, macro_f1, unassigned_pct, seconds_train, seconds_predict, seconds_tsne,
        n_query, paths.

    Raises
    ------
    OutputError
        When ``out_dir`` cannot be written, or holds files at the demo's output paths that no demo wrote and
        ``overwrite`` is false.
    """
    from .outputs import OUTPUTS, predict_files
    from .reference import resolve
    from .training import train

    out = Path(out_dir)
    settings = settings or {}
    names = {m: f"pbmc68k_{m}" for m in methods}
    planned = [out / "query.h5ad"] + [resolve(out / "references", names[m]) for m in methods] + [
        out / m / f for m in methods for f in OUTPUTS]
    existing = [q for q in planned if q.exists()]
    if existing and not overwrite and not (out / MARKER).is_file():
        raise OutputError(f"{out} holds files the demo would replace (e.g. {existing[0]}) but was not written by "
                          "the demo: choose another -o, or pass --overwrite to replace them")

    adata = load_pbmc68k()
    reference, query = split(adata)
    log.info("pbmc68k_reduced: %d cells, %d genes, %d types; reference %d cells, query %d cells",
             adata.n_obs, adata.n_vars, adata.obs[LABELS_KEY].nunique(), reference.n_obs, query.n_obs)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by gsrcl demo: its outputs here are replaced by the next demo run\n")
    except OSError as exc:
        from .atomic import write_error

        raise write_error(exc, out) from None
    query_path = out / "query.h5ad"
    _write_h5ad(query, query_path)

    rows = []
    for method in methods:
        t0 = time.perf_counter()
        ref = train(reference, labels_key=LABELS_KEY, method=method, name=names[method], preset=PRESET,
                    quiet=quiet, **settings.get(method, {}))
        ref.save(out / "references", names[method], overwrite=True)
        t_train = time.perf_counter() - t0
        summary = predict_files(query_path, ref, out / method, p=p, overwrite=True, quiet=quiet)
        t_predict = summary["seconds_predict"]
        row = {"method": method, **scores(query.obs[LABELS_KEY], summary["prediction"].labels),
               "seconds_train": t_train, "seconds_predict": t_predict, "seconds_tsne": summary["seconds_tsne"],
               "n_query": int(query.n_obs), "paths": summary["paths"]}
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows of `run_demo` as the text table ``gsrcl demo`` prints."""
    head = f"{'method':<7} {'accuracy':>8} {'macro-F1':>8} {'% Unassigned':>12} {'train s':>8} {'predict s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<7} {r['accuracy']:>8.3f} {r['macro_f1']:>8.3f} {r['unassigned_pct']:>12.1f} "
                     f"{r['seconds_train']:>8.1f} {r['seconds_predict']:>9.2f}")
    return "\n".join(lines)
