"""Behaviour kept across versions: references saved by an earlier gsrcl (``tests/data/compat``, made by the commit
in ``made_by.txt`` with ``make.py``) load and predict as they did, and training with their settings gives the same
model."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gsrcl
from gsrcl.reference import half_precision

COMPAT = Path(__file__).parent / "data" / "compat"
METHODS = ("afrcl", "gsrcl")

pytest.importorskip("scanpy", reason="the compatibility query is scanpy's bundled pbmc68k_reduced")


def _make():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compat_make", COMPAT / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def make():
    return _make()


@pytest.fixture(scope="module")
def split(make):
    return make.data()


@pytest.mark.parametrize("method", METHODS)
def test_old_reference_predicts_as_it_did(method, make, split):
    ref = gsrcl.Reference.load(COMPAT / "references" / f"compat_{method}")
    _, query = split
    out = gsrcl.annotate(make.query_for(query, ref.genes), ref, p=0.5)
    expected = pd.read_csv(COMPAT / f"expected_{method}.csv", index_col=0)
    assert list(out.obs_names) == list(expected.index)
    assert (out.obs["predicted_labels"].astype(str).to_numpy() == expected["predicted_labels"].to_numpy()).all()
    for col in ("conf_score", "novelty_score", "unseen_score_cell", "unseen_score"):
        np.testing.assert_allclose(out.obs[col].to_numpy(float), expected[col].to_numpy(float), rtol=1e-5,
                                   atol=1e-6, err_msg=col)
    proba = expected[[c for c in expected.columns if c.startswith("p:")]].to_numpy(float)
    np.testing.assert_allclose(np.asarray(out.obsm["probabilities"]), proba, rtol=1e-5, atol=1e-6)
    raw = [c for c in expected.columns if c.startswith("raw:")]
    if raw:
        np.testing.assert_allclose(np.asarray(out.obsm["raw_scores"]), expected[raw].to_numpy(float), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_training_with_the_same_settings_gives_the_same_model(method, make, split):
    import torch

    settings = json.loads((COMPAT / "settings.json").read_text())
    old = gsrcl.Reference.load(COMPAT / "references" / f"compat_{method}")
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(settings["torch_threads"])
    try:
        with threadpool_limits(settings["torch_threads"]):
            new = gsrcl.train(split[0], "bulk_labels", method, name=f"compat_{method}", seed=settings["seed"],
                              quiet=True, top_genes=settings["top_genes"], **make.SETTINGS[method])
    finally:
        torch.set_num_threads(threads)
    assert new.genes == old.genes
    assert new.cell_types == old.cell_types
    _, query = split
    q = make.query_for(query, old.genes)
    # a trained reference holds its weight matrices in half precision: the old one's, rounded the same way. Another
    # CPU may round a float32 sum differently (a few units in the last place after ten epochs), no more: a change
    # in training moves the weights far more than that. The SVMs fitted on embeddings that differ by so little may
    # keep other support vectors, so probabilities agree to 0.05 and labels on 95% of the cells; on the CPU the
    # fixture was made on, both are exact.
    old_half = gsrcl.Reference(manifest=old.manifest, arrays=half_precision(old.arrays))
    for k, v in old_half.arrays.items():
        if k.endswith(".weight"):
            np.testing.assert_allclose(new.arrays[k].astype(np.float64), v.astype(np.float64), rtol=4e-3, atol=1e-5,
                                       err_msg=k)
    a = gsrcl.annotate(q.copy(), old_half, p=0.5, plot=False)
    b = gsrcl.annotate(q.copy(), new, p=0.5, plot=False)
    np.testing.assert_allclose(np.asarray(b.obsm["probabilities"]), np.asarray(a.obsm["probabilities"]), rtol=0,
                               atol=0.05)
    assert (a.obs["predicted_labels"].astype(str) == b.obs["predicted_labels"].astype(str)).mean() >= 0.95
