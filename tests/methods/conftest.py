"""Fixtures of the method tests: a small real split (realdata), and the test module's method fitted once on it."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def split(mouse_small):
    """(X_train, y_train, X_test, y_test) of `mouse_small` as log1p CSR float32 model input: a stratified 2/3 for
    training, 1/3 for testing."""
    from sklearn.model_selection import train_test_split

    X = mouse_small.X.copy().astype(np.float32)
    X.data = np.log1p(X.data)
    y = mouse_small.obs["cell_type"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(mouse_small.n_obs), test_size=1 / 3, stratify=y, random_state=0)
    return X[tr], y[tr], X[te], y[te]


@pytest.fixture(scope="module")
def fitted(split, request):
    """The test module's ``METHOD`` fitted with its ``TINY`` parameters on the training part of ``split``."""
    Xtr, ytr, _, _ = split
    return request.module.METHOD(**request.module.TINY).fit(Xtr, ytr)
