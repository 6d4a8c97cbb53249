"""The model input: fitted by train, recorded in the manifest, the same transform as before for every query."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from gsrcl.model_input import ModelInput, log1p_cp10k
from gsrcl.values import CP10K, detect_values, log1p_normalized, to_model_input

COMPAT = Path(__file__).parent / "data" / "compat" / "references"


def counts(n=40, g=30, seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.poisson(rng.gamma(0.5, 2.0, (n, g))).astype(np.float32))


def test_transform_is_log1p_then_the_library_size_as_before():
    X = counts()
    report = detect_values(X)
    mi = ModelInput.fit(X, CP10K)
    expected = log1p_normalized(to_model_input(X, report), CP10K)
    got = mi.transform(X, report)
    assert got.dtype == np.float32 and sp.isspmatrix_csr(got)
    np.testing.assert_array_equal(got.toarray(), expected.toarray())
    plain = ModelInput.fit(X)  # no library size: log1p only
    np.testing.assert_array_equal(plain.transform(X, "counts").toarray(), to_model_input(X, "counts").toarray())
    # log2 values of the reference itself are converted with its own log base
    L = sp.csr_matrix(np.log2(1 + X.toarray()).astype(np.float32))
    mi2 = ModelInput.fit(L)
    assert mi2.expected == "log1p" and mi2.log_base == 2.0
    np.testing.assert_allclose(mi2.log1p(L).toarray(), np.log1p(X.toarray()), rtol=1e-5)


def test_novelty_input_is_log1p_cp10k_of_the_model_input():
    X = counts()
    cp10k, none = ModelInput("counts", None, float(CP10K)), ModelInput("counts")
    assert cp10k.is_cp10k and not none.is_cp10k
    Xm = cp10k.transform(X, "counts")
    np.testing.assert_array_equal(cp10k.novelty_input(Xm).toarray(), Xm.toarray())
    Xm0 = none.transform(X, "counts")
    np.testing.assert_array_equal(none.novelty_input(Xm0).toarray(), log1p_normalized(Xm0, CP10K).toarray())
    np.testing.assert_array_equal(log1p_cp10k(X, "counts").toarray(), log1p_normalized(Xm0, CP10K).toarray())


def test_the_manifest_section_round_trips_and_old_manifests_load():
    X = counts()
    mi = ModelInput.fit(X, CP10K)
    values = mi.to_manifest()
    assert set(values) == {"expected", "transform", "log_base", "library_size", "message"}
    assert values["transform"] == "log1p" and values["library_size"] == 10000.0
    assert ModelInput.from_manifest(json.loads(json.dumps(values))) == mi
    for method in ("afrcl", "gsrcl"):  # references made by an earlier gsrcl
        old = json.loads((COMPAT / f"compat_{method}" / "manifest.json").read_text())["values"]
        loaded = ModelInput.from_manifest(old)
        assert loaded.to_manifest() == old and loaded.library_size == CP10K
    older = ModelInput.from_manifest({"expected": "log1p", "transform": "none", "log_base": math.e})
    assert older.library_size is None and older.log_base == math.e


def test_the_original_log_keeps_zeros_at_zero_and_is_the_original_value_less_that_of_a_zero():
    import torch

    from gsrcl.model_input import ModelInput, original_log, zero_value

    X = sp.csr_matrix(np.array([[0, 1, 7], [250, 0, 3]], dtype=np.float32))
    out = original_log(X, 1e-6)
    assert out.nnz == X.nnz and out.dtype == np.float32
    original = torch.log((torch.from_numpy(X.toarray()) + 1.0) + 1e-6).numpy()
    c = zero_value(1e-6)
    assert np.isclose(float(c), 9.5367386e-07, rtol=1e-6)
    np.testing.assert_allclose(out.toarray() + c, original, rtol=0, atol=2e-7)
    model_input = ModelInput(expected="counts", offset=1e-6)
    again = ModelInput.from_manifest(model_input.to_manifest())
    assert again == model_input and model_input.to_manifest()["transform"] == "original_log"
    np.testing.assert_array_equal(again.transform(X, "counts").toarray(), out.toarray())
    logged = sp.csr_matrix(np.log1p(X.toarray()))
    np.testing.assert_allclose(again.transform(logged, "log1p").toarray(), logged.toarray(), rtol=1e-6)
