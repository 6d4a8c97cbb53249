"""Small real data for the method and training tests: 300 cells of mouse_immune_actinn_1k (stratified) and
its 2,000 most variable genes, as raw counts; read once per test session."""

from __future__ import annotations

import functools

import numpy as np

from tests.conftest import dataset

N_CELLS = 300
N_GENES = 2000


@functools.lru_cache(maxsize=1)
def _load():
    import anndata as ad
    from sklearn.model_selection import train_test_split

    full = ad.read_h5ad(dataset("mouse_immune_actinn_1k.h5ad"))
    y = full.obs["cell_type"].astype(str).to_numpy()
    idx, _ = train_test_split(np.arange(full.n_obs), train_size=N_CELLS, stratify=y, random_state=0)
    sub = full[np.sort(idx)].copy()
    logx = sub.X.copy()
    logx.data = np.log1p(logx.data)
    var = np.asarray(logx.multiply(logx).mean(axis=0)).ravel() - np.asarray(logx.mean(axis=0)).ravel() ** 2
    genes = np.sort(np.argsort(-var)[:N_GENES])
    return sub[:, genes].copy()


def small_adata():
    """A copy of the AnnData (counts in X, obs['cell_type'])."""
    return _load().copy()


def small_split(seed: int = 0):
    """(X_train, y_train, X_test, y_test) of log1p CSR float32 model input: 2/3 training, 1/3 test."""
    from sklearn.model_selection import train_test_split

    a = _load()
    X = a.X.copy().astype(np.float32)
    X.data = np.log1p(X.data)
    y = a.obs["cell_type"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(a.n_obs), test_size=1 / 3, stratify=y, random_state=seed)
    return X[tr], y[tr], X[te], y[te]
